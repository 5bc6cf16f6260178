// What the database relay's two protocol sessions (mysql-session.ts, postgres-session.ts) share:
// the tunables of a session, a handshake deadline, reading from a stream until a parser gives a
// verdict, switching a stream to TLS in the middle of a conversation (as server towards the
// client, optionally asking for its certificate, and as client towards the database), learning
// the identity from that certificate, refusing with a last message, recording a decision
// (audit event + one log line) and the final byte pipe with its closing log line.
// Owns: session plumbing. Must not: know a protocol's bytes or decide policy.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { splice, type SpliceHandle } from '../common/splice.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { MYSQL_MAX_HANDSHAKE_BYTES } from './mysql.js';
import { PG_MAX_STARTUP_BYTES } from './postgres.js';
import type { ClientIdentity, DbAuditEvent, DbProtocol, DbSessionContext, Decision, DecisionInput, PeerVerification } from './types.js';

/**
 * Tunables of a protocol session. The handshake and idle timeouts come from the listener
 * (DbSessionContext); these are the rest.
 */
export const DB_SESSION_DEFAULTS = {
  /** MySQL: largest greeting or first client packet buffered (header included); real ones are < 1 KiB */
  mysqlMaxHandshakeBytes: MYSQL_MAX_HANDSHAKE_BYTES,
  /**
   * MySQL: largest authentication packet held while sequence numbers are renumbered (TLS
   * terminated at the relay, clear upstream); auth switch, RSA key and GSSAPI packets fit easily
   */
  mysqlMaxAuthPacketBytes: 64 * 1024,
  /** PostgreSQL: largest first message, the server's own MAX_STARTUP_PACKET_LENGTH */
  pgMaxStartupBytes: PG_MAX_STARTUP_BYTES,
  /** after a refusal (ERR, ErrorResponse) the client has this long to read it and close */
  refusalLingerMs: 2_000,
  /** MariaDB reads at most this many bytes of a user name (after conversion to utf8) and drops the rest */
  mariadbUserMaxBytes: 384,
  /** MySQL 5.7/8 read at most 32 characters of 3 bytes */
  mysqlUserMaxBytes: 96,
  /** PostgreSQL truncates a user name to NAMEDATALEN - 1 bytes */
  pgUserMaxBytes: 63,
} as const;

// ---------------------------------------------------------------------------------------------
// Deadline

/** One timer for the whole handshake; everything that waits listens to it. 0 ms = never. */
export class Deadline {
  private timer: NodeJS.Timeout | undefined;
  private readonly waiting = new Set<() => void>();
  expired = false;

  constructor(readonly ms: number) {
    if (ms > 0) this.timer = setTimeout(() => this.expire(), ms);
  }

  private expire(): void {
    this.expired = true;
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const w of waiting) w();
  }

  /** Calls `onExpire` when the deadline passes (at once if it has); returns the unsubscribe. */
  onExpire(onExpire: () => void): () => void {
    if (this.expired) {
      queueMicrotask(onExpire);
      return () => undefined;
    }
    this.waiting.add(onExpire);
    return () => this.waiting.delete(onExpire);
  }

  clear(): void {
    clearTimeout(this.timer);
    this.waiting.clear();
  }
}

export type Raced<T> = { ok: true; value: T } | { ok: false; timeout: true } | { ok: false; timeout: false; error: unknown };

/** Waits for `work` or the deadline; what arrives after the deadline goes to `discard`. */
export function race<T>(work: Promise<T>, deadline: Deadline, discard?: (late: T) => void): Promise<Raced<T>> {
  return new Promise((resolve) => {
    let settled = false;
    const unsubscribe = deadline.onExpire(() => {
      if (settled) return;
      settled = true;
      resolve({ ok: false, timeout: true });
    });
    work.then(
      (value) => {
        if (settled) {
          discard?.(value);
          return;
        }
        settled = true;
        unsubscribe();
        resolve({ ok: true, value });
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        unsubscribe();
        resolve({ ok: false, timeout: false, error });
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Reading a first message

export type ReadOutcome<T> =
  | { kind: 'verdict'; verdict: T; received: Buffer }
  | { kind: 'timeout'; received: Buffer }
  | { kind: 'closed'; received: Buffer }
  | { kind: 'error'; error: Error; received: Buffer };

/**
 * Feeds what `stream` sends to `push` until it answers something other than 'need-more', then
 * pauses the stream: later bytes stay in it for whoever reads next. `received` is every byte
 * read, kept for forwarding a message the parser could not read; it is bounded by the parser's
 * cap plus the chunk that crossed it, because the parser refuses as soon as a length is too big.
 */
export function readUntilVerdict<T extends { kind: string }>(stream: Duplex, push: (chunk: Buffer) => T, deadline: Deadline): Promise<ReadOutcome<T>> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const received = (): Buffer => (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    const finish = (outcome: ReadOutcome<T>): void => {
      if (done) return;
      done = true;
      stream.pause();
      stream.off('data', onData);
      stream.off('end', onClosed);
      stream.off('close', onClosed);
      stream.off('error', onError);
      unsubscribe();
      resolve(outcome);
    };
    const onData = (chunk: Buffer): void => {
      if (done) return;
      chunks.push(chunk);
      const verdict = push(chunk);
      if (verdict.kind !== 'need-more') finish({ kind: 'verdict', verdict, received: received() });
    };
    const onClosed = (): void => finish({ kind: 'closed', received: received() });
    const onError = (error: Error): void => finish({ kind: 'error', error, received: received() });
    const unsubscribe = deadline.onExpire(() => finish({ kind: 'timeout', received: received() }));
    if (stream.destroyed || stream.readableEnded) {
      finish({ kind: 'closed', received: Buffer.alloc(0) });
      return;
    }
    stream.on('data', onData);
    stream.once('end', onClosed);
    stream.once('close', onClosed);
    stream.once('error', onError);
    stream.resume();
  });
}

// ---------------------------------------------------------------------------------------------
// TLS in the middle of a conversation

export type TlsOutcome = { ok: true; socket: tls.TLSSocket; verification?: PeerVerification } | { ok: false; reason: string };

/**
 * OpenSSL's verdict on the client's certificate. A TLSSocket made by hand (as here, in the
 * middle of a conversation) is not given it: Node's tls.Server sets `authorized` and
 * `authorizationError` in its own 'secure' handler (onServerSocketSecure), from the handle's
 * verifyError(). The same call is made here. It is not public API, so its absence fails closed:
 * no verdict, no identity.
 */
export function peerVerification(socket: tls.TLSSocket): PeerVerification {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null | undefined } })._handle;
  if (typeof handle?.verifyError !== 'function') return { authorized: false, error: 'the TLS layer gave no verification result' };
  const error = handle.verifyError();
  return error ? { authorized: false, error: error.code ?? error.message } : { authorized: true, error: undefined };
}

function awaitHandshake(socket: tls.TLSSocket, event: 'secure' | 'secureConnect', deadline: Deadline, peer: string, verify = false): Promise<TlsOutcome> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (outcome: TlsOutcome): void => {
      if (done) return;
      done = true;
      socket.off(event, onSecure);
      socket.off('error', onError);
      socket.off('close', onClose);
      unsubscribe();
      if (!outcome.ok) socket.destroy();
      resolve(outcome);
    };
    const onSecure = (): void => finish(verify ? { ok: true, socket, verification: peerVerification(socket) } : { ok: true, socket });
    const onError = (err: Error): void => finish({ ok: false, reason: `TLS handshake with the ${peer} failed: ${err.message}` });
    const onClose = (): void => finish({ ok: false, reason: `the ${peer} closed the connection during the TLS handshake` });
    const unsubscribe = deadline.onExpire(() => finish({ ok: false, reason: `the TLS handshake with the ${peer} did not finish within ${deadline.ms / 1000} s` }));
    socket.once(event, onSecure);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

/**
 * Makes the relay the TLS server on `raw`, which the client is about to use for its TLS
 * handshake. `pending` are bytes already read from `raw` that belong to that handshake (the start
 * of the ClientHello); they are put back first. Node 20 reads them from the wrapped socket.
 * With `requestCert` the client is asked for its certificate (verified against the CA in the
 * context) and the outcome carries OpenSSL's verdict; a missing or unverified certificate does
 * not fail the handshake, so the session can refuse in the protocol's words, saying why.
 */
export function acceptTls(
  raw: Duplex,
  pending: Buffer,
  options: { secureContext: tls.SecureContext; ALPNProtocols?: string[]; requestCert?: boolean },
  deadline: Deadline,
): Promise<TlsOutcome> {
  raw.pause();
  if (pending.length > 0) raw.unshift(pending);
  const requestCert = options.requestCert === true;
  const socket = new tls.TLSSocket(raw as net.Socket, {
    isServer: true,
    secureContext: options.secureContext,
    ...(requestCert ? { requestCert: true, rejectUnauthorized: false } : {}),
    ...(options.ALPNProtocols ? { ALPNProtocols: options.ALPNProtocols } : {}),
  });
  return awaitHandshake(socket, 'secure', deadline, 'client', requestCert);
}

/** acceptTls as the session's context asks for it (the client's certificate requested or not). */
export function acceptClientTls(
  context: DbSessionContext,
  raw: Duplex,
  pending: Buffer,
  deadline: Deadline,
  ALPNProtocols?: string[],
): Promise<TlsOutcome> {
  if (context.tls.mode !== 'terminate') return Promise.resolve({ ok: false, reason: 'this listener does not terminate TLS' });
  return acceptTls(raw, pending, { secureContext: context.tls.secureContext, requestCert: context.tls.requestClientCert, ...(ALPNProtocols ? { ALPNProtocols } : {}) }, deadline);
}

/**
 * The identity after the client's TLS handshake: from its certificate when the listener takes
 * identities that way (context.identifyFromPeer), else the identity known at accept. A lookup
 * that fails or outlives the deadline gives no identity (the policy then refuses).
 */
export async function identityAfterTls(context: DbSessionContext, accepted: { socket: tls.TLSSocket; verification?: PeerVerification }, deadline: Deadline): Promise<ClientIdentity> {
  if (!context.identifyFromPeer) return context.identity;
  const verification = accepted.verification ?? { authorized: false, error: 'the client was not asked for a certificate' };
  const r = await race(context.identifyFromPeer({ socket: accepted.socket, verification }), deadline);
  if (r.ok) return r.value;
  const why = r.timeout ? `no answer within ${deadline.ms / 1000} s` : errorMessage(r.error);
  return { name: undefined, source: context.identity.source, detail: `the client certificate could not be checked: ${why}` };
}

/**
 * Makes the relay the TLS client on `raw` towards the database. The database's certificate is
 * not verified: the contract gives the relay no trust anchor for it (see the report); the
 * connection is encrypted against passive listeners, which is what the client asked for.
 */
export function startTls(raw: Duplex, deadline: Deadline): Promise<TlsOutcome> {
  const socket = tls.connect({ socket: raw, rejectUnauthorized: false });
  return awaitHandshake(socket, 'secureConnect', deadline, 'database');
}

// ---------------------------------------------------------------------------------------------
// Closing

/**
 * Sends `reply` (if any), ends the stream and resolves once it is closed: when the client has
 * read the reply and closed too, or after `lingerMs` at the latest.
 */
export function closeWithReply(stream: Duplex, reply: Buffer | undefined, lingerMs: number = DB_SESSION_DEFAULTS.refusalLingerMs): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) {
      resolve();
      return;
    }
    const timer = setTimeout(() => stream.destroy(), lingerMs);
    stream.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    if (reply) stream.end(reply);
    else stream.end();
    // Read and drop what the client still sends, so its FIN is seen and the socket closes.
    stream.resume();
  });
}

/** Every stream a session opened or was given, each with an error listener, destroyed at the end. */
export class SessionStreams {
  private readonly all = new Set<Duplex>();

  constructor(private readonly log: Logger) {}

  add<S extends Duplex>(stream: S): S {
    if (!this.all.has(stream)) {
      this.all.add(stream);
      // Errors end the session through 'close' (the splice and the readers see them too); a
      // stream without an error listener would crash the process.
      stream.on('error', (err: Error) => this.log.debug({ err: err.message }, 'socket error'));
    }
    return stream;
  }

  destroyAll(): void {
    for (const s of this.all) s.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Decisions

/** Asks the policy; a policy that fails or hangs refuses (deny unless allowed). */
export async function decideSafely(context: DbSessionContext, input: DecisionInput): Promise<Decision> {
  const deadline = new Deadline(Math.max(context.handshakeTimeoutMs, 1_000));
  try {
    const r = await race(context.decide(input), deadline);
    if (r.ok) return r.value;
    const why = r.timeout ? `no answer within ${deadline.ms / 1000} s` : errorMessage(r.error);
    // No DecisionReason names an internal failure; 'refused-by-config' is the least misleading.
    return { allow: false, reason: 'refused-by-config', message: `warpstone dbrelay: the relay could not decide (${why}); the login is refused` };
  } finally {
    deadline.clear();
  }
}

/** One audit event and one log line per decision; `identity` is the session's (see identityAfterTls). */
export function recordDecision(
  context: DbSessionContext,
  protocol: DbProtocol,
  dbUser: string | undefined,
  decision: Decision,
  extra: Record<string, unknown> = {},
  identity: ClientIdentity = context.identity,
): void {
  const event: DbAuditEvent = {
    time: new Date(),
    listener: context.listener,
    protocol,
    source: context.source,
    identity: identity.name,
    identitySource: identity.source,
    ...(identity.detail === undefined ? {} : { identityDetail: identity.detail }),
    dbUser,
    decision: decision.allow ? 'allow' : 'deny',
    reason: decision.reason,
    message: decision.message,
  };
  try {
    context.audit.record(event);
  } catch (err) {
    context.log.error({ err: errorMessage(err) }, 'audit record failed');
  }
  // A listener binds the identity it knew at accept into the session's logger; a later one is added here.
  const later = identity === context.identity ? {} : { identity: identity.name };
  const fields = { protocol, ...later, identitySource: identity.source, dbUser, decision: event.decision, reason: decision.reason, ...extra };
  if (decision.allow) context.log.info(fields, decision.message);
  else context.log.warn(fields, decision.message);
}

// ---------------------------------------------------------------------------------------------
// The pipe

export interface PipeHooks {
  /** the session's logger when it is not context.log (an identity learnt after accept) */
  log?: Logger;
  /** called right after the splice starts (a watcher may prepend its own 'data' listener) */
  onStarted?(handle: SpliceHandle): void;
  /** extra fields for the closing log line */
  closingFields?(): Record<string, unknown>;
}

/** Splices client and database with the idle timeout and logs how it ended. */
export async function pipeAndLog(context: DbSessionContext, protocol: DbProtocol, client: Duplex, upstream: Duplex, startedAt: number, hooks: PipeHooks = {}): Promise<void> {
  // A stream emits 'end' even while paused, so a client that half-closed right after its first
  // message may have ended before the splice listens: carry that end-of-stream by hand.
  const clientEnded = client.readableEnded;
  const upstreamEnded = upstream.readableEnded;
  const handle = splice(client, upstream, { idleTimeoutMs: context.idleTimeoutMs });
  hooks.onStarted?.(handle);
  if (clientEnded) upstream.end();
  if (upstreamEnded) client.end();
  const result = await handle.done;
  (hooks.log ?? context.log).info(
    {
      protocol,
      toDatabase: result.aToB,
      toClient: result.bToA,
      durationMs: Date.now() - startedAt,
      ...(result.error ? { reason: result.error.message } : {}),
      ...hooks.closingFields?.(),
    },
    'database session closed',
  );
}
