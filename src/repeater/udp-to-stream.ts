// UDP->stream stones of stone 2.4 (`host:port sport/udp`, the destination TCP or a UNIX
// socket): one stream connection per client address (IP and port), opened when its first
// datagram arrives (xhost check, `-a` line, `accepted TCP -1 from ADDR/udp`, as stone); each
// datagram goes to the destination as a frame (udp-framing.ts: 2-byte length), each frame from
// the destination goes back as a datagram from the listening socket. The association ends when
// the destination closes, on -T, or to make room.
// Lines as stone at -ddd: `3 TCP -1: connecting to TCP 8 ADDR`, `established to 8 0000df00
// 000b1000`, `EOF`, `close tx rx lp`, the refused connect; dumps `3 -1>8` for frames written,
// `3 tu-1<8` for datagrams sent back (their frames).
// Bounds: at most `-u` associations per listener (the least recently used one is closed to make
// room; stone has no limit there); one incomplete frame each; at most 256 KiB waiting for the
// destination before datagrams are dropped (UDP may drop); 64 datagrams held while a new
// client's first one is checked.
// Owns: the associations and their sockets. Must not: open the listening socket (engine.ts).
import type dgram from 'node:dgram';
import net from 'node:net';
import { tcpDumpHead } from './dump.js';
import type { StoneAdmission } from './admission.js';
import { decide, parseIpAddress } from './xhost.js';
import { Deframer, frame, MAX_FRAME_PAYLOAD } from './udp-framing.js';
import { errnoOf, withConnectFd, type LivePair, type PairSet } from './tcp-relay.js';
import { ESTABLISHED, STREAM_BACKLOG_BYTES, type Counts } from './mixed-pairs.js';
import type { Route } from './route.js';
import type { StoneExt } from './logline.js';
import type { StoneLog } from './stone-log.js';
import type { ResolvedXhostEntry } from './types.js';

/** datagrams of a new UDP client held while its first one is checked */
const MAX_OPENING_QUEUE = 64;

const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;

/** What a UDP listener relaying to a stream destination needs of its stone. */
export interface StreamFromUdpConfig {
  readonly log: StoneLog;
  readonly listenFd: number;
  readonly listenPort: number;
  /** the bound listening socket */
  readonly listener: dgram.Socket;
  readonly router: { next(): Route };
  readonly rules: readonly ResolvedXhostEntry[];
  readonly defaultDumpMode: number;
  /** -u */
  readonly maxAssociations: number;
  readonly idleMs: number;
  readonly pairs: PairSet;
  /** --ban-home: datagrams from banned sources are dropped before anything else (admission.ts) */
  readonly admission?: StoneAdmission;
}

/** One UDP client's connection to the destination. */
class Association implements LivePair {
  readonly idleMs: number;
  lastActivity = Date.now();
  readonly socket: net.Socket;
  fd = -1;
  private readonly counts: Counts = { rx: 0, tx: 0, loops: 0 };
  private readonly deframer = new Deframer();
  private connected = false;
  /** datagrams that arrived before the connection was up (bounded like the write buffer) */
  private waiting: Buffer[] = [];
  private waitingBytes = 0;
  private closed = false;

  constructor(
    private readonly owner: UdpToStream,
    readonly key: string,
    private readonly address: string,
    private readonly port: number,
    private readonly dumpMode: number,
    first: Buffer,
  ) {
    const c = owner.config;
    this.idleMs = c.idleMs;
    const route = c.router.next();
    const a = route.address;
    this.socket = net.connect(a.kind === 'unix' ? { path: a.path, allowHalfOpen: true } : { host: a.host, port: a.port, family: a.family, allowHalfOpen: true });
    withConnectFd(this.socket, (fd) => {
      this.fd = fd;
      c.log.event({ kind: 'connecting', listenFd: c.listenFd, sourceFd: -1, destFd: this.fd, to: route.printed });
    });
    this.send(first);
    this.socket.once('connect', () => {
      this.connected = true;
      c.log.event({ kind: 'established', listenFd: c.listenFd, sourceFd: -1, destFd: this.fd, sourceProto: ESTABLISHED.udpToTcp.source, destProto: ESTABLISHED.udpToTcp.dest });
      const waiting = this.waiting;
      this.waiting = [];
      this.waitingBytes = 0;
      for (const datagram of waiting) this.send(datagram);
    });
    this.socket.on('data', (chunk: Buffer) => this.fromDestination(chunk));
    this.socket.once('end', () => {
      c.log.event({ kind: 'eof', listenFd: c.listenFd, fd: this.fd });
      this.close(true);
    });
    this.socket.on('error', (err) => {
      if (!this.connected) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ECONNRESET') {
          c.log.event({ kind: 'epoll', fd: this.fd, epollFd: 4, events: EPOLLOUT | EPOLLERR | EPOLLHUP });
          c.log.event({ kind: 'connectFailed', listenFd: c.listenFd, destFd: this.fd, errno: errnoOf(err) });
        } else {
          c.log.event({ kind: 'cantConnect', listenFd: c.listenFd, destFd: this.fd, errno: errnoOf(err), to: route.printed });
        }
        this.close(false);
        return;
      }
      c.log.event({ kind: 'ioError', listenFd: c.listenFd, fd: this.fd, op: 'read', errno: errnoOf(err) });
      this.close(true);
    });
    this.socket.on('close', () => this.close(false));
    c.pairs.add(this);
  }

  /** A datagram from the client: one frame to the destination (dropped when too much waits). */
  send(datagram: Buffer): void {
    if (this.closed) return;
    const c = this.owner.config;
    this.lastActivity = Date.now();
    if (datagram.length > MAX_FRAME_PAYLOAD) return;
    if (!this.connected) {
      if (this.waitingBytes + datagram.length <= STREAM_BACKLOG_BYTES) {
        this.waiting.push(datagram);
        this.waitingBytes += datagram.length;
      }
      return;
    }
    if (this.socket.writableLength > STREAM_BACKLOG_BYTES) return;
    const framed = frame(datagram);
    this.counts.tx += framed.length;
    this.counts.loops++;
    this.socket.write(framed);
    if (this.dumpMode > 0) this.owner.config.log.dump(tcpDumpHead({ listenFd: c.listenFd, sourceFd: -1, destFd: this.fd, direction: '>' }), framed, this.dumpMode);
  }

  private fromDestination(chunk: Buffer): void {
    const c = this.owner.config;
    this.counts.rx += chunk.length;
    this.counts.loops++;
    this.lastActivity = Date.now();
    for (const datagram of this.deframer.push(chunk)) {
      c.listener.send(datagram, this.port, this.address, (err) => {
        if (err) {
          c.log.message(`${c.listenFd} UDP<TCP${this.fd}: sendto failed err=${errnoOf(err)}: to ${c.log.addr(this.address, this.port, ['udp'])}`);
          return;
        }
        if (this.dumpMode > 0) c.log.dump(tcpDumpHead({ listenFd: c.listenFd, sourceFd: -1, destFd: this.fd, direction: '<', tag: 'tu' }), frame(datagram), this.dumpMode);
      });
    }
  }

  idle(): void {
    if (this.closed) return;
    this.owner.config.log.event({ kind: 'idle', listenFd: this.owner.config.listenFd, fd: -1 });
    this.close(true);
  }

  /** `logged`: log stone's close line for the stream side */
  close(logged: boolean): void {
    if (this.closed) return;
    this.closed = true;
    const c = this.owner.config;
    if (logged) c.log.event({ kind: 'close', listenFd: c.listenFd, fd: this.fd, ...this.counts });
    c.pairs.delete(this);
    this.owner.forget(this);
    this.socket.destroy();
  }

  destroy(): void {
    this.close(false);
  }
}

/** A UDP listener whose destination is a stream (TCP or a UNIX socket). */
export class UdpToStream {
  /** insertion order is recency of use: the first entry is the least recently used */
  private readonly associations = new Map<string, Association>();
  /** clients whose first datagram is being checked (names looked up): their next datagrams wait */
  private readonly opening = new Map<string, Buffer[]>();
  private closed = false;

  constructor(readonly config: StreamFromUdpConfig) {
    config.listener.on('message', (msg, rinfo) => void this.datagram(msg, rinfo));
    config.listener.on('error', (err) => config.log.message(`${config.listenFd} UDP: recvfrom err=${errnoOf(err)}`));
  }

  get size(): number {
    return this.associations.size;
  }

  forget(a: Association): void {
    if (this.associations.get(a.key) === a) this.associations.delete(a.key);
  }

  private async datagram(msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    if (this.closed) return;
    const admission = this.config.admission;
    if (admission?.isBanned(rinfo.address)) {
      admission.dropped(rinfo.address, rinfo.port);
      return;
    }
    const key = `${rinfo.address}|${rinfo.port}`;
    const found = this.associations.get(key);
    if (found) {
      this.associations.delete(key);
      this.associations.set(key, found);
      found.send(msg);
      return;
    }
    const queued = this.opening.get(key);
    if (queued) {
      if (queued.length < MAX_OPENING_QUEUE) queued.push(msg);
      return;
    }
    this.opening.set(key, []);
    try {
      await this.open(key, msg, rinfo);
    } finally {
      const waiting = this.opening.get(key) ?? [];
      this.opening.delete(key);
      const a = this.associations.get(key);
      if (a) for (const m of waiting) a.send(m);
    }
  }

  /** A new client: xhost check, stone's accept lines, then its connection (first datagram queued). */
  private async open(key: string, msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    const c = this.config;
    const exts: StoneExt[] = ['udp'];
    const client = parseIpAddress(rinfo.address.replace(/%.*$/, ''));
    const decision = decide(c.rules, client ?? 'unix', { defaultDumpMode: c.defaultDumpMode });
    if (!decision.allowed) {
      c.log.event({ kind: 'accessDenied', listenFd: c.listenFd, from: await c.log.addrNamed(rinfo.address, rinfo.port, exts) });
      return;
    }
    const dumpMode = decision.dumpMode & 0xf;
    if (c.log.accounting || c.log.debug > 1 || dumpMode > 0) {
      const from = await c.log.addrNamed(rinfo.address, rinfo.port, exts);
      c.log.account({ clock: Math.floor(Date.now() / 1000), port: c.listenPort, listenFd: c.listenFd, from, fromHost: rinfo.address });
      c.log.event({ kind: 'accepted', listenFd: c.listenFd, fd: -1, from, mode: decision.dumpMode }, dumpMode);
    }
    if (this.closed) return;
    while (this.associations.size >= Math.max(1, c.maxAssociations)) {
      const oldest = this.associations.values().next().value as Association;
      oldest.close(true);
    }
    this.associations.set(key, new Association(this, key, rinfo.address, rinfo.port, dumpMode, msg));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of [...this.associations.values()]) a.destroy();
    try {
      this.config.listener.close();
    } catch {
      // already closed
    }
  }
}
