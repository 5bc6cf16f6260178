// TCP->UDP stones of stone 2.4 (`host:port/udp sport`): one UDP socket per accepted client
// (TCP, TLS or a UNIX socket); each frame the client sends (udp-framing.ts: 2-byte length) goes
// out as one datagram, each datagram from the destination comes back as one frame. The client's
// EOF is logged and the pair stays (stone sends no FIN either) until the client closes, -T
// expires or an error.
// Lines as stone at -ddd: `connecting to`, `established to 7 00035f00 00038000`, `EOF`,
// `close tx rx lp`; dumps `3 tu6>7` for each datagram sent (its frame), `3 6<7` for each frame
// written back.
// Bounds: one incomplete frame; at most 256 datagrams in flight before reading the client pauses;
// at most 256 KiB waiting for the client before answers are dropped (UDP may drop).
// Differences from stone, on purpose: all complete frames of one read go out at once (stone
// sends the first and holds the others until the next read from that client, and then dumps
// them from a wrong offset); a datagram to the pair's socket from another sender is logged
// (`received from unknown`) and dropped, where stone closes the pair; the -b/-B destination is
// picked once per pair (stone picks at connect and again at the first datagram, so round robin
// moves twice per pair); a frame is not limited by -X (stone refuses frames longer than its
// buffer).
// Owns: the pair's sockets. Must not: decide access (engine.ts) or parse.
import dgram from 'node:dgram';
import type net from 'node:net';
import { tcpDumpHead } from './dump.js';
import { parseIpAddress } from './xhost.js';
import { Deframer, frame } from './udp-framing.js';
import { dgramFd } from './udp-relay.js';
import { errnoOf, type LivePair, type PairSet } from './tcp-relay.js';
import { ESTABLISHED, STREAM_BACKLOG_BYTES, type Counts } from './mixed-pairs.js';
import type { Route } from './route.js';
import type { StoneLog } from './stone-log.js';

/** datagrams sent but not yet confirmed before a TCP->UDP pair stops reading its client */
const MAX_IN_FLIGHT = 256;

/** What a TCP->UDP pair needs of its stone. */
export interface DatagramTarget {
  readonly log: StoneLog;
  readonly listenFd: number;
  readonly router: { next(): Route };
  readonly idleMs: number;
}

/** A stream client (TCP, TLS, UNIX) relayed to a UDP destination. */
export class TcpToUdpPair implements LivePair {
  readonly idleMs: number;
  lastActivity = Date.now();
  private readonly udp: dgram.Socket;
  private udpFd = -1;
  private readonly route: Route;
  private readonly client: Counts = { rx: 0, tx: 0, loops: 0 };
  private readonly datagrams: Counts = { rx: 0, tx: 0, loops: 0 };
  private readonly deframer = new Deframer();
  private inFlight = 0;
  private closed = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly clientFd: number,
    private readonly target: DatagramTarget,
    private readonly dumpMode: number,
    private readonly pairs: PairSet,
  ) {
    this.idleMs = target.idleMs;
    pairs.add(this);
    this.route = target.router.next();
    const a = this.route.address;
    const family = a.kind === 'inet' ? a.family : 4;
    this.udp = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.finish());
    this.udp.on('error', (err) => this.fail(err));
    this.udp.on('message', (msg, from) => this.reply(msg, from));
    this.udp.once('listening', () => this.ready());
    this.udp.bind(0);
  }

  private get log(): StoneLog {
    return this.target.log;
  }

  private ready(): void {
    if (this.closed) return;
    const t = this.target;
    this.udpFd = dgramFd(this.udp);
    this.log.event({ kind: 'connecting', listenFd: t.listenFd, sourceFd: this.clientFd, destFd: this.udpFd, to: this.route.printed });
    this.log.event({
      kind: 'established',
      listenFd: t.listenFd,
      sourceFd: this.clientFd,
      destFd: this.udpFd,
      sourceProto: ESTABLISHED.tcpToUdp.source,
      destProto: ESTABLISHED.tcpToUdp.dest,
    });
    this.socket.on('data', (chunk: Buffer) => this.fromClient(chunk));
    this.socket.once('end', () => {
      // stone notes the EOF and keeps the pair: replies may still come
      this.log.event({ kind: 'eof', listenFd: t.listenFd, fd: this.clientFd });
    });
    this.socket.resume();
  }

  private fromClient(chunk: Buffer): void {
    this.client.rx += chunk.length;
    this.client.loops++;
    this.lastActivity = Date.now();
    const a = this.route.address;
    if (a.kind !== 'inet') return;
    for (const datagram of this.deframer.push(chunk)) {
      this.inFlight++;
      if (this.inFlight >= MAX_IN_FLIGHT) this.socket.pause();
      const framed = this.dumpMode > 0 ? frame(datagram) : undefined;
      this.udp.send(datagram, a.port, a.host, (err) => {
        this.inFlight--;
        if (this.inFlight < MAX_IN_FLIGHT && !this.closed) this.socket.resume();
        if (this.closed) return;
        if (err) {
          this.log.message(`${this.target.listenFd} TCP${this.clientFd}>UDP${this.udpFd}: sendto failed err=${errnoOf(err)}: to ${this.log.addr(a.host, a.port, ['udp'])}`);
          this.teardown();
          return;
        }
        this.datagrams.tx += datagram.length;
        this.datagrams.loops++;
        if (framed) this.log.dump(tcpDumpHead({ listenFd: this.target.listenFd, sourceFd: this.clientFd, destFd: this.udpFd, direction: '>', tag: 'tu' }), framed, this.dumpMode);
      });
    }
  }

  private reply(msg: Buffer, from: dgram.RemoteInfo): void {
    if (this.closed) return;
    const a = this.route.address;
    const expected = a.kind === 'inet' && from.port === a.port && sameHost(from.address, a.host);
    if (!expected) {
      this.log.message(`${this.target.listenFd} UDP ${this.udpFd}: received from unknown ${this.log.addr(from.address, from.port, ['udp'])}`);
      return;
    }
    this.datagrams.rx += msg.length;
    this.datagrams.loops++;
    this.lastActivity = Date.now();
    if (this.socket.writableLength > STREAM_BACKLOG_BYTES || this.socket.writableEnded) return;
    const framed = frame(msg);
    this.client.tx += framed.length;
    this.client.loops++;
    this.socket.write(framed);
    if (this.dumpMode > 0) this.log.dump(tcpDumpHead({ listenFd: this.target.listenFd, sourceFd: this.clientFd, destFd: this.udpFd, direction: '<' }), framed, this.dumpMode);
  }

  private logCloses(): void {
    const t = this.target;
    this.log.event({ kind: 'close', listenFd: t.listenFd, fd: this.clientFd, ...this.client });
    if (this.udpFd >= 0) this.log.event({ kind: 'close', listenFd: t.listenFd, fd: this.udpFd, ...this.datagrams });
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.log.event({ kind: 'ioError', listenFd: this.target.listenFd, fd: this.clientFd, op: 'read', errno: errnoOf(err) });
    this.teardown();
  }

  /** the client closed its connection */
  private finish(): void {
    if (this.closed) return;
    this.teardown();
  }

  idle(): void {
    if (this.closed) return;
    this.log.event({ kind: 'idle', listenFd: this.target.listenFd, fd: this.clientFd });
    this.teardown();
  }

  private teardown(): void {
    if (this.closed) return;
    this.logCloses();
    this.closed = true;
    this.pairs.delete(this);
    this.socket.destroy();
    try {
      this.udp.close();
    } catch {
      // not bound yet or already closed
    }
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.pairs.delete(this);
    this.socket.destroy();
    try {
      this.udp.close();
    } catch {
      // already closed
    }
  }
}

/** Node reports IPv4 senders on an IPv6 socket as ::ffff:a.b.c.d */
function sameHost(a: string, b: string): boolean {
  const x = parseIpAddress(a.replace(/^::ffff:(?=\d+\.)/i, ''));
  const y = parseIpAddress(b.replace(/^::ffff:(?=\d+\.)/i, ''));
  if (!x || !y) return a === b;
  return x.family === y.family && x.bytes.every((v, i) => v === y.bytes[i]);
}
