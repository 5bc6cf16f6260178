// stone-compatible log lines: the timestamp/thread-id prefix, the messages stone 2.4 logs for a
// TCP relay (start-up, accept, connect, EOF, close with byte counts, errors), the `-a`
// accounting line, and normalise() for comparing lines across runs. Behaviour learnt from
// stone's message/strntime/message_pair/acceptCheck/connected/setclose and checked against
// Debian's binary (test/repeater/differential.test.ts).
// Owns: the text of stone-format log lines. Must not: touch sockets or files, read the clock
// except in timevalNow(), or decide when to log beyond the documented stoneLogs() table
// (the engine calls these functions; see the event list below).
//
// Lines are "byte strings" (one character per byte, latin1), because stone copies bytes from the
// network (a CONNECT target, a hostname) into some messages: write them with
// Buffer.from(line + '\n', 'latin1').
//
// What stone logs for one plain TCP pair, and when (fds: listener 3, client 5, destination 6):
//   always          startup:  `start (2.4) [PID]`, `stone 3: DST <- SRC`; on SIGTERM/SIGINT
//                   `SIGTERM/INT. exiting`; per pair only failures: `3 TCP 6: connect getsockopt
//                   err=111` (destination refused), `stone 3: access denied: from ADDR`.
//   -d              adds `Debug level: N` after `start`; nothing more for a TCP pair.
//   -dd or any -p   `stone 3: accepted TCP 5 from 127.0.0.1:54206 mode=M` when a client is
//                   accepted (after the xhost check); -dd also logs `SSL thread nlocks=1` after
//                   the listener lines.
//   -ddd            `3 TCP 5: connecting to TCP 6 DST` before connect(2), `3 TCP 5: established
//                   to 6 00034f00 00031000` when it completes; teardown when both sides end: the
//                   side that reads EOF first logs `3 TCP A: EOF` (stone then shuts down the other
//                   side's writing); the other side B then reports hang-up and EOF, and both are
//                   closed, B first: `TCP B: epoll 4 events=11 type=1`, `3 TCP B: EOF`,
//                   `3 TCP B: close tx:T rx:R lp:L`, `3 TCP A: close tx:T rx:R lp:L` (tx = bytes
//                   written to that socket, rx = bytes read from it). An idle `-T` expiry logs
//                   `3 TCP 5: idle time exceeds`, a pairMessage() line, then close 5 and close 6.
//   -p..            dump lines (dump.ts) after every write, prefixed like any other line.
//   -a FILE         accountingLine() per accepted client (no prefix, no thread id).
//   proxy/http      a timeLog line (`11:38:54 0 CONNECT host:port HTTP/1.0`: the request noted
//                   when it came, logged at any level at the pair's EOF or close, or for a proxied
//                   GET/HEAD/POST once the first reply is written); never for 127.0.0.1.
import { LONGSTRMAX } from './dump.js';

export { LONGSTRMAX };

// ---------------------------------------------------------------------------------------------
// time and prefix

/** A point in time as stone has it: seconds since the epoch and microseconds. */
export interface Timeval {
  sec: number;
  usec: number;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad2 = (n: number): string => String(n).padStart(2, '0');

/** The current time with microseconds (the one function here that reads the clock). */
export function timevalNow(): Timeval {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { sec: Math.floor(us / 1e6), usec: us % 1e6 };
}

function toTimeval(t: Timeval | Date | number): Timeval {
  if (t instanceof Date) {
    const ms = t.getTime();
    return { sec: Math.floor(ms / 1000), usec: (ms - Math.floor(ms / 1000) * 1000) * 1000 };
  }
  if (typeof t === 'number') return { sec: Math.floor(t), usec: 0 };
  return t;
}

/**
 * stone's strntime: local time as `Nov 23 11:10:14.275606 ` (with microseconds) or
 * `Nov 23 11:10:14 ` (without), day padded with a space (`Nov  3`), and, like stone's, WITH the
 * trailing space, because stone's formats glue the next field straight onto it. Local time
 * follows the process's TZ, as localtime_r does. A number is seconds since the epoch.
 */
export function stoneTime(t: Timeval | Date | number, micro = true): string {
  const tv = toTimeval(t);
  const d = new Date(tv.sec * 1000);
  const day = String(d.getDate()).padStart(2, ' ');
  const hms = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const frac = micro ? `.${String(Math.floor(tv.usec)).padStart(6, '0')}` : '';
  return `${MONTHS[d.getMonth()]} ${day} ${hms}${frac} `;
}

/**
 * stone prints pthread_self() as its thread id, e.g. 140552879386688 (15 digits on amd64). Node has
 * no such number; this gives a stable one of the same shape for a process id. Its length matters
 * only for the 1023-byte cut of very long lines.
 */
export function syntheticThreadId(pid: number = process.pid): bigint {
  return 0x7f0000000000n + BigInt(pid & 0xfffff) * 0x1000n + 0x640n;
}

/**
 * The prefix of every stderr/-L line: `Nov 23 11:10:14.275606 140552879386688 `. A thread id of 0
 * is left out, as stone leaves it out when it has none.
 */
export function linePrefix(t: Timeval | Date, threadId: number | bigint | string): string {
  const tid = String(threadId);
  return stoneTime(t, true) + (tid === '0' ? '' : `${tid} `);
}

/**
 * A whole log line (without the newline) as stone's message() builds it: prefix + message, cut to
 * LONGSTRMAX - 1 = 1023 bytes. The cut is real: a 1013-byte text dump line printed after a 39-byte
 * prefix loses its last 34 bytes.
 */
export function logLine(prefix: string, message: string): string {
  const line = prefix + message;
  return line.length > LONGSTRMAX - 1 ? line.slice(0, LONGSTRMAX - 1) : line;
}

// ---------------------------------------------------------------------------------------------
// addresses

/** stone's `/ext` suffixes in the order it prints them. */
export type StoneExt = 'udp' | 'http' | 'ssl' | 'v6' | 'v6only' | 'v4only' | 'base' | 'block' | 'ident' | 'nobackup' | 'proxy' | 'mproxy' | 'apop';
const EXT_ORDER: StoneExt[] = ['udp', 'http', 'ssl', 'v6', 'v6only', 'v4only', 'base', 'block', 'ident', 'nobackup', 'proxy', 'mproxy', 'apop'];

/** `/udp,ssl` etc. as stone's ext2str appends it to an address; '' for none. */
export function extSuffix(exts: Iterable<StoneExt>): string {
  const set = new Set(exts);
  const list = EXT_ORDER.filter((e) => set.has(e));
  return list.length === 0 ? '' : `/${list.join(',')}`;
}

export interface StoneAddrPortOptions {
  /** `-n`: numbers only, no host or service names */
  numeric?: boolean;
  /**
   * the reverse-DNS name of the host, if the engine looked it up and found one (stone calls
   * getnameinfo without NI_NAMEREQD: no name means the number). Ignored with `numeric`, and for
   * 127.0.0.1, ::1, 0.0.0.0 and ::, which stone always prints as numbers.
   */
  hostName?: string;
  /**
   * the service name for the port (from /etc/services, see parseServices), printed instead of
   * the number unless `numeric`: stone prints 127.0.0.1:8080 as `127.0.0.1:http-alt`.
   */
  serviceName?: string;
  exts?: Iterable<StoneExt>;
}

function isLocalOrNull(host: string): boolean {
  const h = host.replace(/^::ffff:/i, '');
  return h === '127.0.0.1' || h === '0.0.0.0' || h === '::1' || h === '::' || /^(0+:){7}0*1$/.test(h);
}

/**
 * An address as stone's addrport2str prints it: `host:port`, IPv6 without brackets (`::1:8080`),
 * followed by any `/ext` suffix. `host` is the numeric address.
 */
export function stoneAddrPort(host: string, port: number, options: StoneAddrPortOptions = {}): string {
  const name = !options.numeric && options.hostName && !isLocalOrNull(host) ? options.hostName : host;
  const serv = !options.numeric && options.serviceName ? options.serviceName : String(port);
  return `${name}:${serv}${extSuffix(options.exts ?? [])}`;
}

/**
 * /etc/services text to a lookup `port/proto -> name`, keeping the first name for a port as
 * getservbyport does. Pure: the caller reads the file.
 */
export function parseServices(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const [name, portProto] = line.split(/\s+/);
    if (!name || !portProto || !/^\d+\/\w+$/.test(portProto)) continue;
    if (!map.has(portProto)) map.set(portProto, name);
  }
  return map;
}

// ---------------------------------------------------------------------------------------------
// proto flags (for the `established` and pair lines, which print stone's internal state)

/** stone 2.4's pair state bits, as printed in hex by `established` and pairLine(). */
export const PROTO = {
  commandSource: 0x0f00,
  dirty: 0x1000,
  noconnect: 0x2000,
  connect: 0x4000,
  dgram: 0x8000,
  firstRead: 0x10000,
  firstWrite: 0x20000,
  selectRead: 0x40000,
  selectWrite: 0x80000,
  shutdown: 0x100000,
  close: 0x200000,
  eof: 0x400000,
  error: 0x800000,
} as const;

/**
 * The two values a plain TCP pair (no /ssl, /http, /base, proxy) shows in its `established` line:
 * the client side is connected with first read and write pending (0x00034f00; its dirty bit was
 * already cleared by the event loop); the destination side has first read and write pending and
 * is still dirty (0x00031000).
 */
export const PLAIN_TCP_ESTABLISHED = {
  source: PROTO.commandSource | PROTO.connect | PROTO.firstRead | PROTO.firstWrite,
  dest: PROTO.dirty | PROTO.firstRead | PROTO.firstWrite,
} as const;

const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');
const pad3 = (n: number): string => String(n).padStart(3, ' ');

// ---------------------------------------------------------------------------------------------
// events and their messages (what follows the prefix)

export type StoneEvent =
  /** at start: `start (2.4) [PID]` */
  | { kind: 'start'; pid: number; version?: string }
  /** right after start when -d was given: `Debug level: N` */
  | { kind: 'debugLevel'; level: number }
  /**
   * after each listener is open: `stone 3: 127.0.0.1:17001 <- 0.0.0.0:17002`. dst/src are
   * stoneAddrPort() strings; `dst` for a destination not resolved yet is `(host:port)`.
   */
  | { kind: 'listen'; listenFd: number; dst: string; src: string; command?: 'proxy' | 'health' | 'identd' }
  /** at -dd, once the listeners are set up: `SSL thread nlocks=1` */
  | { kind: 'sslThreadLocks'; locks?: number }
  /** on SIGTERM or SIGINT: `SIGTERM/INT. exiting` */
  | { kind: 'exiting' }
  /** a client passed the xhost check (-dd or dump mode > 0): `stone 3: accepted TCP 5 from ADDR mode=1` */
  | { kind: 'accepted'; listenFd: number; fd: number; from: string; mode: number; ident?: string }
  /** a client failed the xhost check (always): `stone 3: access denied: from ADDR` */
  | { kind: 'accessDenied'; listenFd: number; from: string; ident?: string }
  /** -ddd, before connect(2): `3 TCP 5: connecting to TCP 6 127.0.0.1:17001` */
  | { kind: 'connecting'; listenFd: number; sourceFd: number; destFd: number; to: string }
  /** -ddd, connect completed: `3 TCP 5: established to 6 00034f00 00031000` */
  | { kind: 'established'; listenFd: number; sourceFd: number; destFd: number; sourceProto?: number; destProto?: number }
  /** the asynchronous connect failed (always): `3 TCP 6: connect getsockopt err=111` */
  | { kind: 'connectFailed'; listenFd: number; destFd: number; errno: number }
  /** connect(2) itself failed, e.g. unreachable (always): `3 TCP 6: can't connect err=101: to ADDR` */
  | { kind: 'cantConnect'; listenFd: number; destFd: number; errno: number; to: string }
  /** -ddd, a side read EOF: `3 TCP 5: EOF` */
  | { kind: 'eof'; listenFd: number; fd: number }
  /** -ddd, a socket reported hang-up/error: `TCP 6: epoll 4 events=11 type=1` */
  | { kind: 'epoll'; fd: number; epollFd: number; events: number; type?: number }
  /** -ddd, a side is being closed (once per side): `3 TCP 5: close tx:13 rx:13 lp:3` */
  | { kind: 'close'; listenFd: number; fd: number; tx: number; rx: number; loops: number }
  /** -ddd, -T idle timeout reached (followed by a 'pair' line): `3 TCP 5: idle time exceeds` */
  | { kind: 'idle'; listenFd: number; fd: number }
  /** read(2)/write(2) failed (always; followed by a 'pair' line): `3 TCP 5: read error err=104, closing` */
  | { kind: 'ioError'; listenFd: number; fd: number; op: 'read' | 'write'; errno: number }
  /** stone's message_pair: `3 TCP  5:  6 00405f00 0 Nov 23 11:30:12 127.0.0.1:17002 127.0.0.1:54206 tx:3 rx:3 lp:3` */
  | PairEvent
  /** a proxy/http request noted earlier and logged at EOF or close: `11:10:14 3 CONNECT web:80` */
  | { kind: 'timeLog'; clock: number; now: number; text: string };

export interface PairEvent {
  kind: 'pair';
  listenFd: number;
  fd: number;
  /** the other side's fd, or -1 when it is gone */
  peerFd: number;
  proto: number;
  /** stone's reference count (0 for an idle pair) */
  count?: number;
  /** when the pair last moved data (seconds since the epoch) */
  clock: number;
  /** local address of `fd` (stoneAddrPort), or undefined if getsockname failed */
  local?: string;
  /** peer address of `fd`, or undefined if getpeername failed */
  peer?: string;
  tx: number;
  rx: number;
  loops: number;
}

/** The message for an event: the part of the line after the prefix. */
export function stoneMessage(e: StoneEvent): string {
  switch (e.kind) {
    case 'start':
      return `start (${e.version ?? '2.4'}) [${e.pid}]`;
    case 'debugLevel':
      return `Debug level: ${e.level}`;
    case 'listen':
      return e.command ? `stone ${e.listenFd}: ${e.command} <- ${e.src}` : `stone ${e.listenFd}: ${e.dst} <- ${e.src}`;
    case 'sslThreadLocks':
      return `SSL thread nlocks=${e.locks ?? 1}`;
    case 'exiting':
      return 'SIGTERM/INT. exiting';
    case 'accepted':
      return `stone ${e.listenFd}: accepted TCP ${e.fd} from ${e.ident !== undefined ? `${e.ident}@` : ''}${e.from} mode=${e.mode}`;
    case 'accessDenied':
      return `stone ${e.listenFd}: access denied: from ${e.ident !== undefined ? `${e.ident}@` : ''}${e.from}`;
    case 'connecting':
      return `${e.listenFd} TCP ${e.sourceFd}: connecting to TCP ${e.destFd} ${e.to}`;
    case 'established':
      return `${e.listenFd} TCP ${e.sourceFd}: established to ${e.destFd} ${hex8(e.sourceProto ?? PLAIN_TCP_ESTABLISHED.source)} ${hex8(e.destProto ?? PLAIN_TCP_ESTABLISHED.dest)}`;
    case 'connectFailed':
      return `${e.listenFd} TCP ${e.destFd}: connect getsockopt err=${e.errno}`;
    case 'cantConnect':
      return `${e.listenFd} TCP ${e.destFd}: can't connect err=${e.errno}: to ${e.to}`;
    case 'eof':
      return `${e.listenFd} TCP ${e.fd}: EOF`;
    case 'epoll':
      return `TCP ${e.fd}: epoll ${e.epollFd} events=${e.events.toString(16)} type=${e.type ?? 1}`;
    case 'close':
      return `${e.listenFd} TCP ${e.fd}: close tx:${e.tx} rx:${e.rx} lp:${e.loops}`;
    case 'idle':
      return `${e.listenFd} TCP ${e.fd}: idle time exceeds`;
    case 'ioError':
      return `${e.listenFd} TCP ${e.fd}: ${e.op} error err=${e.errno}, closing`;
    case 'pair':
      return pairMessage(e);
    case 'timeLog':
      return timeLogMessage(e.clock, e.now, e.text);
  }
}

/**
 * stone's message_pair: `%d TCP%3d:%3d %08x %d <time>[<local> ][<peer>] tx:%d rx:%d lp:%d`. The
 * embedded time is strntime without microseconds (with its trailing space).
 */
export function pairMessage(e: PairEvent): string {
  let addrs = stoneTime(e.clock, false);
  if (e.local !== undefined) addrs += `${e.local} `;
  if (e.peer !== undefined) addrs += e.peer;
  return `${e.listenFd} TCP${pad3(e.fd)}:${pad3(e.peerFd)} ${hex8(e.proto)} ${e.count ?? 0} ${addrs} tx:${e.tx} rx:${e.rx} lp:${e.loops}`;
}

/** stone's message_time_log: local `HH:MM:SS` of the noted time, seconds since then, the note. */
export function timeLogMessage(clock: number, now: number, text: string): string {
  const d = new Date(clock * 1000);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())} ${Math.floor(now - clock)} ${text}`;
}

/** A full line for an event: prefix + message, cut as stone cuts it. */
export function eventLine(t: Timeval | Date, threadId: number | bigint | string, e: StoneEvent): string {
  return logLine(linePrefix(t, threadId), stoneMessage(e));
}

/** What decides whether stone logs an event: its -d count and the client's dump mode (-p count). */
export interface LogSettings {
  debug: number;
  dumpMode?: number;
}

/** Whether stone 2.4 logs this event at these settings (the table in the header comment). */
export function stoneLogs(e: StoneEvent, s: LogSettings): boolean {
  switch (e.kind) {
    case 'debugLevel':
      return s.debug > 0;
    case 'sslThreadLocks':
      return s.debug > 1;
    case 'accepted':
      return s.debug > 1 || (s.dumpMode ?? 0) > 0;
    case 'connecting':
    case 'established':
    case 'eof':
    case 'close':
    case 'idle':
      return s.debug > 2;
    case 'epoll':
      // only events beyond EPOLLIN|EPOLLPRI|EPOLLOUT (hang-up, error) are reported
      return s.debug > 2 && (e.events & ~(0x001 | 0x002 | 0x004)) !== 0;
    default:
      return true;
  }
}

// ---------------------------------------------------------------------------------------------
// -a accounting

export interface AccountingEvent {
  /** when the client was accepted (seconds since the epoch, or a Date) */
  clock: number | Date;
  /** the listening port (stone's stone->port) */
  port: number;
  listenFd: number;
  /** the client as stoneAddrPort prints it (a name unless -n or loopback) */
  from: string;
  /** the client's numeric address */
  fromHost: string;
  /** the RFC 1413 user, for /ident listeners */
  ident?: string;
}

/**
 * One `-a` line (without the newline), written when a client is accepted, after the xhost check
 * and before the `accepted` log line: `Nov 23 11:28:40 17002[4] 127.0.0.1:42240[127.0.0.1]`.
 * No microseconds, no thread id; stone writes nothing at close.
 */
export function accountingLine(e: AccountingEvent): string {
  const clock = e.clock instanceof Date ? Math.floor(e.clock.getTime() / 1000) : e.clock;
  return `${stoneTime(clock, false)}${e.port}[${e.listenFd}] ${e.ident !== undefined ? `${e.ident}@` : ''}${e.from}[${e.fromHost}]`;
}

// ---------------------------------------------------------------------------------------------
// normalise

export interface NormaliseOptions {
  /** also mask `lp:N`, stone's count of event-loop passes over a pair (an engine cannot match it) */
  loops?: boolean;
}

const TIME = String.raw`[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d`;
const PREFIX_RE = new RegExp(String.raw`^${TIME}\.\d{6} (?:(\d{5,}) )?`);
const ACC_RE = new RegExp(String.raw`^${TIME} (\d+)\[\d+\] `);
const EMBEDDED_TIME_RE = new RegExp(`${TIME} `);

/**
 * Masks what legitimately differs between two runs: the timestamp and thread id of the prefix
 * (`<TIME> <TID> `; a thread id is a number of 5 or more digits, so that a line without one keeps
 * its leading descriptor), every file-descriptor number stone prints (as `#`, in dump headers, `stone N:`,
 * `N TCP N:`, `to TCP N`, `to N`, `TCP N: epoll N`, pair lines, `-a` lines, and the UDP forms
 * `N UDP>N:`, `N UDP N:`, `N TCPN>UDPN:`, `N UDP<TCPN:`), the time inside pair and `-a` lines, and
 * with `loops` the `lp:N` counters. The `-1` stone prints for the client side of a UDP listener is
 * kept (it tells the kind of pair). Everything else is left byte for byte.
 */
export function normalise(line: string, options: NormaliseOptions = {}): string {
  let head = '';
  let rest = line;
  const acc = ACC_RE.exec(line);
  if (acc) return `<TIME> ${acc[1]}[#] ${line.slice(acc[0].length)}`;
  const p = PREFIX_RE.exec(line);
  if (p) {
    head = p[1] === undefined ? '<TIME> ' : '<TIME> <TID> ';
    rest = line.slice(p[0].length);
  }
  let m: RegExpExecArray | null;
  if ((m = /^\d+ (tu|rm)?(-?\d+)([<>])\d+(?= |$)/.exec(rest))) {
    // the client side of a UDP listener is fd -1 in stone: kept, it tells the pair's kind
    rest = `# ${m[1] ?? ''}${m[2] === '-1' ? '-1' : '#'}${m[3]}#${rest.slice(m[0].length)}`;
  } else if ((m = /^\d+ UDP([<>])\d+:/.exec(rest))) {
    rest = `# UDP${m[1]}#:${rest.slice(m[0].length)}`;
  } else if ((m = /^\d+ UDP \d+: /.exec(rest))) {
    rest = `# UDP #: ${rest.slice(m[0].length)}`;
  } else if ((m = /^\d+ (TCP-?\d+>UDP\d+|UDP<TCP-?\d+): /.exec(rest))) {
    rest = `# ${(m[1] as string).replace(/\d+/g, '#')}: ${rest.slice(m[0].length)}`;
  } else if ((m = /^stone \d+: /.exec(rest))) {
    rest = `stone #: ${rest.slice(m[0].length).replace(/^accepted TCP \d+ /, 'accepted TCP # ')}`;
  } else if ((m = /^\d+ TCP\s*\d+:\s*-?\d+ ([0-9a-f]{8} -?\d+ )/.exec(rest))) {
    rest = `# TCP #: # ${m[1]}${rest.slice(m[0].length).replace(EMBEDDED_TIME_RE, '<TIME> ')}`;
  } else if ((m = /^\d+ TCP (-?\d+): /.exec(rest))) {
    const fd = m[1] === '-1' ? '-1' : '#';
    rest = `# TCP ${fd}: ${rest.slice(m[0].length).replace(/^connecting to TCP \d+ /, 'connecting to TCP # ').replace(/^established to \d+ /, 'established to # ')}`;
  } else if ((m = /^TCP \d+: epoll \d+ /.exec(rest))) {
    rest = `TCP #: epoll # ${rest.slice(m[0].length)}`;
  }
  if (options.loops) rest = rest.replace(/ lp:\d+$/, ' lp:#');
  return head + rest;
}
