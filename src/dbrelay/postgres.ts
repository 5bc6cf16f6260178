// PostgreSQL's first client message, as the database relay needs it: the untyped message
// (Int32 length including itself, Int32 code) that is a StartupMessage (protocol 3.x,
// `key\0value\0` pairs, final `\0`), an SSLRequest, a GSSENCRequest or a CancelRequest; and the
// server answers the relay sends itself: ErrorResponse and the single-byte 'N' / 'S'.
// Pure and incremental: feed bytes, get 'need-more', 'invalid' (with the reason) or a result with
// the raw message and any bytes that followed it. Bounded like the server (10000 bytes): a length
// beyond that is refused as soon as the length field is read. Never throws on input bytes.
// Reads parameters the way the server does (ProcessStartupPacket): a repeated key's last value
// wins, and the terminating NUL must be the message's last byte.
// Owns: the PostgreSQL startup grammar. Must not: touch sockets, decide policy, log.

/** The server's MAX_STARTUP_PACKET_LENGTH. */
export const PG_MAX_STARTUP_BYTES = 10000;

export const PG_CODE = {
  PROTOCOL_3_0: 196608,
  CANCEL: 80877102,
  SSL: 80877103,
  GSSENC: 80877104,
} as const;

export interface StartupMessage {
  majorVersion: number;
  minorVersion: number;
  /** every parameter in order, repeats included */
  pairs: Array<[string, string]>;
  /** parameters as the server reads them: the last value of a repeated key wins */
  parameters: Map<string, string>;
  user: string | undefined;
  /** the `user` value's raw bytes (the last one, as the server reads it); `user` is their utf8 decoding, U+FFFD for invalid bytes */
  userBytes: Buffer | undefined;
  /** `database`, or the user name when absent or empty, as the server defaults it */
  database: string | undefined;
}

export type StartupResult =
  | { kind: 'need-more' }
  | { kind: 'invalid'; reason: string }
  | { kind: 'ssl-request'; raw: Buffer; rest: Buffer }
  | { kind: 'gssenc-request'; raw: Buffer; rest: Buffer }
  | { kind: 'cancel'; pid: number; key: Buffer; raw: Buffer; rest: Buffer }
  | { kind: 'startup'; startup: StartupMessage; raw: Buffer; rest: Buffer };

/** Parses the message at the start of `buf`; `rest` is whatever followed it. */
export function parseStartup(buf: Buffer, maxBytes = PG_MAX_STARTUP_BYTES): StartupResult {
  if (buf.length < 4) return { kind: 'need-more' };
  const length = buf.readInt32BE(0);
  if (length < 8 || length > maxBytes) {
    return { kind: 'invalid', reason: `invalid length of startup packet: ${length} (8 to ${maxBytes} bytes)` };
  }
  if (buf.length < length) {
    // The code arrives before the body: refuse unknown codes without waiting for the rest.
    if (buf.length >= 8) {
      const early = checkCode(buf.readInt32BE(4), length);
      if (early) return early;
    }
    return { kind: 'need-more' };
  }
  const raw = buf.subarray(0, length);
  const rest = buf.subarray(length);
  const code = raw.readInt32BE(4);
  const bad = checkCode(code, length);
  if (bad) return bad;
  if (code === PG_CODE.SSL) return { kind: 'ssl-request', raw, rest };
  if (code === PG_CODE.GSSENC) return { kind: 'gssenc-request', raw, rest };
  if (code === PG_CODE.CANCEL) return { kind: 'cancel', pid: raw.readInt32BE(8), key: raw.subarray(12), raw, rest };
  const startup = parseStartupBody(code, raw.subarray(8));
  if (typeof startup === 'string') return { kind: 'invalid', reason: startup };
  return { kind: 'startup', startup, raw, rest };
}

function checkCode(code: number, length: number): { kind: 'invalid'; reason: string } | undefined {
  if (code === PG_CODE.SSL || code === PG_CODE.GSSENC) {
    if (length !== 8) return { kind: 'invalid', reason: `${code === PG_CODE.SSL ? 'SSLRequest' : 'GSSENCRequest'} of ${length} bytes, expected 8` };
    return undefined;
  }
  if (code === PG_CODE.CANCEL) {
    // 16 bytes up to protocol 3.1; 3.2 allows secret keys of up to 256 bytes.
    if (length < 16 || length > 12 + 256) return { kind: 'invalid', reason: `CancelRequest of ${length} bytes` };
    return undefined;
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) {
    const what = major === 1234 ? `unknown request code ${code}` : `unsupported frontend protocol ${major}.${minor}`;
    return { kind: 'invalid', reason: `${what}: only 3.x startup, SSLRequest, GSSENCRequest and CancelRequest are accepted` };
  }
  return undefined;
}

function parseStartupBody(code: number, body: Buffer): StartupMessage | string {
  const pairs: Array<[string, string]> = [];
  const parameters = new Map<string, string>();
  let userBytes: Buffer | undefined;
  let offset = 0;
  for (;;) {
    if (offset >= body.length) return 'invalid startup packet layout: expected terminator as last byte';
    if (body[offset] === 0) break;
    const keyEnd = body.indexOf(0, offset);
    if (keyEnd < 0) return 'invalid startup packet layout: parameter name is not NUL-terminated';
    const valueEnd = body.indexOf(0, keyEnd + 1);
    if (valueEnd < 0) return 'invalid startup packet layout: parameter value is missing or not NUL-terminated';
    const key = body.subarray(offset, keyEnd).toString('utf8');
    const value = body.subarray(keyEnd + 1, valueEnd).toString('utf8');
    if (key === 'user') userBytes = Buffer.from(body.subarray(keyEnd + 1, valueEnd));
    pairs.push([key, value]);
    parameters.set(key, value);
    offset = valueEnd + 1;
  }
  if (offset !== body.length - 1) return 'invalid startup packet layout: expected terminator as last byte';
  const user = parameters.get('user');
  const database = parameters.get('database');
  return {
    majorVersion: code >>> 16,
    minorVersion: code & 0xffff,
    pairs,
    parameters,
    user,
    userBytes,
    database: database === undefined || database === '' ? user : database,
  };
}

/** Accumulates chunks until the first message is whole; never keeps more than the cap waiting. */
export class PgStartupParser {
  private buffered: Buffer = Buffer.alloc(0);
  private finished: { kind: 'invalid'; reason: string } | undefined;

  constructor(private readonly maxBytes = PG_MAX_STARTUP_BYTES) {}

  get bufferedBytes(): number {
    return this.buffered.length;
  }

  push(chunk: Buffer): StartupResult {
    if (this.finished) return this.finished;
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const r = parseStartup(this.buffered, this.maxBytes);
    if (r.kind === 'need-more') return r;
    this.buffered = Buffer.alloc(0);
    this.finished = r.kind === 'invalid' ? r : { kind: 'invalid', reason: 'the startup message was already read' };
    return r;
  }
}

// ---------------------------------------------------------------------------------------------
// Builders

/** Answer to SSLRequest / GSSENCRequest: not supported, continue in plain text. */
export const PG_REFUSE_ENCRYPTION = Buffer.from('N', 'latin1');
/** Answer to SSLRequest: go ahead with the TLS handshake. */
export const PG_ACCEPT_SSL = Buffer.from('S', 'latin1');

export interface ErrorResponseOptions {
  severity?: 'FATAL' | 'ERROR' | 'PANIC';
  /** SQLSTATE; 28000 invalid_authorization_specification by default */
  code?: string;
}

/** ErrorResponse: 'E', Int32 length, fields S, V, C, M each NUL-terminated, final NUL. */
export function buildErrorResponse(message: string, options: ErrorResponseOptions = {}): Buffer {
  const severity = options.severity ?? 'FATAL';
  const code = options.code ?? '28000';
  if (!/^[0-9A-Z]{5}$/.test(code)) throw new RangeError(`SQLSTATE must be 5 characters, got ${JSON.stringify(code)}`);
  const field = (type: string, value: string): Buffer => Buffer.from(`${type}${value.replace(/\0/g, ' ')}\0`, 'utf8');
  const body = Buffer.concat([field('S', severity), field('V', severity), field('C', code), field('M', message), Buffer.from([0])]);
  const head = Buffer.alloc(5);
  head[0] = 0x45; // 'E'
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** A StartupMessage for protocol 3.0 with the given parameters (for the relay's own connections and tests). */
export function buildStartupMessage(parameters: Record<string, string> | Array<[string, string]>): Buffer {
  const entries = Array.isArray(parameters) ? parameters : Object.entries(parameters);
  const body = Buffer.concat([...entries.map(([k, v]) => Buffer.from(`${k}\0${v}\0`, 'utf8')), Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(body.length + 8, 0);
  head.writeInt32BE(PG_CODE.PROTOCOL_3_0, 4);
  return Buffer.concat([head, body]);
}

/** The 8-byte SSLRequest or GSSENCRequest. */
export function buildEncryptionRequest(kind: 'ssl' | 'gssenc'): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(kind === 'ssl' ? PG_CODE.SSL : PG_CODE.GSSENC, 4);
  return b;
}
