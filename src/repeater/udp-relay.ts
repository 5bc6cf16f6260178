// A UDP-to-UDP stone (`host:port/udp sport/udp`), as stone 2.4 runs it (recvUDP, sendUDP,
// getOrigins, scanUDP): every client address (IP and port) gets its own association ("origin"),
// with a socket of its own towards the destination, so the destination sees one source port per
// client; whatever arrives on that socket, from any sender, goes back to that client from the
// listening socket. An origin closes when its client has sent nothing for 60 s (stone's
// CONN_TIMEOUT; replies do not keep it open, as in stone) or when a new client needs room.
// Bounds: at most `-u` origins (default 100; the least recently used one is closed to make room),
// datagrams are at most what UDP carries (64 KiB); nothing is queued (UDP may drop).
// Lines as stone: `-dddd` `3 UDP 5: New origin ADDR`, `-ddd` `3 UDP 5: close`, `-ddddd` the
// per-datagram `received from` / `sent to` lines, and `3 UDP>5:` / `3 UDP<5:` dumps for -p.
// Differences from stone, on purpose: `-u N` keeps N origins (stone keeps N-1 and closes the
// rest at its next one-second scan); a datagram larger than 2048 bytes is relayed the first time
// (stone drops the first one, logs `recvfrom failed: larger packet`, and grows its buffer); an
// origin's socket has the destination's address family (stone uses the client's, which fails
// for an IPv4-mapped client of a dual-stack listener sending to an IPv4 destination).
// Owns: the origins and their sockets. Must not: open the listening socket (engine.ts) or parse
// anything.
import dgram from 'node:dgram';
import { udpDumpHead } from './dump.js';
import type { StoneAdmission } from './admission.js';
import { decide, parseIpAddress } from './xhost.js';
import { errnoOf } from './tcp-relay.js';
import type { StoneLog } from './stone-log.js';
import type { ResolvedXhostEntry } from './types.js';

/** stone's CONN_TIMEOUT: an origin whose client was silent this long is closed */
export const UDP_ORIGIN_IDLE_MS = 60_000;
/** datagrams held for an origin whose socket is still being bound (a few ms) */
const MAX_PENDING = 64;

let syntheticFd = 2000;
/**
 * The descriptor of a bound dgram socket, for log lines (stone prints its socket numbers). Node
 * keeps it on an internal state object (dgram's `_handle` getter is deprecated), read here through
 * a narrow shape; a stand-in number when it cannot be found.
 */
export function dgramFd(socket: dgram.Socket): number {
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    if (symbol.description !== 'state symbol') continue;
    const state = (socket as unknown as Record<symbol, { handle?: { fd?: unknown } | null } | undefined>)[symbol];
    const fd = state?.handle?.fd;
    if (typeof fd === 'number' && fd >= 0) return fd;
  }
  return syntheticFd++;
}

export interface UdpDestination {
  readonly host: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export interface UdpRelayConfig {
  readonly log: StoneLog;
  readonly listenFd: number;
  /** the bound listening socket */
  readonly listener: dgram.Socket;
  readonly destination: UdpDestination;
  readonly rules: readonly ResolvedXhostEntry[];
  readonly defaultDumpMode: number;
  /** -u */
  readonly maxOrigins: number;
  /** default UDP_ORIGIN_IDLE_MS (tests shorten it) */
  readonly idleMs?: number;
  /** --ban-home: datagrams from banned sources are dropped before anything else (admission.ts) */
  readonly admission?: StoneAdmission;
}

interface Origin {
  readonly key: string;
  readonly socket: dgram.Socket;
  fd: number;
  /** work waiting for the socket to be bound (it has no descriptor to print before) */
  pending: (() => void)[] | undefined;
  readonly address: string;
  readonly port: number;
  lastActivity: number;
  dumpMode: number;
}

export class UdpRelay {
  /** insertion order is recency of use: the first entry is the least recently used */
  private readonly origins = new Map<string, Origin>();
  private readonly sweep: NodeJS.Timeout;
  private readonly idleMs: number;
  private closed = false;

  constructor(private readonly config: UdpRelayConfig) {
    this.idleMs = config.idleMs ?? UDP_ORIGIN_IDLE_MS;
    config.listener.on('message', (msg, rinfo) => this.outward(msg, rinfo));
    config.listener.on('error', (err) => this.log.message(`${config.listenFd} UDP: recvfrom err=${errnoOf(err)}`));
    this.sweep = setInterval(() => this.expire(), Math.min(1000, Math.max(50, Math.floor(this.idleMs / 4))));
    this.sweep.unref();
  }

  private get log(): StoneLog {
    return this.config.log;
  }

  get size(): number {
    return this.origins.size;
  }

  private udpAddr(address: string, port: number): string {
    return this.log.addr(address, port, ['udp']);
  }

  private outward(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    const c = this.config;
    if (c.admission?.isBanned(rinfo.address)) {
      c.admission.dropped(rinfo.address, rinfo.port);
      return;
    }
    const client = parseIpAddress(rinfo.address.replace(/%.*$/, ''));
    const decision = decide(c.rules, client ?? 'unix', { defaultDumpMode: c.defaultDumpMode });
    if (!decision.allowed) {
      if (this.log.debug > 4) this.log.message(`${c.listenFd} UDP>${c.listenFd}: recvfrom denied ${this.udpAddr(rinfo.address, rinfo.port)}`);
      return;
    }
    const origin = this.originFor(rinfo);
    origin.dumpMode = decision.dumpMode & 0xf;
    origin.lastActivity = Date.now();
    if (origin.pending) {
      if (origin.pending.length < MAX_PENDING) origin.pending.push(() => this.sendOut(origin, msg, rinfo));
      return;
    }
    this.sendOut(origin, msg, rinfo);
  }

  private sendOut(origin: Origin, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const c = this.config;
    if (this.log.debug > 4) this.log.message(`${c.listenFd} UDP>${origin.fd}: ${msg.length} bytes received from ${this.udpAddr(rinfo.address, rinfo.port)}`);
    const d = c.destination;
    origin.socket.send(msg, d.port, d.host, (err) => {
      const to = this.udpAddr(d.host, d.port);
      if (err) {
        this.log.message(`${c.listenFd} UDP>${origin.fd}: sendto failed err=${errnoOf(err)}: to ${to}`);
        return;
      }
      if (this.log.debug > 4) this.log.message(`${c.listenFd} UDP>${origin.fd}: ${msg.length} bytes sent to ${to}`);
      if (origin.dumpMode > 0) this.log.dump(udpDumpHead(c.listenFd, '>', origin.fd), msg, origin.dumpMode);
    });
  }

  private originFor(rinfo: dgram.RemoteInfo): Origin {
    const key = `${rinfo.address}|${rinfo.port}`;
    const found = this.origins.get(key);
    if (found) {
      // most recently used goes last
      this.origins.delete(key);
      this.origins.set(key, found);
      return found;
    }
    while (this.origins.size >= Math.max(1, this.config.maxOrigins)) {
      const oldest = this.origins.values().next().value as Origin;
      this.closeOrigin(oldest);
    }
    const socket = dgram.createSocket(this.config.destination.family === 6 ? 'udp6' : 'udp4');
    const origin: Origin = { key, socket, fd: -1, pending: [], address: rinfo.address, port: rinfo.port, lastActivity: Date.now(), dumpMode: 0 };
    socket.once('listening', () => {
      origin.fd = dgramFd(socket);
      if (this.log.debug > 3) this.log.message(`${this.config.listenFd} UDP ${origin.fd}: New origin ${this.udpAddr(rinfo.address, rinfo.port)}`);
      const work = origin.pending ?? [];
      origin.pending = undefined;
      for (const w of work) w();
    });
    socket.on('message', (msg, from) => this.inward(origin, msg, from));
    socket.on('error', (err) => {
      if (origin.pending) {
        this.log.message(`${this.config.listenFd} UDP: can't create datagram socket err=${errnoOf(err)}`);
        this.closeOrigin(origin);
      } else {
        this.log.message(`${this.config.listenFd} UDP<${origin.fd}: recvfrom failed err=${errnoOf(err)}`);
      }
    });
    socket.bind(0);
    this.origins.set(key, origin);
    return origin;
  }

  /** A reply from anyone to an origin's socket goes back to that origin's client. */
  private inward(origin: Origin, msg: Buffer, from: dgram.RemoteInfo): void {
    if (this.closed || this.origins.get(origin.key) !== origin) return;
    const c = this.config;
    if (this.log.debug > 4) this.log.message(`${c.listenFd} UDP<${origin.fd}: ${msg.length} bytes received from ${this.udpAddr(from.address, from.port)}`);
    c.listener.send(msg, origin.port, origin.address, (err) => {
      const to = this.udpAddr(origin.address, origin.port);
      if (err) {
        this.log.message(`${c.listenFd} UDP<${origin.fd}: sendto failed err=${errnoOf(err)}: to ${to}`);
        return;
      }
      if (this.log.debug > 4) this.log.message(`${c.listenFd} UDP<${origin.fd}: ${msg.length} bytes sent to ${to}`);
      if (origin.dumpMode > 0) this.log.dump(udpDumpHead(c.listenFd, '<', origin.fd), msg, origin.dumpMode);
    });
  }

  private closeOrigin(origin: Origin): void {
    if (this.origins.get(origin.key) !== origin) return;
    this.origins.delete(origin.key);
    if (this.log.debug > 2) this.log.message(`${this.config.listenFd} UDP ${origin.fd}: close`);
    try {
      origin.socket.close();
    } catch {
      // already closed
    }
  }

  private expire(): void {
    const now = Date.now();
    for (const origin of [...this.origins.values()]) if (now - origin.lastActivity > this.idleMs) this.closeOrigin(origin);
  }

  /** Closes every origin and the listening socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweep);
    for (const origin of this.origins.values()) {
      try {
        origin.socket.close();
      } catch {
        // already closed
      }
    }
    this.origins.clear();
    try {
      this.config.listener.close();
    } catch {
      // already closed
    }
  }
}
