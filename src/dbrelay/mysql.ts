// MySQL / MariaDB handshake, as the database relay needs it: packet framing (3-byte LE length,
// 1-byte sequence), the server's Initial Handshake v10, the client's first packet
// (HandshakeResponse41, HandshakeResponse320 or an SSLRequest) and an ERR packet builder.
// Pure and incremental: feed bytes, get 'need-more', 'invalid' (with the reason) or a result
// with the raw packet and any bytes that followed it. Bounded: a packet whose header announces
// more than the cap is refused at once, so no parser ever buffers more than the cap plus the
// chunk that completed a packet. Never throws on input bytes.
// Owns: the MySQL handshake grammar. Must not: touch sockets, decide policy, log.

/** Largest handshake packet (header included) the relay buffers. Real ones are < 1 KiB. */
export const MYSQL_MAX_HANDSHAKE_BYTES = 64 * 1024;

export const CLIENT = {
  LONG_PASSWORD: 0x1, // MariaDB calls this CLIENT_MYSQL; a MariaDB server leaves it unset
  FOUND_ROWS: 0x2,
  LONG_FLAG: 0x4,
  CONNECT_WITH_DB: 0x8,
  NO_SCHEMA: 0x10,
  COMPRESS: 0x20,
  ODBC: 0x40,
  LOCAL_FILES: 0x80,
  IGNORE_SPACE: 0x100,
  PROTOCOL_41: 0x200,
  INTERACTIVE: 0x400,
  SSL: 0x800,
  IGNORE_SIGPIPE: 0x1000,
  TRANSACTIONS: 0x2000,
  RESERVED: 0x4000,
  SECURE_CONNECTION: 0x8000,
  MULTI_STATEMENTS: 0x10000,
  MULTI_RESULTS: 0x20000,
  PS_MULTI_RESULTS: 0x40000,
  PLUGIN_AUTH: 0x80000,
  CONNECT_ATTRS: 0x100000,
  PLUGIN_AUTH_LENENC_CLIENT_DATA: 0x200000,
  CAN_HANDLE_EXPIRED_PASSWORDS: 0x400000,
  SESSION_TRACK: 0x800000,
  DEPRECATE_EOF: 0x1000000,
} as const;

// ---------------------------------------------------------------------------------------------
// Framing

export interface Packet {
  sequence: number;
  payload: Buffer;
  /** the whole packet as it came (header + payload), to forward unchanged */
  raw: Buffer;
}

export type FrameResult =
  | { kind: 'need-more' }
  | { kind: 'invalid'; reason: string }
  | { kind: 'packet'; packet: Packet; rest: Buffer };

/** Reads one packet from the start of `buf`. A packet longer than `maxBytes` is invalid. */
export function readPacket(buf: Buffer, maxBytes = MYSQL_MAX_HANDSHAKE_BYTES): FrameResult {
  if (buf.length < 4) return { kind: 'need-more' };
  const length = buf.readUIntLE(0, 3);
  const total = 4 + length;
  if (length === 0xffffff || total > maxBytes) {
    return { kind: 'invalid', reason: `packet of ${length} bytes is longer than the ${maxBytes}-byte handshake limit` };
  }
  if (buf.length < total) return { kind: 'need-more' };
  const raw = buf.subarray(0, total);
  return {
    kind: 'packet',
    packet: { sequence: buf[3] as number, payload: buf.subarray(4, total), raw },
    rest: buf.subarray(total),
  };
}

export function buildPacket(sequence: number, payload: Buffer): Buffer {
  if (payload.length >= 0xffffff) throw new RangeError(`payload of ${payload.length} bytes needs packet splitting`);
  const head = Buffer.alloc(4);
  head.writeUIntLE(payload.length, 0, 3);
  head[3] = sequence & 0xff;
  return Buffer.concat([head, payload]);
}

/** Accumulates chunks until one whole packet is there; never keeps more than the cap waiting. */
class PacketAccumulator {
  private buffered: Buffer = Buffer.alloc(0);
  private finished: { kind: 'invalid'; reason: string } | undefined;

  constructor(private readonly maxBytes: number) {}

  get bufferedBytes(): number {
    return this.buffered.length;
  }

  push(chunk: Buffer): FrameResult {
    if (this.finished) return this.finished;
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const r = readPacket(this.buffered, this.maxBytes);
    if (r.kind === 'need-more') return r;
    this.buffered = Buffer.alloc(0);
    this.finished = r.kind === 'invalid' ? r : { kind: 'invalid', reason: 'the handshake packet was already read' };
    return r;
  }
}

// ---------------------------------------------------------------------------------------------
// Little readers over a payload. Each returns undefined when the bytes run out.

class Cursor {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  get left(): number {
    return this.buf.length - this.pos;
  }
  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.buf[this.pos++] as number;
  }
  uint(n: number): number | undefined {
    if (this.left < n) return undefined;
    const v = this.buf.readUIntLE(this.pos, n);
    this.pos += n;
    return v;
  }
  bytes(n: number): Buffer | undefined {
    if (n < 0 || this.left < n) return undefined;
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  /** NUL-terminated; undefined when no NUL follows */
  cstring(): Buffer | undefined {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) return undefined;
    const v = this.buf.subarray(this.pos, end);
    this.pos = end + 1;
    return v;
  }
  /** NUL-terminated, or up to the end of the payload when the NUL is missing */
  cstringOrEof(): Buffer {
    const end = this.buf.indexOf(0, this.pos);
    const stop = end < 0 ? this.buf.length : end;
    const v = this.buf.subarray(this.pos, stop);
    this.pos = end < 0 ? stop : end + 1;
    return v;
  }
  /** length-encoded integer; 'bad' for the NULL/ERR markers or a length beyond any payload */
  lenenc(): number | undefined | 'bad' {
    const first = this.u8();
    if (first === undefined) return undefined;
    if (first < 0xfb) return first;
    if (first === 0xfc) return this.uint(2);
    if (first === 0xfd) return this.uint(3);
    if (first === 0xfe) {
      const low = this.uint(4);
      const high = this.uint(4);
      if (low === undefined || high === undefined) return undefined;
      return high === 0 ? low : 'bad';
    }
    return 'bad';
  }
}

const text = (b: Buffer): string => b.toString('utf8');

// ---------------------------------------------------------------------------------------------
// Server greeting

export interface Greeting {
  protocolVersion: number;
  serverVersion: string;
  connectionId: number;
  /** scramble: part 1 (8 bytes) + part 2, without the trailing NUL */
  authPluginData: Buffer;
  capabilities: number;
  /** MariaDB's extended capabilities (0 from MySQL servers) */
  mariadbCapabilities: number;
  charset: number | undefined;
  statusFlags: number | undefined;
  authPluginName: string | undefined;
}

export interface ServerError {
  code: number;
  sqlState: string | undefined;
  message: string;
}

export type GreetingResult =
  | { kind: 'need-more' }
  | { kind: 'invalid'; reason: string }
  | { kind: 'greeting'; greeting: Greeting; packet: Packet; rest: Buffer }
  | { kind: 'error'; error: ServerError; packet: Packet; rest: Buffer };

/** Parses an ERR packet payload (0xFF …). `protocol41` says whether a `#SQLSTATE` may follow. */
export function parseErrPayload(payload: Buffer, protocol41 = true): ServerError | undefined {
  if (payload.length < 3 || payload[0] !== 0xff) return undefined;
  const code = payload.readUInt16LE(1);
  if (protocol41 && payload.length >= 9 && payload[3] === 0x23) {
    return { code, sqlState: payload.subarray(4, 9).toString('latin1'), message: text(payload.subarray(9)) };
  }
  return { code, sqlState: undefined, message: text(payload.subarray(3)) };
}

export function parseGreetingPayload(payload: Buffer): Greeting | { invalid: string } | ServerError {
  if (payload[0] === 0xff) {
    // In place of the greeting mysqld sends no SQLSTATE (it knows no client flags yet); a '#'
    // right after the code is still read as one.
    return parseErrPayload(payload, true) ?? { invalid: 'truncated ERR packet in place of the greeting' };
  }
  const c = new Cursor(payload);
  const protocolVersion = c.u8();
  if (protocolVersion === undefined) return { invalid: 'empty greeting' };
  if (protocolVersion !== 10) return { invalid: `greeting protocol version ${protocolVersion}, expected 10` };
  const version = c.cstring();
  const connectionId = c.uint(4);
  const part1 = c.bytes(8);
  const filler = c.u8();
  const capsLow = c.uint(2);
  if (version === undefined || connectionId === undefined || part1 === undefined || filler === undefined || capsLow === undefined) {
    return { invalid: 'greeting truncated before the capability flags' };
  }
  let capabilities = capsLow;
  let charset: number | undefined;
  let statusFlags: number | undefined;
  let mariadbCapabilities = 0;
  let authPluginName: string | undefined;
  let authPluginData = part1;
  if (c.left > 0) {
    charset = c.u8();
    statusFlags = c.uint(2);
    const capsHigh = c.uint(2);
    const dataLength = c.u8();
    const reserved = c.bytes(10);
    if (statusFlags === undefined || capsHigh === undefined || dataLength === undefined || reserved === undefined) {
      return { invalid: 'greeting truncated after the capability flags' };
    }
    capabilities = (capsLow | (capsHigh << 16)) >>> 0;
    if ((capabilities & CLIENT.LONG_PASSWORD) === 0) mariadbCapabilities = reserved.readUInt32LE(6);
    if (capabilities & CLIENT.SECURE_CONNECTION) {
      const part2Length = Math.max(13, dataLength - 8);
      // Some servers end the packet without the scramble's trailing NUL: take what is there.
      const part2 = c.bytes(Math.min(part2Length, c.left)) ?? Buffer.alloc(0);
      const trimmed = part2.length > 0 && part2[part2.length - 1] === 0 ? part2.subarray(0, -1) : part2;
      authPluginData = Buffer.concat([part1, trimmed]);
    }
    if (capabilities & CLIENT.PLUGIN_AUTH) authPluginName = text(c.cstringOrEof());
  }
  return {
    protocolVersion,
    serverVersion: text(version),
    connectionId,
    authPluginData,
    capabilities,
    mariadbCapabilities,
    charset,
    statusFlags,
    authPluginName,
  };
}

/** Reads the server's first packet: an Initial Handshake v10, or an ERR (host blocked, too many connections). */
export class MysqlGreetingParser {
  private readonly frames: PacketAccumulator;
  constructor(maxBytes = MYSQL_MAX_HANDSHAKE_BYTES) {
    this.frames = new PacketAccumulator(maxBytes);
  }
  get bufferedBytes(): number {
    return this.frames.bufferedBytes;
  }
  push(chunk: Buffer): GreetingResult {
    const r = this.frames.push(chunk);
    if (r.kind !== 'packet') return r;
    const parsed = parseGreetingPayload(r.packet.payload);
    if ('invalid' in parsed) return { kind: 'invalid', reason: parsed.invalid };
    if ('code' in parsed) return { kind: 'error', error: parsed, packet: r.packet, rest: r.rest };
    return { kind: 'greeting', greeting: parsed, packet: r.packet, rest: r.rest };
  }
}

// ---------------------------------------------------------------------------------------------
// Client's first packet

export interface HandshakeResponse {
  /** 41 for HandshakeResponse41, 320 for the old HandshakeResponse320 */
  format: 41 | 320;
  capabilities: number;
  /** MariaDB's extended capabilities from the last 4 filler bytes (0 when CLIENT_MYSQL is set) */
  mariadbCapabilities: number;
  maxPacketSize: number;
  charset: number | undefined;
  user: string;
  /** the user name's bytes as sent (the client's character set) */
  userBytes: Buffer;
  authResponse: Buffer;
  database: string | undefined;
  authPluginName: string | undefined;
  /** connection attributes in order (`_client_name`, `program_name`, …) */
  attributes: Array<[string, string]> | undefined;
  /**
   * What could not be read after the user name (auth data, attributes). The user is known
   * anyway: the server authenticates that name whatever follows, so a malformed tail must never
   * turn a readable user into "unparsable" (which the default policy logs and allows).
   */
  problem?: string;
}

export type ClientResult =
  | { kind: 'need-more' }
  | { kind: 'invalid'; reason: string }
  | {
      kind: 'ssl-request';
      capabilities: number;
      /** false when CLIENT_SSL came with more than the 32 (or 5) bytes of an SSLRequest; servers still switch to TLS */
      exact: boolean;
      packet: Packet;
      /** bytes after the packet: usually the start of the TLS ClientHello */
      rest: Buffer;
    }
  | { kind: 'response'; response: HandshakeResponse; packet: Packet; rest: Buffer };

type PayloadVerdict =
  | { kind: 'invalid'; reason: string }
  | { kind: 'ssl-request'; capabilities: number; exact: boolean }
  | { kind: 'response'; response: HandshakeResponse };

/**
 * Parses the payload of the client's first packet. The server switches to TLS whenever the
 * client's flags carry CLIENT_SSL, whatever follows, so that is reported as 'ssl-request'.
 */
export function parseClientPayload(payload: Buffer): PayloadVerdict {
  const c = new Cursor(payload);
  const capsLow = c.uint(2);
  if (capsLow === undefined) return { kind: 'invalid', reason: `client packet of ${payload.length} bytes is too short` };
  if (capsLow & CLIENT.PROTOCOL_41) {
    c.pos = 0;
    const capabilities = c.uint(4);
    const maxPacketSize = c.uint(4);
    const charset = c.u8();
    const filler = c.bytes(23);
    if (capabilities === undefined || maxPacketSize === undefined || charset === undefined || filler === undefined) {
      return { kind: 'invalid', reason: `HandshakeResponse41 of ${payload.length} bytes is shorter than its 32-byte header` };
    }
    if (capabilities & CLIENT.SSL) return { kind: 'ssl-request', capabilities, exact: payload.length === 32 };
    const mariadbCapabilities = capabilities & CLIENT.LONG_PASSWORD ? 0 : filler.readUInt32LE(19);
    const userBytes = c.cstring();
    if (userBytes === undefined) return { kind: 'invalid', reason: 'user name is not NUL-terminated' };
    const tail = parseTail41(c, capabilities);
    return {
      kind: 'response',
      response: {
        format: 41,
        capabilities,
        mariadbCapabilities,
        maxPacketSize,
        charset,
        user: text(userBytes),
        userBytes,
        ...tail,
      },
    };
  }
  // HandshakeResponse320: caps u16, max packet u24, user NUL, auth (NUL if a database follows), database.
  const capabilities = capsLow;
  const maxPacketSize = c.uint(3);
  if (maxPacketSize === undefined) return { kind: 'invalid', reason: `HandshakeResponse320 of ${payload.length} bytes is too short` };
  if (capabilities & CLIENT.SSL) return { kind: 'ssl-request', capabilities, exact: payload.length === 5 };
  const userBytes = c.cstring();
  if (userBytes === undefined) return { kind: 'invalid', reason: 'user name is not NUL-terminated' };
  let authResponse: Buffer;
  let database: string | undefined;
  if (capabilities & CLIENT.CONNECT_WITH_DB) {
    const auth = c.cstring();
    if (auth === undefined) return { kind: 'invalid', reason: 'auth data is not NUL-terminated' };
    authResponse = auth;
    database = c.left > 0 ? text(c.cstringOrEof()) : undefined;
  } else {
    authResponse = c.cstringOrEof();
  }
  return {
    kind: 'response',
    response: {
      format: 320,
      capabilities,
      mariadbCapabilities: 0,
      maxPacketSize,
      charset: undefined,
      user: text(userBytes),
      userBytes,
      authResponse,
      database,
      authPluginName: undefined,
      attributes: undefined,
    },
  };
}

type Tail41 = Pick<HandshakeResponse, 'authResponse' | 'database' | 'authPluginName' | 'attributes' | 'problem'>;

/** The fields after the user name of a HandshakeResponse41; a malformed one is a `problem`. */
function parseTail41(c: Cursor, capabilities: number): Tail41 {
  const cut = (problem: string, authResponse = Buffer.alloc(0)): Tail41 => ({ authResponse, database: undefined, authPluginName: undefined, attributes: undefined, problem });
  let authResponse: Buffer | undefined;
  if (capabilities & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA) {
    const n = c.lenenc();
    if (n === 'bad') return cut('bad length-encoded auth data length');
    authResponse = n === undefined ? undefined : c.bytes(n);
  } else if (capabilities & CLIENT.SECURE_CONNECTION) {
    const n = c.u8();
    authResponse = n === undefined ? undefined : c.bytes(n);
  } else {
    authResponse = c.cstring();
  }
  if (authResponse === undefined) return cut('auth data runs past the end of the packet');
  // Trailing fields may be left out by old clients even when flagged; servers accept that.
  let database: string | undefined;
  if (capabilities & CLIENT.CONNECT_WITH_DB && c.left > 0) database = text(c.cstringOrEof());
  let authPluginName: string | undefined;
  if (capabilities & CLIENT.PLUGIN_AUTH && c.left > 0) authPluginName = text(c.cstringOrEof());
  let attributes: Array<[string, string]> | undefined;
  if (capabilities & CLIENT.CONNECT_ATTRS && c.left > 0) {
    const parsed = parseAttributes(c);
    if (typeof parsed === 'string') return { authResponse, database, authPluginName, attributes: undefined, problem: parsed };
    attributes = parsed;
  }
  return { authResponse, database, authPluginName, attributes };
}

function parseAttributes(c: Cursor): Array<[string, string]> | string {
  const total = c.lenenc();
  if (total === 'bad' || total === undefined) return 'bad connection attributes length';
  const block = c.bytes(total);
  if (block === undefined) return `connection attributes claim ${total} bytes, only ${c.left} left`;
  const a = new Cursor(block);
  const out: Array<[string, string]> = [];
  while (a.left > 0) {
    const kn = a.lenenc();
    const key = typeof kn === 'number' ? a.bytes(kn) : undefined;
    const vn = key === undefined ? undefined : a.lenenc();
    const value = typeof vn === 'number' ? a.bytes(vn) : undefined;
    if (key === undefined || value === undefined) return 'connection attribute runs past its block';
    out.push([text(key), text(value)]);
  }
  return out;
}

/** Reads the client's first packet (response or SSLRequest), incrementally and bounded. */
export class MysqlClientHandshakeParser {
  private readonly frames: PacketAccumulator;
  constructor(maxBytes = MYSQL_MAX_HANDSHAKE_BYTES) {
    this.frames = new PacketAccumulator(maxBytes);
  }
  get bufferedBytes(): number {
    return this.frames.bufferedBytes;
  }
  push(chunk: Buffer): ClientResult {
    const r = this.frames.push(chunk);
    if (r.kind !== 'packet') return r;
    const v = parseClientPayload(r.packet.payload);
    if (v.kind === 'invalid') return v;
    if (v.kind === 'ssl-request') return { ...v, packet: r.packet, rest: r.rest };
    return { kind: 'response', response: v.response, packet: r.packet, rest: r.rest };
  }
}

// ---------------------------------------------------------------------------------------------
// ERR packet

export const ER_ACCESS_DENIED_ERROR = 1045;

export interface ErrOptions {
  /** 2 after the client's handshake response (seq 1); 0 in place of the greeting */
  sequence: number;
  code?: number;
  sqlState?: string;
  message: string;
  /**
   * include `#SQLSTATE` (true by default). Only PROTOCOL_41 clients understand it, and a client
   * reads it only after the greeting: pass false for an ERR sent in place of the greeting.
   */
  protocol41?: boolean;
}

export function buildErrPacket(options: ErrOptions): Buffer {
  const code = options.code ?? ER_ACCESS_DENIED_ERROR;
  const sqlState = options.sqlState ?? '28000';
  if (!/^[0-9A-Z]{5}$/.test(sqlState)) throw new RangeError(`SQLSTATE must be 5 characters, got ${JSON.stringify(sqlState)}`);
  const head = Buffer.alloc(3);
  head[0] = 0xff;
  head.writeUInt16LE(code & 0xffff, 1);
  const state = options.protocol41 === false ? Buffer.alloc(0) : Buffer.from(`#${sqlState}`, 'latin1');
  let message = Buffer.from(options.message, 'utf8');
  if (message.length > 512) message = message.subarray(0, 512);
  return buildPacket(options.sequence, Buffer.concat([head, state, message]));
}
