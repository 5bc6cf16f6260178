// One PostgreSQL client of the database relay, from accept to close. The client speaks first, so
// the relay reads its first message before it connects to the database:
//  - SSLRequest: tls 'terminate' → 'S' and the TLS handshake with the relay's certificate, then
//    the StartupMessage is read inside TLS; tls 'refuse' → 'N' (the client goes on in clear, or
//    stops with its own "server does not support SSL" when it requires TLS), logged.
//    Bytes that arrived after the SSLRequest, before the relay answered, are never used: they
//    were sent in clear before any TLS and could have been injected by someone on the path
//    (the CVE-2021-23214 class). The connection is closed with a log line.
//  - GSSENCRequest: 'N' always (the relay does not do GSSAPI encryption); at most once, before
//    any SSLRequest, as the server allows it.
//  - A TLS ClientHello as the very first bytes (PostgreSQL 17's sslnegotiation=direct): with
//    'terminate', TLS with ALPN "postgresql" (required, as the server requires it), then the
//    StartupMessage inside; with 'refuse', closed with a log line.
//  - CancelRequest: carries no user; passed through to the database (audited as 'pass-through').
//    The key in it is what authorises a cancel.
//  - StartupMessage: the `user` parameter, cut to 63 bytes as the server cuts it (raw bytes;
//    not valid UTF-8 → never let through as an unknown user), goes to the
//    policy. Refused → ErrorResponse (FATAL, 28000, the decision's message); allowed → the relay
//    connects to the database, forwards the message and becomes a byte pipe.
//  - Anything else is 'unparsable' for the policy (allowed unless strict: the parser may be behind
//    the server), except an encryption or cancel request the relay could not read, which is never
//    forwarded: the database might answer 'S' and do TLS with the client past the relay.
// On listeners that take the identity from a client certificate sent inside TLS
// (context.identifyFromPeer), the relay asks for it in either TLS handshake (psql sslcert= and
// sslkey=) and the identity is read from it before the StartupMessage is judged.
// The database is reached over plain TCP (or whatever connectUpstream gives).
// Owns: the PostgreSQL session. Must not: decide policy or parse anything after the startup.
import type { Duplex } from 'node:stream';
import { errorMessage } from '../common/errors.js';
import { PG_ACCEPT_SSL, PG_REFUSE_ENCRYPTION, PgStartupParser, buildErrorResponse, type StartupResult } from './postgres.js';
import {
  DB_SESSION_DEFAULTS,
  Deadline,
  SessionStreams,
  acceptClientTls,
  closeWithReply,
  decideSafely,
  identityAfterTls,
  pipeAndLog,
  race,
  readUntilVerdict,
  recordDecision,
  type ReadOutcome,
} from './session-io.js';
import type { Logger } from '../common/log.js';
import type { ClientIdentity, DbSessionContext, DbSessionHandler, Decision } from './types.js';

/** The first byte of a TLS handshake record. */
const TLS_HANDSHAKE_RECORD = 0x16;
/** The ALPN protocol PostgreSQL 17 requires for direct TLS. */
const PG_ALPN = 'postgresql';
/** Request codes 1234.x: SSLRequest, GSSENCRequest, CancelRequest and any future negotiation. */
const NEGOTIATION_MAJOR = 1234;

/** The user name as the server reads it: NAMEDATALEN - 1 bytes at most (a byte cut, as it does). */
export function serverRoleName(user: string): string {
  const bytes = Buffer.from(user, 'utf8');
  if (bytes.length <= DB_SESSION_DEFAULTS.pgUserMaxBytes) return user;
  return bytes.subarray(0, DB_SESSION_DEFAULTS.pgUserMaxBytes).toString('utf8');
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The role name from the raw `user` bytes, cut to NAMEDATALEN - 1 bytes as the server cuts it.
 * The server keeps raw bytes and compares them; the relay reads utf8. When the cut bytes are not
 * valid utf8 (sent that way, or cut inside a character) the relay's name (with U+FFFD) is not the
 * server's: `lossy` says so, and the policy never lets such a name through as "unknown".
 */
export function serverRoleNameFromBytes(userBytes: Buffer): { user: string; lossy?: string } {
  const cut = userBytes.subarray(0, DB_SESSION_DEFAULTS.pgUserMaxBytes);
  try {
    return { user: STRICT_UTF8.decode(cut) };
  } catch {
    const where = cut.length < userBytes.length ? ` once cut to ${DB_SESSION_DEFAULTS.pgUserMaxBytes} bytes` : '';
    return { user: cut.toString('utf8'), lossy: `the user parameter is not valid UTF-8${where}; invalid bytes read as U+FFFD` };
  }
}

interface Forward {
  client: Duplex;
  upstream: Duplex;
}

class PostgresSession {
  private readonly streams: SessionStreams;
  private readonly startedAt = Date.now();
  /** who the client is: the listener's answer at accept, or its certificate once inside TLS */
  private identity: ClientIdentity;
  private log: Logger;

  constructor(private readonly ctx: DbSessionContext) {
    this.streams = new SessionStreams(ctx.log);
    this.streams.add(ctx.client);
    this.identity = ctx.identity;
    this.log = ctx.log;
  }

  /** The identity from the client's certificate (when the listener takes it from there), logged from now on. */
  private learnIdentity(identity: ClientIdentity): void {
    if (identity === this.identity) return;
    this.identity = identity;
    this.log = this.ctx.log.child({ identity: identity.name });
  }

  async run(): Promise<void> {
    try {
      const deadline = new Deadline(this.ctx.handshakeTimeoutMs);
      let forward: Forward | undefined;
      try {
        forward = await this.handshake(deadline);
      } finally {
        deadline.clear();
      }
      if (forward) await pipeAndLog(this.ctx, 'postgres', forward.client, forward.upstream, this.startedAt, { log: this.log });
    } catch (err) {
      this.ctx.log.error({ protocol: 'postgres', err: errorMessage(err) }, 'postgres session failed');
    } finally {
      this.streams.destroyAll();
    }
  }

  private closeWithLog(client: Duplex, message: string, fields: Record<string, unknown> = {}): undefined {
    this.log.warn({ protocol: 'postgres', ...fields }, message);
    client.destroy();
    return undefined;
  }

  private async handshake(deadline: Deadline): Promise<Forward | undefined> {
    const { ctx } = this;
    let client = ctx.client;
    let viaTls = false;
    let sslAnswered = false;
    let gssAnswered = false;
    for (;;) {
      const parser = new PgStartupParser(DB_SESSION_DEFAULTS.pgMaxStartupBytes);
      const read: ReadOutcome<StartupResult> = await readUntilVerdict(client, (c) => parser.push(c), deadline);
      if (read.kind === 'timeout') return this.closeWithLog(client, `no startup message within ${ctx.handshakeTimeoutMs / 1000} s; closing`, { bytes: read.received.length });
      if (read.kind === 'error') {
        this.log.info({ protocol: 'postgres', err: read.error.message }, 'client connection failed before its startup message');
        return undefined;
      }
      if (read.kind === 'closed') {
        const hint = sslAnswered && !viaTls ? ' (after the relay answered N to its SSLRequest: a client that requires TLS stops here)' : '';
        this.log.info({ protocol: 'postgres', bytes: read.received.length }, `client closed before sending its startup message${hint}`);
        return undefined;
      }
      const v = read.verdict;
      switch (v.kind) {
        case 'ssl-request': {
          if (v.rest.length > 0) {
            return this.closeWithLog(client, 'bytes arrived after the SSLRequest before the TLS handshake; they were sent in clear and are never used (CVE-2021-23214 class); closing', { bytes: v.rest.length });
          }
          if (sslAnswered || viaTls) return this.closeWithLog(client, 'a second SSLRequest; closing');
          sslAnswered = true;
          gssAnswered = true;
          if (ctx.tls.mode === 'refuse') {
            this.log.info({ protocol: 'postgres' }, 'client asked for TLS; this listener refuses TLS (tls: refuse), answered N');
            client.write(PG_REFUSE_ENCRYPTION);
            continue;
          }
          client.write(PG_ACCEPT_SSL);
          const accepted = await acceptClientTls(ctx, client, Buffer.alloc(0), deadline);
          if (!accepted.ok) return this.closeWithLog(client, 'TLS with the client failed; closing', { reason: accepted.reason });
          client = this.streams.add(accepted.socket);
          viaTls = true;
          this.learnIdentity(await identityAfterTls(ctx, accepted, deadline));
          continue;
        }
        case 'gssenc-request': {
          if (v.rest.length > 0) return this.closeWithLog(client, 'bytes arrived after the GSSENCRequest before the relay answered; closing', { bytes: v.rest.length });
          if (gssAnswered) return this.closeWithLog(client, 'a GSSENCRequest after encryption was already negotiated; closing');
          gssAnswered = true;
          client.write(PG_REFUSE_ENCRYPTION);
          continue;
        }
        case 'cancel': {
          const decision: Decision = { allow: true, reason: 'pass-through', message: `CancelRequest for backend ${v.pid} passed through to the database (it carries no user; its key authorises it)` };
          recordDecision(ctx, 'postgres', undefined, decision, { tls: viaTls }, this.identity);
          return this.connectAndForward(client, Buffer.concat([v.raw, v.rest]));
        }
        case 'startup': {
          const user = v.startup.user;
          const role = v.startup.userBytes === undefined ? undefined : serverRoleNameFromBytes(v.startup.userBytes);
          const dbUser = role?.user;
          const lossyName = role?.lossy;
          const parseProblem = user === undefined ? 'the StartupMessage has no "user" parameter' : undefined;
          const decision = await decideSafely(ctx, { identity: this.identity, dbUser, ...(parseProblem ? { parseProblem } : {}), ...(lossyName ? { lossyName } : {}) });
          recordDecision(ctx, 'postgres', dbUser, decision, { tls: viaTls, ...(user !== undefined && dbUser !== user ? { truncatedFrom: user } : {}) }, this.identity);
          if (!decision.allow) return this.refuse(client, decision.message);
          return this.connectAndForward(client, Buffer.concat([v.raw, v.rest]));
        }
        case 'invalid': {
          const first = read.received;
          if (first[0] === TLS_HANDSHAKE_RECORD && !viaTls && !sslAnswered) {
            if (ctx.tls.mode === 'refuse') return this.closeWithLog(client, 'a direct TLS handshake (sslnegotiation=direct) on a listener that refuses TLS; closing');
            const accepted = await acceptClientTls(ctx, client, first, deadline, [PG_ALPN]);
            if (!accepted.ok) return this.closeWithLog(client, 'direct TLS with the client failed; closing', { reason: accepted.reason });
            client = this.streams.add(accepted.socket);
            if (accepted.socket.alpnProtocol !== PG_ALPN) return this.closeWithLog(client, `direct TLS without ALPN "${PG_ALPN}"; closing`);
            viaTls = true;
            this.learnIdentity(await identityAfterTls(ctx, accepted, deadline));
            sslAnswered = true;
            gssAnswered = true;
            continue;
          }
          if (first.length >= 8 && first.readUInt16BE(4) === NEGOTIATION_MAJOR) {
            const decision: Decision = {
              allow: false,
              reason: 'unparsable',
              message: `warpstone dbrelay: an encryption or cancel request the relay cannot read (${v.reason}) is never passed on`,
            };
            recordDecision(ctx, 'postgres', undefined, decision, { tls: viaTls }, this.identity);
            return this.closeWithLog(client, 'closing after an unreadable negotiation request');
          }
          const decision = await decideSafely(ctx, { identity: this.identity, dbUser: undefined, parseProblem: v.reason });
          recordDecision(ctx, 'postgres', undefined, decision, { tls: viaTls }, this.identity);
          if (!decision.allow) return this.refuse(client, decision.message);
          return this.connectAndForward(client, first);
        }
        default:
          return this.closeWithLog(client, 'unexpected parser state; closing');
      }
    }
  }

  private async refuse(client: Duplex, message: string): Promise<undefined> {
    await closeWithReply(client, buildErrorResponse(message));
    return undefined;
  }

  /** Connects to the database (the client spoke first, so only now) and sends it `first`. */
  private async connectAndForward(client: Duplex, first: Buffer): Promise<Forward | undefined> {
    const deadline = new Deadline(Math.max(this.ctx.handshakeTimeoutMs, 1_000));
    try {
      const connected = await race(this.ctx.connectUpstream(), deadline, (late) => late.destroy());
      if (!connected.ok) {
        const why = connected.timeout ? `no connection within ${deadline.ms / 1000} s` : errorMessage(connected.error);
        this.log.warn({ protocol: 'postgres', reason: why }, 'cannot reach the database; the client gets an error');
        await closeWithReply(client, buildErrorResponse(`warpstone dbrelay: cannot reach the database: ${why}`, { code: '08006' }));
        return undefined;
      }
      const upstream = this.streams.add(connected.value);
      upstream.write(first);
      return { client, upstream };
    } finally {
      deadline.clear();
    }
  }
}

/** Serves one PostgreSQL client; resolves when both sides are closed; never throws. */
export const servePostgres: DbSessionHandler = (context) => new PostgresSession(context).run();
