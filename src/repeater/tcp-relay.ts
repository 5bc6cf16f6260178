// One stone TCP pair: connect to the destination, relay bytes both ways with stone's dump and
// -ddd log lines, carry a half-close each way, close on idle (-T) or error. Per pair (PairExtras):
// byte filters for /base, /proxy, /mproxy (stream-filters.ts), a proxy request already read and
// CONNECT's `HTTP/1.0 200 OK` (proxy-stone.ts), and the `sport/http` listener handshake (the
// client's request header dropped, bounded by MAX_HTTP_LISTENER_HEADER, `HTTP/1.0 200 OK` sent).
// Why not src/common/splice.ts: stone dumps every write cut into -X sized pieces and logs per-side
// EOF/close lines with byte counts; splice has no hooks for either. This pump reads whatever
// Node delivers (up to 64 KiB a read) and writes it on at once, so -X never throttles
// throughput: -X only decides how dumped bytes are cut into chunks (dump.ts stoneChunks), as
// stone's one-read-one-dump would cut them. (With -X above 64 KiB a dump chunk is at most what
// Node read, 64 KiB; stone would show up to -X bytes in one chunk.)
// Owns: the pair's sockets from accept to close. Must not: decide access (engine.ts) or format
// lines (logline.ts, dump.ts).
import net from 'node:net';
import tls from 'node:tls';
import { constants as osConstants } from 'node:os';
import { stoneChunks, tcpDumpHead } from './dump.js';
import { PLAIN_TCP_ESTABLISHED, PROTO } from './logline.js';
import { decidePeer, sslInfoLines, type SerialMemory } from './ssl.js';
import type { StoneLog } from './stone-log.js';
import { expandTemplate } from './escapes.js';
import type { Address, Route } from './route.js';
import type { EscapedTemplate, SslOptions, TemplateValue } from './types.js';
import type { ByteFilter } from './stream-filters.js';
import type { Activity } from './activity.js';

/** `\a \A \u \g \U \G` of one client (peer-values.ts), for a /http request line */
export type TemplateValues = Readonly<Partial<Record<TemplateValue, string>>>;

/** A `/ssl` destination: how to connect and what to check (ssl.ts). */
export interface PairTls {
  readonly settings: SslOptions;
  /** tls.connect() options built at start-up (key, cert, CA, versions, ciphers) */
  readonly options: tls.ConnectionOptions;
  /** sent as SNI when it is a name, and checked (stone's hostcheck) */
  readonly serverName: string;
  readonly memory: SerialMemory;
}

/** Where a pair connects to and how it logs; fixed per stone. */
export interface PairTarget {
  readonly log: StoneLog;
  readonly listenFd: number;
  /** picks the destination of each new pair (failover.ts: -b backups, -B groups) */
  readonly router: { next(): Route };
  readonly xferBytes: number;
  readonly idleMs: number;
  /** `/ssl` destination */
  readonly tls?: PairTls;
  /**
   * `host:port/http <request>`: the request line sent (with an empty line) before anything else;
   * the reply header is read and dropped, then the client is read and bytes are relayed raw
   */
  readonly httpRequest?: EscapedTemplate;
  /** the stone's listening port (what an `identd` stone answers about this pair) */
  readonly stonePort?: number;
  /** the health port's clocks (activity.ts) */
  readonly activity?: Activity;
}

/** Per-pair additions: proxy requests, `/base`, `/proxy` headers. */
export interface PairExtras {
  /** bytes already read from the client and filtered (a rewritten proxy request), sent first */
  readonly prelude?: Buffer;
  /** written to the client once the destination is connected (CONNECT's `HTTP/1.0 200 OK`) */
  readonly clientReply?: Buffer;
  /** applied to client bytes before they go to the destination */
  readonly toDest?: ByteFilter;
  /** applied to destination bytes before they go to the client */
  readonly toClient?: ByteFilter;
  /**
   * stone's message_time note of a proxy request, logged (`HH:MM:SS N NOTE`) when the
   * destination ends or the pair closes
   */
  readonly note?: { readonly clock: number; readonly text: string };
  /**
   * `sport/http` listener (stone's proto_ohttp_s): the client's request header is read and
   * dropped, the client gets `HTTP/1.0 200 OK\r\n\r\n`, then bytes are relayed raw
   */
  readonly httpListener?: boolean;
}

/** The longest request header a `/http` listener reads before giving up on the client. */
export const MAX_HTTP_LISTENER_HEADER = 65536;

/** An outgoing connection of a pair, for `identd` stones. */
export interface OutgoingConnection {
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly stonePort: number;
}

interface Side {
  readonly socket: net.Socket;
  /** set once the socket has a descriptor (a connecting socket gets one on the next tick) */
  fd: number;
  rx: number;
  tx: number;
  loops: number;
  /** this side's readable ended (its peer half-closed) */
  eof: boolean;
  closeLogged: boolean;
}

let syntheticFd = 1000;
/** The descriptor under a socket, or -1 while it has none (or has none of its own, like TLS). */
function rawFd(socket: net.Socket | net.Server): number {
  const handle = (socket as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/** The descriptor of a socket, as stone prints it; a stand-in when Node has not opened one yet. */
export function socketFd(socket: net.Socket | net.Server): number {
  const fd = rawFd(socket);
  return fd >= 0 ? fd : syntheticFd++;
}

/**
 * Calls `use` with the descriptor of a socket that is connecting: Node opens it on the next tick
 * for an IP destination (a UNIX socket has one at once), and stone's `connecting to` line names it.
 */
export function withConnectFd(socket: net.Socket, use: (fd: number) => void): void {
  if (rawFd(socket) >= 0) use(rawFd(socket));
  else process.nextTick(() => use(socketFd(socket)));
}

export function errnoOf(err: unknown): number {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const errno = code === undefined ? undefined : (osConstants.errno as Record<string, number | undefined>)[code];
  if (errno !== undefined) return errno;
  const raw = (err as NodeJS.ErrnoException | undefined)?.errno;
  return typeof raw === 'number' ? Math.abs(raw) : 0;
}

/** stone's proto_ohttp_d: the destination speaks through an HTTP request (`/http`) */
const PROTO_OHTTP_DEST = 0x8000000;

/**
 * The `established` flags of a pair whose destination is a UNIX socket: connect(2) succeeds at
 * once, so the client side is still dirty and the destination side is not.
 */
const UNIX_ESTABLISHED = {
  source: PLAIN_TCP_ESTABLISHED.source | PROTO.dirty,
  dest: PROTO.firstRead | PROTO.firstWrite,
} as const;

const EPOLLIN = 0x001;
const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;

/** What the idle sweep and shutdown need of a live pair (TCP, TCP<->UDP, UDP<->TCP). */
export interface LivePair {
  /** -T in ms; 0 = never idle */
  readonly idleMs: number;
  /** Date.now() of the last byte or datagram either way */
  readonly lastActivity: number;
  /** -T expired: log it as stone does and close */
  idle(): void;
  /** shutdown: close now */
  destroy(): void;
  /** the connection this pair made, if any (identd) */
  outgoing?(): OutgoingConnection | undefined;
}

/** Live pairs, for the idle sweep and shutdown. */
export class PairSet {
  private readonly pairs = new Set<LivePair>();
  private sweep: NodeJS.Timeout | undefined;

  add(pair: LivePair): void {
    this.pairs.add(pair);
    if (pair.idleMs > 0 && !this.sweep) {
      this.sweep = setInterval(() => this.checkIdle(), 1000);
      this.sweep.unref();
    }
  }

  delete(pair: LivePair): void {
    this.pairs.delete(pair);
    if (this.pairs.size === 0 && this.sweep) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }

  private checkIdle(): void {
    const now = Date.now();
    for (const pair of this.pairs) if (pair.idleMs > 0 && now - pair.lastActivity > pair.idleMs) pair.idle();
  }

  get size(): number {
    return this.pairs.size;
  }

  /** identd: the stone port of a pair connected from local `localPort` to `remote`:`remotePort` */
  findOutgoing(localPort: number, remoteAddress: string, remotePort: number): number | undefined {
    const bare = (a: string): string => a.replace(/^::ffff:/, '');
    for (const pair of this.pairs) {
      const o = pair.outgoing?.();
      if (o && o.localPort === localPort && o.remotePort === remotePort && bare(o.remoteAddress) === bare(remoteAddress)) return o.stonePort;
    }
    return undefined;
  }

  destroyAll(): void {
    for (const pair of [...this.pairs]) pair.destroy();
  }
}

/** tls.connect() options of a pair; allowHalfOpen reaches the TLSSocket (not in @types/node). */
function tlsConnectOptions(address: Address, pairTls: PairTls): tls.ConnectionOptions {
  const options: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
    ...pairTls.options,
    ...(address.kind === 'unix' ? { path: address.path } : { host: address.host, port: address.port }),
    allowHalfOpen: true,
    // an IP address is not a valid SNI name (RFC 6066); Node warns and drops it
    ...(net.isIP(pairTls.serverName) === 0 ? { servername: pairTls.serverName } : {}),
  };
  return options;
}

export class TcpPair implements LivePair {
  readonly idleMs: number;
  lastActivity = Date.now();
  private readonly source: Side;
  private dest: Side | undefined;
  private closed = false;

  constructor(
    client: net.Socket,
    clientFd: number,
    private readonly target: PairTarget,
    /** stone's dump mode for this client (xhost pN or -p count), already & 0xF */
    private readonly dumpMode: number,
    private readonly pairs: PairSet,
    /** `\0`..`\9` of the client's certificate (ssl.ts decidePeer), for a /http request line */
    private readonly matches: readonly (string | undefined)[] = [],
    /** `\a \A \u \g \U \G` of the client, for a /http request line */
    private readonly values: TemplateValues = {},
    private readonly extras: PairExtras = {},
  ) {
    this.idleMs = target.idleMs;
    this.source = { socket: client, fd: clientFd, rx: 0, tx: 0, loops: 0, eof: false, closeLogged: false };
    pairs.add(this);
    client.on('error', (err) => this.fail(this.source, err));
    client.on('close', () => this.lost());
    this.connect();
  }

  private get log(): StoneLog {
    return this.target.log;
  }

  private connect(): void {
    const t = this.target;
    const route = t.router.next();
    const a = route.address;
    const socket = t.tls
      ? tls.connect(tlsConnectOptions(a, t.tls))
      : net.connect(a.kind === 'unix' ? { path: a.path, allowHalfOpen: true } : { host: a.host, port: a.port, family: a.family, allowHalfOpen: true });
    const dest: Side = { socket, fd: -1, rx: 0, tx: 0, loops: 0, eof: false, closeLogged: false };
    this.dest = dest;
    withConnectFd(socket, (fd) => {
      dest.fd = fd;
      this.log.event({ kind: 'connecting', listenFd: t.listenFd, sourceFd: this.source.fd, destFd: dest.fd, to: route.printed });
    });
    let established = false;
    /** for /ssl: the handshake finished (errors before it are handshake failures) */
    let secured = !t.tls;
    const relay = (): void => {
      if (this.closed) return;
      if (t.httpRequest) {
        this.overHttp(dest, t.httpRequest);
        return;
      }
      if (this.extras.httpListener) {
        this.acceptOverHttp(dest);
        return;
      }
      if (this.extras.clientReply) this.forward(dest, this.source, this.dumpHead('<'), this.extras.clientReply, false);
      if (this.extras.prelude && this.extras.prelude.length > 0) this.forward(this.source, dest, this.dumpHead('>'), this.extras.prelude, false, true);
      this.pump(this.source, dest, '>');
      this.pump(dest, this.source, '<');
      this.source.socket.resume();
    };
    socket.once('connect', () => {
      established = true;
      t.activity?.established();
      // a UNIX-socket connect completes at once in stone, so its flags differ from TCP's
      const unix = a.kind === 'unix';
      const destProto = (unix ? UNIX_ESTABLISHED.dest : PLAIN_TCP_ESTABLISHED.dest) | (t.httpRequest ? PROTO_OHTTP_DEST : 0);
      this.log.event({
        kind: 'established',
        listenFd: t.listenFd,
        sourceFd: this.source.fd,
        destFd: dest.fd,
        ...(unix ? { sourceProto: UNIX_ESTABLISHED.source } : {}),
        ...(destProto !== PLAIN_TCP_ESTABLISHED.dest ? { destProto } : {}),
      });
      if (!t.tls) relay();
    });
    if (t.tls) {
      const pairTls = t.tls;
      socket.once('secureConnect', () => {
        secured = true;
        const verdict = decidePeer(socket as tls.TLSSocket, pairTls.settings, pairTls.memory, (text) => this.log.message(`${t.listenFd} TCP ${dest.fd}: ${text}`), pairTls.serverName);
        if (!verdict.ok) {
          for (const m of verdict.messages) this.log.message(`${t.listenFd} TCP ${dest.fd}: ${m}`);
          // the client sees end-of-stream, as from stone
          this.teardown(true);
          return;
        }
        if (pairTls.settings.verbose > 0) for (const l of sslInfoLines(socket as tls.TLSSocket)) this.log.message(l);
        relay();
      });
      socket.on('error', () => {
        if (!established || secured || this.closed) return;
        // the handshake failed; stone logs SSL_ERROR_SSL of SSL_connect only at -ddddd
        this.teardown(true);
      });
    }
    socket.on('error', (err) => {
      if (established) {
        if (!secured) return;
        this.fail(dest, err);
        return;
      }
      const errno = errnoOf(err);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ECONNRESET') {
        this.log.event({ kind: 'epoll', fd: dest.fd, epollFd: 4, events: EPOLLOUT | EPOLLERR | EPOLLHUP });
        this.log.event({ kind: 'connectFailed', listenFd: t.listenFd, destFd: dest.fd, errno });
      } else {
        this.log.event({ kind: 'cantConnect', listenFd: t.listenFd, destFd: dest.fd, errno, to: route.printed });
      }
      this.teardown(false);
    });
    socket.on('close', () => this.lost());
  }

  private dumpHead(direction: '>' | '<'): string {
    const t = this.target;
    return this.dumpMode > 0 ? tcpDumpHead({ listenFd: t.listenFd, sourceFd: this.source.fd, destFd: (this.dest as Side).fd, direction }) : '';
  }

  /** Writes bytes read from `from` to `to`, with the counts and dump lines stone keeps. */
  private forward(from: Side, to: Side, head: string, raw: Buffer, read: boolean, unfiltered = false): void {
    if (read) {
      from.rx += raw.length;
      from.loops++;
    }
    this.target.activity?.readWrite();
    const toClient = to === this.source;
    const filter = unfiltered ? undefined : toClient ? this.extras.toClient : this.extras.toDest;
    const chunk = filter ? filter.transform(raw) : raw;
    if (toClient) this.extras.toDest?.replySeen?.();
    if (chunk.length === 0) return;
    to.tx += chunk.length;
    to.loops++;
    this.lastActivity = Date.now();
    const flowing = to.socket.write(chunk);
    if (this.dumpMode > 0) for (const piece of stoneChunks(chunk, this.target.xferBytes)) this.log.dump(head, piece, this.dumpMode);
    if (!flowing) from.socket.pause();
  }

  private pump(from: Side, to: Side, direction: '>' | '<'): void {
    const head = this.dumpHead(direction);
    from.socket.on('data', (chunk: Buffer) => this.forward(from, to, head, chunk, true));
    to.socket.on('drain', () => from.socket.resume());
    from.socket.once('end', () => this.onEof(from, to));
  }

  /**
   * `/http` destination (stone's proto_ohttp_d): send the request line and an empty line, relay
   * the client's bytes at once (as stone does), read the reply header up to its empty line
   * (stone's rmheader: a line break after a line break, `\r` ignored) and drop it, then relay the
   * rest of the reply raw.
   */
  private acceptOverHttp(dest: Side): void {
    const source = this.source;
    const head = new HeadEndScanner();
    let seen = 0;
    const onEnd = (): void => {
      // the client ended inside its request header: nothing to relay
      this.logClose(source);
      this.logClose(dest);
      this.teardown(true);
    };
    const onHeader = (chunk: Buffer): void => {
      source.rx += chunk.length;
      source.loops++;
      this.lastActivity = Date.now();
      const end = head.scan(chunk);
      if (end < 0) {
        seen += chunk.length;
        if (seen > MAX_HTTP_LISTENER_HEADER) {
          this.log.message(`${this.target.listenFd} TCP ${source.fd}: request header longer than ${MAX_HTTP_LISTENER_HEADER} bytes, closing`);
          this.teardown(false);
        }
        return;
      }
      source.socket.off('data', onHeader);
      source.socket.off('end', onEnd);
      source.socket.pause();
      this.forward(dest, source, this.dumpHead('<'), Buffer.from('HTTP/1.0 200 OK\r\n\r\n', 'latin1'), false, true);
      const rest = chunk.subarray(end);
      if (rest.length > 0) this.forward(source, dest, this.dumpHead('>'), rest, false);
      this.pump(source, dest, '>');
      this.pump(dest, source, '<');
      source.socket.resume();
    };
    source.socket.on('data', onHeader);
    source.socket.once('end', onEnd);
    source.socket.resume();
  }

  private overHttp(dest: Side, request: EscapedTemplate): void {
    const text = `${expandTemplate(request, { matches: this.matches, values: this.values })}\r\n\r\n`;
    dest.tx += Buffer.byteLength(text, 'latin1');
    dest.loops++;
    dest.socket.write(Buffer.from(text, 'latin1'));
    if (this.dumpMode > 0) for (const piece of stoneChunks(Buffer.from(text, 'latin1'), this.target.xferBytes)) this.log.dump(this.dumpHead('>'), piece, this.dumpMode);
    const head = new HeadEndScanner();
    const onEnd = (): void => {
      // the destination ended inside the reply header: nothing to relay
      this.logClose(dest);
      this.logClose(this.source);
      this.teardown(true);
    };
    const onHeader = (chunk: Buffer): void => {
      dest.rx += chunk.length;
      dest.loops++;
      this.lastActivity = Date.now();
      const end = head.scan(chunk);
      if (end < 0) return;
      dest.socket.off('data', onHeader);
      dest.socket.off('end', onEnd);
      dest.socket.pause();
      const rest = chunk.subarray(end);
      if (rest.length > 0) this.forward(dest, this.source, this.dumpHead('<'), rest, false);
      this.pump(dest, this.source, '<');
      if (!this.source.socket.writableNeedDrain) dest.socket.resume();
    };
    dest.socket.on('data', onHeader);
    dest.socket.once('end', onEnd);
    this.pump(this.source, dest, '>');
    this.source.socket.resume();
  }

  private noteLogged = false;

  /** stone's message_time_log of a proxy request */
  private logNote(): void {
    const note = this.extras.note;
    if (!note || this.noteLogged) return;
    this.noteLogged = true;
    this.log.event({ kind: 'timeLog', clock: note.clock, now: Date.now() / 1000, text: note.text });
  }

  outgoing(): OutgoingConnection | undefined {
    const s = this.dest?.socket;
    if (!s || this.target.stonePort === undefined || s.localPort === undefined || s.remoteAddress === undefined || s.remotePort === undefined) return undefined;
    return { localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.remotePort, stonePort: this.target.stonePort };
  }

  private onEof(side: Side, other: Side): void {
    side.eof = true;
    if (side === this.dest) this.logNote();
    const t = this.target;
    if (!other.eof) {
      // the first side to end: carry the half-close to the other side
      this.log.event({ kind: 'eof', listenFd: t.listenFd, fd: side.fd });
      other.socket.end();
      return;
    }
    // both ended: stone sees the second side hang up, then closes it and its partner
    this.log.event({ kind: 'epoll', fd: side.fd, epollFd: 4, events: EPOLLIN | EPOLLHUP });
    this.log.event({ kind: 'eof', listenFd: t.listenFd, fd: side.fd });
    other.socket.end(() => {
      this.logClose(side);
      this.logClose(other);
      this.teardown(true);
    });
  }

  private logClose(side: Side): void {
    if (side.closeLogged) return;
    side.closeLogged = true;
    this.log.event({ kind: 'close', listenFd: this.target.listenFd, fd: side.fd, tx: side.tx, rx: side.rx, loops: side.loops });
  }

  private pairEvent(side: Side, other: Side | undefined): void {
    this.log.event({
      kind: 'pair',
      listenFd: this.target.listenFd,
      fd: side.fd,
      peerFd: other?.fd ?? -1,
      proto: (side === this.source ? PROTO.commandSource | PROTO.connect : 0) | PROTO.selectRead,
      count: 0,
      clock: Math.floor(this.lastActivity / 1000),
      local: side.socket.localAddress === undefined ? undefined : this.log.addr(side.socket.localAddress, side.socket.localPort ?? 0),
      peer: side.socket.remoteAddress === undefined ? undefined : this.log.addr(side.socket.remoteAddress, side.socket.remotePort ?? 0),
      tx: side.tx,
      rx: side.rx,
      loops: side.loops,
    });
  }

  /** -T expired: stone logs it (-ddd) and shuts both sides down. */
  idle(): void {
    if (this.closed) return;
    this.log.event({ kind: 'idle', listenFd: this.target.listenFd, fd: this.source.fd });
    if (this.log.debug > 2) this.pairEvent(this.source, this.dest);
    this.logClose(this.source);
    if (this.dest) this.logClose(this.dest);
    this.teardown(true);
  }

  private fail(side: Side, err: Error): void {
    if (this.closed) return;
    const other = side === this.source ? this.dest : this.source;
    this.log.event({ kind: 'ioError', listenFd: this.target.listenFd, fd: side.fd, op: 'read', errno: errnoOf(err) });
    this.pairEvent(side, other);
    this.logClose(side);
    if (other) this.logClose(other);
    this.teardown(false);
  }

  /** A socket closed under us (reset, destroyed): the pair cannot go on. */
  private lost(): void {
    if (this.closed) return;
    const both = [this.source, this.dest].filter((s): s is Side => s !== undefined);
    if (both.length === 2 && both.every((s) => s.eof)) return; // the normal finish is in progress
    for (const s of both) this.logClose(s);
    this.teardown(false);
  }

  /** Ends both sockets: `graceful` sends FIN after pending bytes, else destroys at once. */
  private teardown(graceful: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.logNote();
    this.pairs.delete(this);
    for (const side of [this.source, this.dest]) {
      if (!side) continue;
      const s = side.socket;
      if (graceful && !s.destroyed) {
        s.end();
        s.once('finish', () => s.destroy());
        setTimeout(() => s.destroy(), 5000).unref();
      } else {
        s.destroy();
      }
    }
  }

  /** Shutdown: close now. */
  destroy(): void {
    this.teardown(false);
  }
}

/**
 * Finds the end of an HTTP head as stone's rmheader does: a line break after a line break, `\r`
 * ignored. Keeps its state across chunks; scan() gives the offset after the head, or -1.
 */
class HeadEndScanner {
  private state = 0;
  scan(chunk: Buffer): number {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i];
      if (c === 0x0d) continue;
      if (c !== 0x0a) {
        this.state = 1;
        continue;
      }
      this.state++;
      if (this.state >= 3) return i + 1;
    }
    return -1;
  }
}
