// The I/O graph's memory: per tunnel and direction, bytes per second over the last hour, in a
// ring of one-second slots (like Wireshark's I/O graph). Fed by the relay's 'bytes' ticks; read
// by the dashboard as JSON (the whole hour) and as one point per second over SSE.
// Memory is fixed: 2 directions x `seconds` float64 slots per tunnel (57.6 KiB for an hour), and
// at most `maxTunnels` tunnels (default 128, so at most ~7.4 MiB).
// Direction names follow RelayStatus: "in" = from the client towards the service (the event's
// `up`), "out" = back to the client (`down`).
// Owns: the rings and their arithmetic. Must not: know about HTTP or the relay's objects.
import type { RelayEvents } from './events.js';

export interface IoSeries {
  tunnel: string;
  /** epoch second of the first point; point i is second `start + i` */
  start: number;
  in: number[];
  out: number[];
}

export interface IoPoint {
  /** the epoch second these bytes were counted in (the last complete second) */
  second: number;
  /** tunnel -> [bytes in, bytes out] during that second */
  tunnels: Record<string, [number, number]>;
}

export interface IoGraphOptions {
  /** slots per ring, one per second (default 3600 = one hour) */
  seconds?: number;
  /** tunnels tracked at most (default 128) */
  maxTunnels?: number;
  /** clock in milliseconds (tests) */
  now?: () => number;
}

class TunnelRing {
  readonly in: Float64Array;
  readonly out: Float64Array;
  /** the newest second the ring has been advanced to; slots after it hold stale data */
  head: number;
  /** the newest second that received bytes */
  lastActive: number;

  constructor(
    readonly size: number,
    second: number,
  ) {
    this.in = new Float64Array(size);
    this.out = new Float64Array(size);
    this.head = second;
    this.lastActive = second;
  }

  /** Moves the head forward to `second`, clearing the slots of the seconds skipped over. */
  advance(second: number): void {
    if (second <= this.head) return;
    if (second - this.head >= this.size) {
      this.in.fill(0);
      this.out.fill(0);
    } else {
      for (let s = this.head + 1; s <= second; s++) {
        const slot = s % this.size;
        this.in[slot] = 0;
        this.out[slot] = 0;
      }
    }
    this.head = second;
  }

  add(second: number, bytesIn: number, bytesOut: number): void {
    this.advance(second);
    // A tick that arrives late (clock step, slow event loop) still lands in its own second if
    // that second is inside the window; anything older is gone.
    if (this.head - second >= this.size) return;
    const slot = second % this.size;
    this.in[slot] = (this.in[slot] ?? 0) + bytesIn;
    this.out[slot] = (this.out[slot] ?? 0) + bytesOut;
    if (second > this.lastActive) this.lastActive = second;
  }

  value(second: number): [number, number] {
    if (second > this.head || this.head - second >= this.size) return [0, 0];
    const slot = second % this.size;
    return [this.in[slot] ?? 0, this.out[slot] ?? 0];
  }
}

export class IoGraph {
  readonly seconds: number;
  readonly maxTunnels: number;
  private readonly now: () => number;
  private readonly rings = new Map<string, TunnelRing>();
  /** ticks refused because the table was full of tunnels active within the window */
  droppedTicks = 0;

  constructor(options: IoGraphOptions = {}) {
    this.seconds = options.seconds ?? 3600;
    this.maxTunnels = options.maxTunnels ?? 128;
    this.now = options.now ?? Date.now;
    if (!Number.isInteger(this.seconds) || this.seconds < 2) throw new RangeError('IoGraph: seconds must be an integer >= 2');
    if (!Number.isInteger(this.maxTunnels) || this.maxTunnels < 1) throw new RangeError('IoGraph: maxTunnels must be an integer >= 1');
  }

  /** Subscribes to the bus; returns the unsubscribe function. */
  attach(events: RelayEvents): () => void {
    return events.on('bytes', (tick) => this.record(tick.tunnel, tick.up, tick.down));
  }

  /** Adds bytes moved in the second containing `atMs` (default now). */
  record(tunnel: string, bytesIn: number, bytesOut: number, atMs = this.now()): void {
    const good = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
    const second = Math.floor(atMs / 1000);
    let ring = this.rings.get(tunnel);
    if (!ring) {
      if (this.rings.size >= this.maxTunnels && !this.evictIdle(second)) {
        this.droppedTicks += 1;
        return;
      }
      ring = new TunnelRing(this.seconds, second);
      this.rings.set(tunnel, ring);
    }
    ring.add(second, good(bytesIn), good(bytesOut));
  }

  /** Frees the slot of a tunnel with no bytes inside the window, if there is one. */
  private evictIdle(second: number): boolean {
    let oldest: [string, TunnelRing] | undefined;
    for (const entry of this.rings) {
      if (!oldest || entry[1].lastActive < oldest[1].lastActive) oldest = entry;
    }
    if (oldest && second - oldest[1].lastActive >= this.seconds) {
      this.rings.delete(oldest[0]);
      return true;
    }
    return false;
  }

  tunnels(): string[] {
    return [...this.rings.keys()].sort();
  }

  /**
   * The window ending with the last complete second (the current one is still filling), oldest
   * first, zeros where nothing moved; undefined for a tunnel never seen.
   */
  series(tunnel: string, nowMs = this.now()): IoSeries | undefined {
    const ring = this.rings.get(tunnel);
    if (!ring) return undefined;
    return this.window(tunnel, nowMs, (second) => ring.value(second));
  }

  /** The same window for a tunnel that has moved no byte yet: all zeros. */
  quietSeries(tunnel: string, nowMs = this.now()): IoSeries {
    return this.window(tunnel, nowMs, () => [0, 0]);
  }

  private window(tunnel: string, nowMs: number, valueAt: (second: number) => readonly [number, number]): IoSeries {
    const last = Math.floor(nowMs / 1000) - 1;
    const start = last - this.seconds + 1;
    const bytesIn = new Array<number>(this.seconds);
    const bytesOut = new Array<number>(this.seconds);
    for (let i = 0; i < this.seconds; i++) {
      const [a, b] = valueAt(start + i);
      bytesIn[i] = a;
      bytesOut[i] = b;
    }
    return { tunnel, start, in: bytesIn, out: bytesOut };
  }

  /** The last complete second for every tracked tunnel (what SSE sends once a second). */
  latest(nowMs = this.now()): IoPoint {
    const second = Math.floor(nowMs / 1000) - 1;
    // no prototype: a tunnel named "__proto__" must stay an ordinary key
    const tunnels = Object.create(null) as Record<string, [number, number]>;
    for (const [name, ring] of this.rings) tunnels[name] = ring.value(second);
    return { second, tunnels };
  }

  forget(tunnel: string): void {
    this.rings.delete(tunnel);
  }
}
