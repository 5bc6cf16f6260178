// The first request of a `proxy` stone's client, parsed as stone 2.4 does it (docomm with
// proxyComm: CONNECT, POST, GET, HEAD matched case-insensitively as the first word):
// - `CONNECT host[:port] ...`: port 443 unless given (after the last `:`); the request header,
//   up to its empty line, is dropped and the client gets `HTTP/1.0 200 OK\r\n\r\n`.
// - `GET|HEAD|POST http[s]://host[:port][/path] ...`: port 80 (443 for https, which stone
//   reaches with SSL and the -q options); the request line loses `scheme://host[:port]` (`/` when
//   no path is left) and everything else is sent on unchanged.
// - anything else: stone's `Unknown method: LINE` or `Unknown URL format: URL`.
// Bounded: a first line longer than MAX_REQUEST_LINE is refused, and so is a CONNECT header
// longer than MAX_CONNECT_HEADER (stone's buffer is smaller still).
// Owns: this parsing (pure). Must not: resolve, connect or log.

export const MAX_REQUEST_LINE = 8192;
export const MAX_CONNECT_HEADER = 65536;

export type ProxyRequest =
  | { readonly kind: 'more' }
  | {
      readonly kind: 'connect';
      readonly host: string;
      readonly port: string;
      /** what stone notes for its time log: `CONNECT <rest of line>` */
      readonly note: string;
      /** header bytes still to drop: parse them with ConnectHeaderEnd */
      readonly afterLine: Buffer;
    }
  | {
      readonly kind: 'forward';
      readonly host: string;
      readonly port: string;
      readonly https: boolean;
      readonly note: string;
      /** the rewritten request (line and all bytes read after it) */
      readonly bytes: Buffer;
    }
  /** `message`: stone's log line; `note`: the time-log note stone keeps (Unknown URL format) */
  | { readonly kind: 'error'; readonly message: string; readonly note?: string };

const METHODS = ['CONNECT', 'POST', 'GET', 'HEAD'] as const;
const SPACE = /[ \t\n\v\f\r]/;

/** stone's comm_match: the word (any case), then the end or white space (one space skipped). */
function commMatch(line: string, word: string): string | undefined {
  if (line.slice(0, word.length).toUpperCase() !== word) return undefined;
  const rest = line.slice(word.length);
  if (rest === '') return rest;
  if (!SPACE.test(rest[0] as string)) return undefined;
  return rest[0] === ' ' ? rest.slice(1) : rest;
}

/** Parses what a proxy client sent so far (latin1 bytes). */
export function parseProxyRequest(buffer: Buffer): ProxyRequest {
  let end = -1;
  for (let i = 0; i < buffer.length; i++) {
    const c = buffer[i];
    if (c === 0x0d || c === 0x0a) {
      end = i;
      break;
    }
  }
  if (end < 0) {
    if (buffer.length > MAX_REQUEST_LINE) return { kind: 'error', message: `proxy request line longer than ${MAX_REQUEST_LINE} bytes` };
    return { kind: 'more' };
  }
  const line = buffer.subarray(0, end).toString('latin1');
  let next = end;
  while (next < buffer.length && (buffer[next] === 0x0d || buffer[next] === 0x0a)) next++;
  let method: (typeof METHODS)[number] | undefined;
  let parm = '';
  for (const m of METHODS) {
    const rest = commMatch(line, m);
    if (rest !== undefined) {
      method = m;
      parm = rest;
      break;
    }
  }
  if (method === undefined) return { kind: 'error', message: `Unknown method: ${line}` };
  const note = `${method} ${parm}`;
  if (method === 'CONNECT') {
    const target = parm.split(SPACE)[0] ?? '';
    const colon = target.lastIndexOf(':');
    // stone starts dropping the header at the line it read (so the first line end counts)
    return {
      kind: 'connect',
      host: colon < 0 ? target : target.slice(0, colon),
      port: colon < 0 ? '443' : target.slice(colon + 1),
      note,
      afterLine: buffer.subarray(end),
    };
  }
  // scheme: up to a ':' within the first 10 characters, compared as stone's strncmp does
  let i = 0;
  while (i < 10 && i < parm.length && parm[i] !== ':') i++;
  const scheme = parm.slice(0, i);
  let port: string | undefined;
  let https = false;
  if ('http'.startsWith(scheme) && parm[i] === ':') port = '80';
  else if ('https'.startsWith(scheme) && parm[i] === ':') {
    port = '443';
    https = true;
  }
  if (port === undefined || parm[i + 1] !== '/' || parm[i + 2] !== '/') return { kind: 'error', message: `Unknown URL format: ${parm}`, note };
  let p = i + 3;
  let hostEnd = -1;
  let portStart = -1;
  while (p < parm.length) {
    const c = parm[p] as string;
    if (c === ':') {
      if (hostEnd < 0) hostEnd = p;
      portStart = p + 1;
    } else if (SPACE.test(c) || c === '/') break;
    p++;
  }
  const host = parm.slice(i + 3, hostEnd < 0 ? p : hostEnd);
  if (portStart >= 0) port = parm.slice(portStart, p);
  // the request line loses `scheme://host[:port]`; `/` stands in for a missing path
  const urlStart = line.length - parm.length;
  let rest = line.slice(urlStart + p);
  if (!rest.startsWith('/')) rest = `/${rest}`;
  const rewritten = Buffer.concat([Buffer.from(line.slice(0, urlStart) + rest, 'latin1'), buffer.subarray(end)]);
  return { kind: 'forward', host, port, https, note, bytes: rewritten };
}

/**
 * stone's rmheader: finds the end of a header (a line break after a line break, `\r` ignored).
 * Feed it chunks; it answers how many bytes of the chunk belong to the header, or -1 for all.
 */
export class HeaderEnd {
  private state: number;
  private seen = 0;

  /** `afterFirstLine`: the scan starts at the end of the request line (its break counts) */
  constructor(afterFirstLine = true) {
    this.state = afterFirstLine ? 1 : 0;
  }

  /** bytes of `chunk` that end the header, or -1 when the header goes on */
  feed(chunk: Buffer): number {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i];
      if (c === 0x0d) continue;
      if (c === 0x0a) {
        this.state++;
        if (this.state >= 3) return i + 1;
      } else this.state = 1;
    }
    this.seen += chunk.length;
    return -1;
  }

  get bytesSeen(): number {
    return this.seen;
  }
}
