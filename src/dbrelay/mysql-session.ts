// One MySQL / MariaDB client of the database relay, from accept to close. The server speaks
// first, so the relay connects to the database, passes its greeting on (with capability flags
// adjusted, see below), reads the client's first packet, asks the policy, and then either
// refuses with a real ERR packet or forwards the packet and becomes a byte pipe.
//
// Capability flags in the greeting the client sees:
//  - CLIENT_SSL is set when the listener terminates TLS (tls.mode 'terminate') and cleared when
//    it refuses TLS. Cleared, because `mariadb` 10.11 asks for TLS whenever it is offered (its
//    --ssl is on by default): offering it and then refusing would break every default client.
//    Clients that merely prefer TLS go on in clear text; clients that require it stop with their
//    own message ("SSL is required, but the server does not support it"). A client that sends an
//    SSLRequest anyway gets an ERR packet (1251, 08004) saying TLS is not accepted here. It is
//    sent in clear after the SSLRequest, so a TLS client reports a TLS error ("wrong version
//    number") rather than the text; the log line carries the explanation.
//  - CLIENT_COMPRESS (and MySQL's zstd flag, MariaDB's COM_MULTI) are cleared, so the command
//    stream stays plain packets the relay can watch for COM_CHANGE_USER (below).
//
// TLS terminated at the relay (the client sent an SSLRequest, listener 'terminate'): the relay
// does the TLS handshake with its own certificate and reads the user inside TLS. Towards the
// database:
//  - if the database's greeting offered TLS, the relay forwards the SSLRequest and speaks TLS to
//    the database too; sequence numbers line up and nothing is rewritten. Needed for MySQL 8's
//    caching_sha2_password full authentication, which sends the password in clear over TLS and
//    refuses that over a plain connection.
//  - if it did not (MariaDB here has no TLS), the relay forwards the handshake response as the
//    first packet (sequence 1 instead of 2, CLIENT_SSL cleared) and renumbers every packet of the
//    authentication exchange (server→client +1, client→server -1) until the client's first
//    command, which is the first client packet with sequence 0. That end marker needs no
//    knowledge of authentication plugins. Then the pipe is plain again. Note: a client that
//    believes it is on TLS may send a clear-text password (mysql_clear_password, PAM); on this
//    path it then crosses the relay→database leg unencrypted. Keep that leg local or give the
//    database TLS.
//
// On listeners that take the identity from a client certificate sent inside TLS
// (context.identifyFromPeer), the relay asks for it in the TLS handshake that follows the
// SSLRequest (`mariadb --ssl-cert --ssl-key`), and the identity is read from it before the
// handshake response inside TLS is judged.
//
// The user name is judged as the server will read it: converted from the client's character set
// (latin1 = Windows-1252 and utf8 families; other non-ASCII names are 'unparsable') and cut to
// the server's buffer, so a name that the server shortens to a known user is judged as that
// user. A name that needed a possibly lossy conversion (non-ASCII latin1, invalid utf8, an
// unconverted charset) is never let through as "unknown to the database" or "unparsable".
//
// After the handshake the bytes are not changed. One thing is still watched on the client's
// side: COM_CHANGE_USER (0x11), which would switch to another database user with that user's
// password inside an allowed connection and so defeat the check. It is refused with an ERR and
// the connection is closed. The watch only reads packet headers and each command's first byte.
//
// Owns: the MySQL session. Must not: decide policy (context.decide does), parse more than the
// handshake, the authentication sequence numbers and command bytes, or keep more than a packet.
import type { Duplex } from 'node:stream';
import { errorMessage } from '../common/errors.js';
import {
  CLIENT,
  MysqlClientHandshakeParser,
  MysqlGreetingParser,
  buildErrPacket,
  parseClientPayload,
  readPacket,
  type ClientResult,
  type Greeting,
  type HandshakeResponse,
} from './mysql.js';
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
  startTls,
  type ReadOutcome,
} from './session-io.js';
import { visibleName } from './policy.js';
import type { ClientIdentity, DbSessionContext, DbSessionHandler, Decision } from './types.js';

/** ER_NOT_SUPPORTED_AUTH_MODE: "the connection mode the client asked for is not supported here" */
const ER_NOT_SUPPORTED_AUTH_MODE = 1251;
/**
 * ER_UNKNOWN_ERROR, for "the relay cannot reach the database". Not ER_UNKNOWN_ERROR (2003):
 * libmariadb reports a server ERR carrying a client-side code (2000-2999) as "Received malformed
 * packet" and drops the message.
 */
const ER_UNKNOWN_ERROR = 1105;
/** ER_HANDSHAKE_ERROR ("Bad handshake") for a packet the relay will not forward */
const ER_HANDSHAKE_ERROR = 1043;
export const COM_CHANGE_USER = 0x11;
/** MySQL 8: CLIENT_ZSTD_COMPRESSION_ALGORITHM */
const CLIENT_ZSTD = 1 << 26;
/** MariaDB extended capability MARIADB_CLIENT_COM_MULTI (bit 1 of the extended flags) */
const MARIADB_COM_MULTI = 1 << 1;

const TLS_REFUSED_MESSAGE =
  'warpstone dbrelay: TLS is not accepted by this relay listener; connect without TLS (mariadb --skip-ssl, mysql --ssl-mode=DISABLED, or no ssl option in the driver)';

// ---------------------------------------------------------------------------------------------
// Byte edits (pure; exported for the tests)

/**
 * The greeting as the client should see it: CLIENT_SSL set (terminate) or cleared (refuse),
 * compression and COM_MULTI cleared. `raw` is a greeting packet the parser accepted.
 */
export function greetingForClient(raw: Buffer, offerTls: boolean): Buffer {
  const out = Buffer.from(raw);
  const versionEnd = out.indexOf(0, 5);
  if (versionEnd < 0) return out;
  const capsLowAt = versionEnd + 1 + 4 + 8 + 1;
  if (capsLowAt + 2 > out.length) return out;
  let low = out.readUInt16LE(capsLowAt);
  low = offerTls ? low | CLIENT.SSL : low & ~CLIENT.SSL;
  low &= ~CLIENT.COMPRESS;
  out.writeUInt16LE(low, capsLowAt);
  const capsHighAt = capsLowAt + 2 + 1 + 2; // after the low flags, charset (1) and status flags (2)
  if (capsHighAt + 2 <= out.length) out.writeUInt16LE(out.readUInt16LE(capsHighAt) & ~(CLIENT_ZSTD >>> 16), capsHighAt);
  // MariaDB's extended flags: the last 4 of the 10 reserved bytes, present when CLIENT_MYSQL is unset.
  const extendedAt = capsHighAt + 2 + 1 + 6;
  if ((low & CLIENT.LONG_PASSWORD) === 0 && extendedAt + 4 <= out.length) {
    out.writeUInt32LE((out.readUInt32LE(extendedAt) & ~MARIADB_COM_MULTI) >>> 0, extendedAt);
  }
  return out;
}

/** A client packet as the database should see it: sequence moved by `seqDelta`, flags cleared. */
export function clientPacketForDatabase(raw: Buffer, options: { seqDelta: number; clearSsl: boolean }): Buffer {
  const out = Buffer.from(raw);
  if (out.length >= 4) out[3] = ((out[3] as number) + options.seqDelta + 256) & 0xff;
  if (out.length >= 6) {
    let low = out.readUInt16LE(4) & ~CLIENT.COMPRESS;
    if (options.clearSsl) low &= ~CLIENT.SSL;
    out.writeUInt16LE(low, 4);
    if (low & CLIENT.PROTOCOL_41 && out.length >= 8) out.writeUInt16LE(out.readUInt16LE(6) & ~(CLIENT_ZSTD >>> 16), 6);
  }
  return out;
}

const LATIN1_CHARSETS = new Set([5, 8, 15, 31, 47, 48, 49, 94]);
const UTF8_CHARSETS = new Set([33, 45, 46, 76, 83, 255]);
for (let id = 192; id <= 247; id++) UTF8_CHARSETS.add(id);

/**
 * Bytes 0x80-0x9F of MariaDB's and MySQL's `latin1`, which is Windows-1252, not ISO-8859-1
 * (strings/ctype-latin1.c): 0x80 is "€" to the server. The five bytes Windows-1252 leaves
 * undefined map to the C1 control of the same number, as the server maps them. Not
 * `new TextDecoder('windows-1252')`: Node 20 (and 22) decode that label as ISO-8859-1
 * (0x80 → U+0080), the very mismatch this table exists to avoid.
 */
const CP1252_HIGH_CONTROLS = [
  0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008d, 0x017d, 0x008f,
  0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
];

/** Decodes bytes as the server's `latin1` (Windows-1252) character set. */
export function decodeServerLatin1(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += String.fromCharCode(b >= 0x80 && b <= 0x9f ? (CP1252_HIGH_CONTROLS[b - 0x80] as number) : b);
  return out;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/** What serverUserName found: the name (with `lossy` saying which conversion it needed), or why there is none. */
export type ServerUserName = { user: string; lossy?: string } | { problem: string; lossy: string };

/**
 * The user name as the server will read it: converted from the client's character set to utf8
 * and cut to the server's buffer (MariaDB 384 bytes, MySQL 96), at a character boundary.
 * `lossy` is set whenever the name needed a conversion the server may make differently (any
 * non-ASCII byte outside a valid utf8 name): the policy then never lets the name through as
 * "unknown to the database" (policy.ts). Invalid utf8 is decoded with U+FFFD for the checks;
 * non-ASCII in a character set the relay does not convert gives no name at all (a problem, also
 * lossy, so refused too).
 */
export function serverUserName(response: HandshakeResponse, greeting: Greeting): ServerUserName {
  const bytes = response.userBytes;
  let user: string;
  let lossy: string | undefined;
  if (bytes.every((b) => b < 0x80)) user = bytes.toString('latin1');
  else if (response.charset !== undefined && LATIN1_CHARSETS.has(response.charset)) {
    user = decodeServerLatin1(bytes);
    lossy = `non-ASCII bytes in the latin1 (Windows-1252) client character set ${response.charset}`;
  } else if (response.charset !== undefined && UTF8_CHARSETS.has(response.charset)) {
    try {
      user = STRICT_UTF8.decode(bytes);
    } catch {
      user = bytes.toString('utf8');
      lossy = `the user name is not valid utf8 in the utf8 character set ${response.charset} the client announced; invalid bytes read as U+FFFD`;
    }
  } else {
    const problem = `the user name has non-ASCII bytes in client character set ${response.charset ?? '(none, old protocol)'}, which the relay does not convert`;
    return { problem, lossy: problem };
  }
  const limit = /mariadb/i.test(greeting.serverVersion) ? DB_SESSION_DEFAULTS.mariadbUserMaxBytes : DB_SESSION_DEFAULTS.mysqlUserMaxBytes;
  const cut = truncateUtf8(user, limit);
  return lossy === undefined ? { user: cut } : { user: cut, lossy };
}

/** The longest prefix of `text` whose utf8 encoding fits in `maxBytes`, cut between characters. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let out = '';
  let used = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (used + n > maxBytes) break;
    out += ch;
    used += n;
  }
  return out;
}

/**
 * Reads the client's handshake response inside TLS. The client keeps CLIENT_SSL in its flags
 * there, which MysqlClientHandshakeParser reports as another SSLRequest; here the flag is read as
 * "already in TLS". Bounded like that parser: a header announcing more than `maxBytes` is refused.
 */
export class MysqlResponseInsideTlsParser {
  private buffered: Buffer = Buffer.alloc(0);
  private finished: ClientResult | undefined;

  constructor(private readonly maxBytes = DB_SESSION_DEFAULTS.mysqlMaxHandshakeBytes) {}

  get bufferedBytes(): number {
    return this.buffered.length;
  }

  push(chunk: Buffer): ClientResult {
    if (this.finished) return this.finished;
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const r = readPacket(this.buffered, this.maxBytes);
    if (r.kind === 'need-more') return r;
    this.buffered = Buffer.alloc(0);
    if (r.kind === 'invalid') return (this.finished = r);
    const payload = Buffer.from(r.packet.payload);
    if (payload.length >= 2) payload.writeUInt16LE(payload.readUInt16LE(0) & ~CLIENT.SSL, 0);
    const v = parseClientPayload(payload);
    const result: ClientResult =
      v.kind === 'response'
        ? { kind: 'response', response: v.response, packet: r.packet, rest: r.rest }
        : v.kind === 'invalid'
          ? v
          : { kind: 'invalid', reason: 'an SSLRequest inside TLS' };
    this.finished = { kind: 'invalid', reason: 'the handshake response was already read' };
    return result;
  }
}

// ---------------------------------------------------------------------------------------------
// Watching the command stream

export type ScanVerdict = { kind: 'ok' } | { kind: 'change-user'; user: string | undefined };

/**
 * Follows client→server packet boundaries (headers only) and reports a command packet (sequence
 * 0) whose first byte is COM_CHANGE_USER. A server accepts a new command only with sequence 0,
 * so every command it runs passes this check. Keeps at most a 4-byte header between chunks.
 */
export class MysqlCommandScanner {
  private header = Buffer.alloc(4);
  private headerFill = 0;
  private remaining = 0;
  private awaitingCommandByte = false;

  push(chunk: Buffer): ScanVerdict {
    let i = 0;
    while (i < chunk.length) {
      if (this.headerFill < 4) {
        const n = Math.min(4 - this.headerFill, chunk.length - i);
        chunk.copy(this.header, this.headerFill, i, i + n);
        this.headerFill += n;
        i += n;
        if (this.headerFill === 4) {
          this.remaining = this.header.readUIntLE(0, 3);
          this.awaitingCommandByte = this.header[3] === 0 && this.remaining > 0;
          if (this.remaining === 0) this.headerFill = 0;
        }
        continue;
      }
      if (this.awaitingCommandByte) {
        this.awaitingCommandByte = false;
        if (chunk[i] === COM_CHANGE_USER) {
          // Best effort for the message: the user name, if it is whole in this chunk.
          const end = chunk.indexOf(0, i + 1);
          const user = end > i && end - i - 1 <= 512 ? chunk.subarray(i + 1, end).toString('utf8') : undefined;
          return { kind: 'change-user', user };
        }
      }
      const skip = Math.min(this.remaining, chunk.length - i);
      this.remaining -= skip;
      i += skip;
      if (this.remaining === 0) this.headerFill = 0;
    }
    return { kind: 'ok' };
  }
}

// ---------------------------------------------------------------------------------------------
// Authentication with sequence numbers renumbered (TLS at the relay, clear upstream)

type RenumberOutcome = { kind: 'command'; clientRest: Buffer; serverRest: Buffer } | { kind: 'ended'; why: string };

/**
 * Relays the authentication exchange, server packets one sequence number up and client packets
 * one down, until the client sends a packet with sequence 0 (its first command). Bounded: one
 * packet of at most `maxPacket` bytes per direction; the idle timeout (if any) applies.
 */
function renumberAuthentication(client: Duplex, upstream: Duplex, clientPending: Buffer, idleMs: number, maxPacket: number): Promise<RenumberOutcome> {
  return new Promise((resolve) => {
    let clientBuf: Buffer = Buffer.alloc(0);
    let serverBuf: Buffer = Buffer.alloc(0);
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (idleMs <= 0) return;
      clearTimeout(timer);
      timer = setTimeout(() => finish({ kind: 'ended', why: `no byte either way for ${idleMs / 1000} s during authentication` }), idleMs);
    };
    const finish = (outcome: RenumberOutcome): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.pause();
      upstream.pause();
      client.off('data', onClient);
      upstream.off('data', onServer);
      client.off('drain', resumeServer);
      upstream.off('drain', resumeClient);
      for (const s of [client, upstream]) {
        s.off('end', onEnd);
        s.off('close', onEnd);
      }
      resolve(outcome);
    };
    const resumeClient = (): void => void (done || client.resume());
    const resumeServer = (): void => void (done || upstream.resume());
    const onClient = (chunk: Buffer): void => {
      if (done) return;
      arm();
      clientBuf = clientBuf.length === 0 ? chunk : Buffer.concat([clientBuf, chunk]);
      for (;;) {
        if (clientBuf.length < 4) return;
        if (clientBuf[3] === 0) {
          finish({ kind: 'command', clientRest: clientBuf, serverRest: serverBuf });
          return;
        }
        const r = readPacket(clientBuf, maxPacket);
        if (r.kind === 'need-more') return;
        if (r.kind === 'invalid') {
          finish({ kind: 'ended', why: `client during authentication: ${r.reason}` });
          return;
        }
        if (!upstream.write(clientPacketForDatabase(r.packet.raw, { seqDelta: -1, clearSsl: false }))) client.pause();
        clientBuf = r.rest;
      }
    };
    const onServer = (chunk: Buffer): void => {
      if (done) return;
      arm();
      serverBuf = serverBuf.length === 0 ? chunk : Buffer.concat([serverBuf, chunk]);
      for (;;) {
        const r = readPacket(serverBuf, maxPacket);
        if (r.kind === 'need-more') return;
        if (r.kind === 'invalid') {
          finish({ kind: 'ended', why: `database during authentication: ${r.reason}` });
          return;
        }
        const out = Buffer.from(r.packet.raw);
        out[3] = ((out[3] as number) + 1) & 0xff;
        if (!client.write(out)) upstream.pause();
        serverBuf = r.rest;
      }
    };
    const onEnd = (): void => finish({ kind: 'ended', why: 'a side closed during authentication' });
    client.on('data', onClient);
    upstream.on('data', onServer);
    client.on('drain', resumeServer);
    upstream.on('drain', resumeClient);
    for (const s of [client, upstream]) {
      s.once('end', onEnd);
      s.once('close', onEnd);
    }
    arm();
    if (clientPending.length > 0) onClient(clientPending);
    // 'end' may have passed while the stream was paused: nothing more will come from that side.
    if (client.readableEnded || upstream.readableEnded) finish({ kind: 'ended', why: 'a side closed during authentication' });
    if (!done) {
      client.resume();
      upstream.resume();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The session

interface Forward {
  client: Duplex;
  upstream: Duplex;
  /** client bytes read after its handshake packet, to go on to the database */
  clientRest: Buffer;
  /** renumber the authentication exchange (TLS at the relay, clear towards the database) */
  renumber: boolean;
}

class MysqlSession {
  private readonly streams: SessionStreams;
  private readonly startedAt = Date.now();
  private log;
  /** who the client is: the listener's answer at accept, or its certificate once inside TLS */
  private identity: ClientIdentity;

  constructor(private readonly ctx: DbSessionContext) {
    this.log = ctx.log;
    this.identity = ctx.identity;
    this.streams = new SessionStreams(ctx.log);
    this.streams.add(ctx.client);
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
      if (forward) await this.pipe(forward);
    } catch (err) {
      this.log.error({ protocol: 'mysql', err: errorMessage(err) }, 'mysql session failed');
    } finally {
      this.streams.destroyAll();
    }
  }

  /** Refuses: `reply` to the client, the database connection dropped. */
  private async refuse(client: Duplex, upstream: Duplex | undefined, reply: Buffer | undefined): Promise<undefined> {
    upstream?.destroy();
    await closeWithReply(client, reply);
    return undefined;
  }

  private lostClient(read: ReadOutcome<unknown>, what: string, hint = ''): void {
    if (read.kind === 'timeout') this.log.warn({ protocol: 'mysql', timeoutMs: this.ctx.handshakeTimeoutMs }, `no ${what} within ${this.ctx.handshakeTimeoutMs / 1000} s; closing`);
    else if (read.kind === 'error') this.log.info({ protocol: 'mysql', err: read.error.message }, `client connection failed before its ${what}`);
    else this.log.info({ protocol: 'mysql', bytes: read.received.length }, `client closed before sending its ${what}${hint}`);
  }

  private async handshake(deadline: Deadline): Promise<Forward | undefined> {
    const { ctx, log } = this;
    let client = ctx.client;

    // 1. The database, and its greeting.
    const connected = await race(ctx.connectUpstream(), deadline, (late) => late.destroy());
    if (!connected.ok) {
      const why = connected.timeout ? `no connection within ${deadline.ms / 1000} s` : errorMessage(connected.error);
      log.warn({ protocol: 'mysql', reason: why }, 'cannot reach the database; the client gets an error in place of the greeting');
      return this.refuse(client, undefined, buildErrPacket({ sequence: 0, code: ER_UNKNOWN_ERROR, protocol41: false, message: `warpstone dbrelay: cannot reach the database: ${why}` }));
    }
    let upstream = this.streams.add(connected.value);
    const greetingParser = new MysqlGreetingParser(DB_SESSION_DEFAULTS.mysqlMaxHandshakeBytes);
    const greetingRead = await readUntilVerdict(upstream, (c) => greetingParser.push(c), deadline);
    if (greetingRead.kind !== 'verdict' || greetingRead.verdict.kind === 'invalid') {
      const why =
        greetingRead.kind === 'verdict' && greetingRead.verdict.kind === 'invalid'
          ? `its greeting is not MySQL: ${greetingRead.verdict.reason}`
          : greetingRead.kind === 'timeout'
            ? `no greeting within ${deadline.ms / 1000} s`
            : 'it closed the connection before its greeting';
      log.warn({ protocol: 'mysql', reason: why }, 'the database did not greet; the client gets an error in place of the greeting');
      return this.refuse(client, upstream, buildErrPacket({ sequence: 0, code: ER_UNKNOWN_ERROR, protocol41: false, message: `warpstone dbrelay: the database did not answer properly (${why})` }));
    }
    const g = greetingRead.verdict;
    if (g.kind === 'error') {
      // The server's own refusal (host blocked, too many connections): the client reads it as is.
      log.warn({ protocol: 'mysql', code: g.error.code, reason: g.error.message }, 'the database refused the connection before its greeting; passed on');
      return this.refuse(client, upstream, Buffer.concat([g.packet.raw, g.rest]));
    }
    if (g.kind !== 'greeting') return this.refuse(client, upstream, undefined);
    const greeting = g.greeting;
    const databaseOffersTls = (greeting.capabilities & CLIENT.SSL) !== 0;
    client.write(greetingForClient(g.packet.raw, ctx.tls.mode === 'terminate'));
    if (g.rest.length > 0) client.write(g.rest);

    // 2. The client's first packet; inside TLS when it asks for TLS and the listener terminates it.
    let read = await this.readClientPacket(client, deadline);
    if (read.kind !== 'verdict') {
      this.lostClient(read, 'handshake response', ctx.tls.mode === 'refuse' ? ' (a client that requires TLS stops here: this listener does not offer it)' : '');
      return this.refuse(client, upstream, undefined);
    }
    let viaTls = false;
    let verdict = read.verdict;
    if (verdict.kind === 'ssl-request') {
      if (ctx.tls.mode === 'refuse') {
        const decision: Decision = { allow: false, reason: 'refused-by-config', message: TLS_REFUSED_MESSAGE };
        recordDecision(ctx, 'mysql', undefined, decision, {}, this.identity);
        const sequence = (verdict.packet.sequence + 1) & 0xff;
        return this.refuse(client, upstream, buildErrPacket({ sequence, code: ER_NOT_SUPPORTED_AUTH_MODE, sqlState: '08004', message: TLS_REFUSED_MESSAGE }));
      }
      const accepted = await acceptClientTls(ctx, client, verdict.rest, deadline);
      if (!accepted.ok) {
        log.warn({ protocol: 'mysql', reason: accepted.reason }, 'TLS with the client failed; closing');
        return this.refuse(client, upstream, undefined);
      }
      client = this.streams.add(accepted.socket);
      viaTls = true;
      this.learnIdentity(await identityAfterTls(ctx, accepted, deadline));
      if (databaseOffersTls) {
        upstream.write(clientPacketForDatabase(verdict.packet.raw, { seqDelta: 0, clearSsl: false }));
        const secured = await startTls(upstream, deadline);
        if (!secured.ok) {
          log.warn({ protocol: 'mysql', reason: secured.reason }, 'TLS with the database failed; closing');
          const message = `warpstone dbrelay: cannot start TLS with the database: ${secured.reason}`;
          return this.refuse(client, upstream, buildErrPacket({ sequence: (verdict.packet.sequence + 1) & 0xff, code: ER_UNKNOWN_ERROR, sqlState: '08S01', message }));
        }
        upstream = this.streams.add(secured.socket);
      }
      const inside = new MysqlResponseInsideTlsParser();
      read = await readUntilVerdict(client, (c) => inside.push(c), deadline);
      if (read.kind !== 'verdict') {
        this.lostClient(read, 'handshake response inside TLS');
        return this.refuse(client, upstream, undefined);
      }
      verdict = read.verdict;
    }

    // 3. The decision.
    let dbUser: string | undefined;
    let parseProblem: string | undefined;
    let lossyName: string | undefined;
    if (verdict.kind === 'response') {
      const named = serverUserName(verdict.response, greeting);
      if ('user' in named) dbUser = named.user;
      else parseProblem = named.problem;
      lossyName = named.lossy;
    } else if (verdict.kind === 'invalid') {
      parseProblem = verdict.reason;
      // A packet carrying CLIENT_SSL would make the database start TLS with the client past the
      // relay: never forward one the relay did not handle itself. (Inside TLS the flag is
      // expected and harmless.)
      if (!viaTls && read.received.length >= 6 && (read.received.readUInt16LE(4) & CLIENT.SSL) !== 0) {
        const decision: Decision = { allow: false, reason: 'unparsable', message: `warpstone dbrelay: the first packet asks for TLS but cannot be read (${parseProblem}); it is never passed on` };
        recordDecision(ctx, 'mysql', undefined, decision, { tls: false }, this.identity);
        return this.refuse(client, upstream, buildErrPacket({ sequence: 2, code: ER_HANDSHAKE_ERROR, sqlState: '08S01', message: decision.message }));
      }
    }
    const decision = await decideSafely(ctx, {
      identity: this.identity,
      dbUser,
      ...(parseProblem === undefined ? {} : { parseProblem }),
      ...(lossyName === undefined ? {} : { lossyName }),
    });
    recordDecision(ctx, 'mysql', dbUser, decision, { tls: viaTls }, this.identity);
    const packetSequence = verdict.kind === 'response' ? verdict.packet.sequence : viaTls ? 2 : 1;
    if (!decision.allow) {
      const protocol41 = verdict.kind !== 'response' || verdict.response.format === 41;
      return this.refuse(client, upstream, buildErrPacket({ sequence: (packetSequence + 1) & 0xff, message: decision.message, protocol41 }));
    }

    // 4. Forward the packet: renumbered when TLS ends at the relay and the database is in clear.
    const renumber = viaTls && !databaseOffersTls;
    const first = verdict.kind === 'response' ? verdict.packet.raw : read.received;
    upstream.write(clientPacketForDatabase(first, { seqDelta: renumber ? -1 : 0, clearSsl: renumber }));
    const clientRest = verdict.kind === 'response' ? verdict.rest : Buffer.alloc(0);
    return { client, upstream, clientRest, renumber };
  }

  /** The identity from the client's certificate (when the listener takes it from there), logged from now on. */
  private learnIdentity(identity: ClientIdentity): void {
    if (identity === this.identity) return;
    this.identity = identity;
    this.log = this.ctx.log.child({ identity: identity.name });
  }

  private readClientPacket(client: Duplex, deadline: Deadline): Promise<ReadOutcome<ClientResult>> {
    const parser = new MysqlClientHandshakeParser(DB_SESSION_DEFAULTS.mysqlMaxHandshakeBytes);
    return readUntilVerdict(client, (c) => parser.push(c), deadline);
  }

  private async pipe(forward: Forward): Promise<void> {
    const { ctx, log } = this;
    const { client, upstream } = forward;
    if (forward.renumber) {
      const auth = await renumberAuthentication(client, upstream, forward.clientRest, ctx.idleTimeoutMs, DB_SESSION_DEFAULTS.mysqlMaxAuthPacketBytes);
      if (auth.kind === 'ended') {
        log.info({ protocol: 'mysql', reason: auth.why, durationMs: Date.now() - this.startedAt }, 'database session closed during authentication');
        upstream.destroy();
        await closeWithReply(client, undefined);
        return;
      }
      if (auth.serverRest.length > 0) upstream.unshift(auth.serverRest);
      client.unshift(auth.clientRest);
    } else if (forward.clientRest.length > 0) {
      if (!client.readableEnded) client.unshift(forward.clientRest);
      else {
        // The client sent more after its handshake and half-closed; 'end' has passed, so these
        // bytes cannot be put back: check them here and send them on.
        const seen = new MysqlCommandScanner().push(forward.clientRest);
        if (seen.kind === 'change-user') {
          upstream.destroy();
          await closeWithReply(client, this.refuseChangeUser(seen.user));
          return;
        }
        upstream.write(forward.clientRest);
      }
    }
    let refused = false;
    const scanner = new MysqlCommandScanner();
    await pipeAndLog(ctx, 'mysql', client, upstream, this.startedAt, {
      log,
      onStarted: () => {
        // Prepended, so it sees each chunk before the pump forwards it.
        const watch = (chunk: Buffer): void => {
          const seen = scanner.push(chunk);
          if (seen.kind !== 'change-user') return;
          // The database must never get this packet: cut it first (the pump's write of this
          // chunk then goes nowhere, and the splice closes the pair), then tell the client.
          upstream.destroy();
          client.off('data', watch);
          refused = true;
          client.end(this.refuseChangeUser(seen.user));
        };
        client.prependListener('data', watch);
      },
      closingFields: () => (refused ? { reason: 'COM_CHANGE_USER refused' } : {}),
    });
  }

  /** Records the refusal of a COM_CHANGE_USER and returns the ERR for the client (sequence 1). */
  private refuseChangeUser(user: string | undefined): Buffer {
    const target = user === undefined ? 'another database user' : `database user ${visibleName(user)}`;
    const decision: Decision = {
      allow: false,
      reason: 'refused-by-config',
      message: `warpstone dbrelay: COM_CHANGE_USER is not allowed through this relay (it would switch to ${target} without the identity check); open a new connection instead`,
    };
    recordDecision(this.ctx, 'mysql', user, decision, { command: 'COM_CHANGE_USER' }, this.identity);
    return buildErrPacket({ sequence: 1, message: decision.message });
  }
}

/** Serves one MySQL/MariaDB client; resolves when both sides are closed; never throws. */
export const serveMysql: DbSessionHandler = (context) => new MysqlSession(context).run();
