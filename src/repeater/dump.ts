// stone-compatible packet dumps (`-p`, `-pp`, `-ppp`, xhost `p<N>`): the exact text stone 2.4
// prints for one chunk of relayed bytes, behaviour learnt from stone's packet_dump/message_buf
// and checked against Debian's binary (test/repeater/differential.test.ts).
// Owns: dump headers (`3 5>6`, `3 5<6`, `3 UDP<7:`), dump line bodies, and the rule for how a
// byte stream is cut into dumped chunks. Must not: touch sockets, clocks or files, or build the
// timestamp/thread-id prefix (that is logline.ts, whose logLine() also applies stone's
// 1023-byte line limit).
//
// Lines are "byte strings": every character is one byte (code point < 256). Dump output is pure
// ASCII, so this only matters when a caller mixes dump lines with other text.

/** stone's LONGSTRMAX: a logged line (prefix included) is at most LONGSTRMAX - 1 bytes. */
export const LONGSTRMAX = 1024;

/** stone's default transfer buffer (`-X`): one read, hence one dump chunk, is at most this long. */
export const DEFAULT_XFER_BUF = 1000;

/**
 * The dump mode is stone's `xhost->mode & 0xF`: the number of `-p` flags (or the N of an xhost's
 * `p<N>`). 1 = text with `'c`/hex fallback, 2 = text with plain hex fallback, 3 and more = 8 hex
 * bytes plus an ASCII column. 0 is what stone uses for the first written chunk at `-dddd` without
 * `-p`; it prints like 2.
 */
export type DumpMode = number;

export interface TcpDumpHead {
  /** descriptor of the listening socket (stone's `stone->sd`) */
  listenFd: number;
  /** descriptor of the accepted connection (the client side) */
  sourceFd: number;
  /** descriptor of the connection stone opened to the destination */
  destFd: number;
  /** which way the dumped bytes went: `>` client to destination, `<` destination to client */
  direction: '>' | '<';
  /**
   * stone's tag between listener and pair: '' for a TCP relay (the default), 'tu' for the
   * TCP-to-UDP leg of a tcp↔udp pair, 'rm' for the header stone strips at -dddd.
   */
  tag?: '' | 'tu' | 'rm';
}

/**
 * The header stone prints before every dump line of a TCP pair: `<listen> <src>><dst>` for bytes
 * written to the destination and `<listen> <src><<dst>` for bytes written back to the client.
 * The client-side descriptor always comes first, whichever way the bytes go.
 */
export function tcpDumpHead(h: TcpDumpHead): string {
  return `${h.listenFd} ${h.tag ?? ''}${h.sourceFd}${h.direction}${h.destFd}`;
}

/**
 * The header of a UDP datagram dump: `<listen> UDP<dir><fd>:`. `<` is a datagram sent back to the
 * original sender, `>` one sent on to the destination; fd is the socket it was sent from.
 */
export function udpDumpHead(listenFd: number, direction: '>' | '<', fd: number): string {
  return `${listenFd} UDP${direction}${fd}:`;
}

export interface DumpOptions {
  /**
   * stone's C `char` is signed on amd64 (Debian's build), so a byte >= 0x80 shown in a text line
   * comes out as `<ffffffe9>`, not `<e9>`. Set false to mimic an unsigned-char build (arm64).
   * Default true.
   */
  signedChar?: boolean;
  /**
   * Length of the timestamp/thread prefix the lines will be printed with. When given, every line
   * is cut as stone's message() cuts it (prefix + line <= 1023 bytes). logLine() in logline.ts
   * applies the same cut, so leave this out when lines go through logLine().
   */
  prefixLength?: number;
}

const isPrint = (b: number): boolean => b >= 0x20 && b <= 0x7e;
const hex2 = (b: number): string => b.toString(16).padStart(2, '0');

/**
 * The bodies of the dump lines for one chunk, each starting with a space, without the header.
 * Follows stone exactly:
 * - modes <= 2 first try a text line: printable bytes as themselves, others as `<xx>`, and a
 *   line ends after `\n` (shown as `<0a>`) or once it is 1014 characters long. A running count k
 *   of "binary" bytes (not \t, \r, ESC; reset by \n) must stay <= (bytes so far)/10; when it
 *   does not, the text attempt is dropped and those bytes are shown as 16 hex bytes (mode 1:
 *   printable bytes as `'c`). k carries over to the next line of the same chunk, so once a
 *   chunk has turned to hex it stays hex until a hex line ends with `\n`, and a long text line
 *   holding a few control bytes turns the rest of its chunk to hex.
 * - modes >= 3: 8 bytes a line as ` xx`, padded to 26 characters, then the 8 bytes as ASCII
 *   with `.` for anything not printable.
 * - every chunk starts afresh (k = 0): a line never spans two chunks, so the same bytes read in
 *   two pieces print differently from one piece.
 * - an empty chunk prints nothing.
 */
export function dumpBodies(data: Uint8Array, mode: DumpMode, options: DumpOptions = {}): string[] {
  const signedChar = options.signedChar ?? true;
  const escape = (b: number): string => (signedChar && b >= 0x80 ? `<ffffff${hex2(b)}>` : `<${hex2(b)}>`);
  const m = mode & 0xf;
  const out: string[] = [];
  const len = data.length;
  let k = 0;
  let j = 0;
  let nb = 8;
  for (let i = 0; i < len; i += j) {
    let line = '';
    if (m <= 2) {
      nb = 16;
      line = ' ';
      for (j = 0; k <= Math.floor(j / 10) && i + j < len && line.length < LONGSTRMAX - 10; j++) {
        const c = data[i + j] as number;
        if (isPrint(c)) {
          line += String.fromCharCode(c);
        } else {
          line += escape(c);
          if (c === 0x0a) {
            k = 0;
            j++;
            break;
          }
          if (c !== 0x09 && c !== 0x0d && c !== 0x1b) k++;
        }
      }
    }
    if (k > Math.floor(j / 10) || nb < 16) {
      line = '';
      for (j = 0; j < nb && i + j < len; j++) {
        const c = data[i + j] as number;
        if (m === 1 && isPrint(c)) {
          line += ` '${String.fromCharCode(c)}`;
        } else {
          line += ` ${hex2(c)}`;
          k = c === 0x0a ? 0 : k + 1;
        }
      }
      if (nb < 16) {
        line = line.padEnd(nb * 3 + 2, ' ');
        for (let a = 0; a < nb && i + a < len; a++) {
          const c = data[i + a] as number;
          line += isPrint(c) ? String.fromCharCode(c) : '.';
        }
      }
    }
    out.push(line);
  }
  return out;
}

/**
 * The complete dump lines (header + body) stone prints for one chunk: what follows the
 * timestamp/thread prefix. See dumpBodies for the rules.
 */
export function dumpLines(head: string, data: Uint8Array, mode: DumpMode, options: DumpOptions = {}): string[] {
  const lines = dumpBodies(data, mode, options).map((body) => head + body);
  if (options.prefixLength === undefined) return lines;
  const room = Math.max(0, LONGSTRMAX - 1 - options.prefixLength);
  return lines.map((line) => (line.length > room ? line.slice(0, room) : line));
}

/**
 * How stone cuts a byte stream into dumped chunks. stone dumps after each successful send(2) the
 * bytes that send wrote, and it reads one recv(2) of at most `-X` bytes (default 1000) into its
 * own buffer before writing it, never merging two reads. So bytes that were in the socket
 * together are dumped in pieces of `xferBuf` bytes (a 2500-byte burst with the default buffer is
 * dumped as 1000 + 1000 + 500); bytes that arrived apart are dumped apart. An engine that reads
 * bigger pieces (Node's 64 KiB) passes each piece through this to dump as stone would.
 * (A partial send is dumped as the part written, the rest on the next write; Node hides partial
 * writes, so an engine cannot and need not reproduce that.)
 */
export function stoneChunks(data: Uint8Array, xferBuf: number = DEFAULT_XFER_BUF): Uint8Array[] {
  if (!Number.isInteger(xferBuf) || xferBuf <= 0) throw new RangeError(`xferBuf must be a positive integer, got ${xferBuf}`);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += xferBuf) chunks.push(data.subarray(at, Math.min(data.length, at + xferBuf)));
  return chunks;
}

/** dumpLines for every stone-sized chunk of `data`, in order. */
export function dumpStream(head: string, data: Uint8Array, mode: DumpMode, xferBuf: number = DEFAULT_XFER_BUF, options: DumpOptions = {}): string[] {
  return stoneChunks(data, xferBuf).flatMap((chunk) => dumpLines(head, chunk, mode, options));
}
