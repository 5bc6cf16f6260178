// RFC 1413 (IDENT) client: asks the identd on a client's host which user owns the client's end of
// a TCP connection that reached us. The answer is only as trustworthy as the client host's
// administrator; callers decide what it is worth.
// Owns: the query, the bounded reading and the parsing of one reply. Must not: throw for network
// problems (every outcome is an IdentResult), cache answers, or make access decisions.
import net from 'node:net';
import { WarpstoneError, errorCode, errorMessage } from '../common/errors.js';

/** The four error tokens of RFC 1413. */
export type IdentErrorToken = 'NO-USER' | 'HIDDEN-USER' | 'INVALID-PORT' | 'UNKNOWN-ERROR';
const ERROR_TOKENS: readonly IdentErrorToken[] = ['NO-USER', 'HIDDEN-USER', 'INVALID-PORT', 'UNKNOWN-ERROR'];

export type IdentResult =
  /** `USERID : <os>[, <charset>] : <user>`. When `os` is `OTHER` the id is not a login name. */
  | { kind: 'user'; user: string; os: string; charset?: string; reply: string }
  /** `ERROR : <token>` */
  | { kind: 'error'; error: IdentErrorToken; reply: string }
  /** the identd answered something that is not a valid reply to our query (or cut it short) */
  | { kind: 'protocol-error'; detail: string; reply?: string }
  /** no complete reply within the time limit (connect included) */
  | { kind: 'timeout'; detail: string }
  /** no identd there, or the network failed (refused, unreachable, reset) */
  | { kind: 'network-error'; detail: string; code?: string };

export interface IdentQuery {
  /** the client's address (the host to ask) */
  remoteAddress: string;
  /** the client's port: the first number of the query */
  remotePort: number;
  /** our address the client reached; the query is sent from it */
  localAddress: string;
  /** our port the client reached: the second number of the query */
  localPort: number;
  /** the whole exchange, connect included (default 3000 ms) */
  timeoutMs?: number;
  /** the identd's port. For tests only (a real identd is always on 113). */
  identPort?: number;
}

export const IDENT_PORT = 113;
export const IDENT_TIMEOUT_MS = 3000;
/** RFC 1413: a client may give up after 1000 characters without an end of line. */
export const IDENT_MAX_REPLY_BYTES = 1000;

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** "::ffff:1.2.3.4" → "1.2.3.4", so an IPv4 client seen by a dual-stack listener is asked over IPv4. */
export function unmapAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? (m[1] as string) : address;
}

/**
 * Asks the identd of `remoteAddress` who owns its port `remotePort` connected to our
 * `localAddress:localPort`. Resolves with an IdentResult for every outcome; throws only for
 * arguments that are not addresses and ports (a programming error).
 */
export function queryIdent(query: IdentQuery): Promise<IdentResult> {
  const remoteAddress = unmapAddress(query.remoteAddress);
  const localAddress = unmapAddress(query.localAddress);
  const timeoutMs = query.timeoutMs ?? IDENT_TIMEOUT_MS;
  const identPort = query.identPort ?? IDENT_PORT;
  if (!net.isIP(remoteAddress) || !net.isIP(localAddress)) {
    throw new WarpstoneError('WS_IDENT_ARGS', `ident query: '${query.remoteAddress}' and '${query.localAddress}' must be IP addresses`);
  }
  if (!validPort(query.remotePort) || !validPort(query.localPort) || !validPort(identPort)) {
    throw new WarpstoneError('WS_IDENT_ARGS', `ident query: ports must be 1-65535 (got ${query.remotePort}, ${query.localPort}, ident port ${identPort})`);
  }
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new WarpstoneError('WS_IDENT_ARGS', `ident query: timeoutMs must be a positive number (got ${timeoutMs})`);
  }
  if (net.isIP(remoteAddress) !== net.isIP(localAddress)) {
    return Promise.resolve({
      kind: 'network-error',
      detail: `cannot ask ${remoteAddress} from ${localAddress}: the addresses are of different families`,
      code: 'EAFNOSUPPORT',
    });
  }

  return new Promise<IdentResult>((resolve) => {
    const target = `${net.isIPv6(remoteAddress) ? `[${remoteAddress}]` : remoteAddress}:${identPort}`;
    let settled = false;
    let received: Buffer = Buffer.alloc(0);
    const socket = net.connect({ host: remoteAddress, port: identPort, localAddress, noDelay: true });
    const finish = (result: IdentResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => {
      finish({
        kind: 'timeout',
        detail: `no complete reply from the identd at ${target} within ${timeoutMs} ms${received.length > 0 ? ` (got ${received.length} bytes without an end of line)` : ''}`,
      });
    }, timeoutMs);

    socket.once('connect', () => {
      socket.write(`${query.remotePort} , ${query.localPort}\r\n`);
    });
    socket.on('data', (chunk: Buffer) => {
      if (settled) return;
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const eol = received.indexOf(0x0a);
      const lineEnd = eol < 0 ? -1 : eol + 1;
      if (lineEnd < 0 ? received.length > IDENT_MAX_REPLY_BYTES : lineEnd > IDENT_MAX_REPLY_BYTES) {
        finish({ kind: 'protocol-error', detail: `the identd at ${target} sent more than ${IDENT_MAX_REPLY_BYTES} bytes without an end of line` });
        return;
      }
      if (eol < 0) return;
      const line = received.subarray(0, eol > 0 && received[eol - 1] === 0x0d ? eol - 1 : eol);
      finish(parseIdentReply(line, query.remotePort, query.localPort));
    });
    socket.once('end', () => {
      finish(
        received.length === 0
          ? { kind: 'protocol-error', detail: `the identd at ${target} closed the connection without a reply` }
          : {
              kind: 'protocol-error',
              detail: `the identd at ${target} closed the connection in the middle of a reply (no end of line)`,
              reply: printable(received),
            },
      );
    });
    socket.once('error', (err) => {
      const code = errorCode(err);
      finish({ kind: 'network-error', detail: `identd at ${target}: ${errorMessage(err)}`, ...(code ? { code } : {}) });
    });
    socket.once('close', () => {
      finish({ kind: 'protocol-error', detail: `the connection to the identd at ${target} closed without a reply` });
    });
  });
}

/** The reply with control bytes escaped, for logs and error details. */
function printable(bytes: Buffer): string {
  return bytes.toString('latin1').replace(/[\x00-\x1f\x7f-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Parses one reply line (without its CR LF) to the query `remotePort , localPort`:
 *   `<port> , <port> : USERID : <os>[ , <charset>] : <user-id>`
 *   `<port> , <port> : ERROR : <token>`
 * The user id is everything after the third colon (it may itself contain colons), with the
 * surrounding blanks removed. Anything else, including a reply about other ports, is a protocol
 * error.
 */
export function parseIdentReply(line: Buffer, remotePort: number, localPort: number): IdentResult {
  const text = line.toString('latin1');
  const reply = printable(line);
  const bad = (detail: string): IdentResult => ({ kind: 'protocol-error', detail, reply });
  if (line.includes(0x00) || line.includes(0x0a) || line.includes(0x0d)) return bad('the reply contains NUL, CR or LF inside the line');

  const first = text.indexOf(':');
  const second = first < 0 ? -1 : text.indexOf(':', first + 1);
  if (second < 0) return bad('the reply is not "<ports> : <type> : <info>"');
  const ports = /^[ \t]*(\d{1,5})[ \t]*,[ \t]*(\d{1,5})[ \t]*$/.exec(text.slice(0, first));
  if (!ports) return bad('the reply does not start with a port pair');
  if (Number(ports[1]) !== remotePort || Number(ports[2]) !== localPort) {
    return bad(`the reply is about ports ${ports[1]} , ${ports[2]}, not the ones asked (${remotePort} , ${localPort})`);
  }
  const type = text.slice(first + 1, second).trim().toUpperCase();
  const rest = text.slice(second + 1);

  if (type === 'ERROR') {
    const token = rest.trim().toUpperCase();
    const known = ERROR_TOKENS.find((t) => t === token);
    if (!known) return bad(`unknown error token '${rest.trim()}'`);
    return { kind: 'error', error: known, reply };
  }
  if (type === 'USERID') {
    const third = rest.indexOf(':');
    if (third < 0) return bad('a USERID reply needs "<os> : <user>"');
    const opsys = rest.slice(0, third);
    const comma = opsys.indexOf(',');
    const os = (comma < 0 ? opsys : opsys.slice(0, comma)).trim();
    const charset = comma < 0 ? undefined : opsys.slice(comma + 1).trim();
    if (!/^[\x21-\x7e]{1,64}$/.test(os) || os.includes(',')) return bad(`'${os}' is not an operating-system token`);
    if (charset !== undefined && !/^[\x21-\x7e]{1,64}$/.test(charset)) return bad(`'${charset}' is not a character-set token`);
    const rawUser = line.subarray(second + 1 + third + 1);
    const user = (charset !== undefined && /^utf-?8$/i.test(charset) ? rawUser.toString('utf8') : rawUser.toString('latin1')).replace(/^[ \t]+|[ \t]+$/g, '');
    if (user === '') return bad('the USERID reply has an empty user id');
    return charset === undefined ? { kind: 'user', user, os, reply } : { kind: 'user', user, os, charset, reply };
  }
  return bad(`unknown reply type '${text.slice(first + 1, second).trim()}'`);
}
