// The live I/O graph's Server-Sent Events: once a second every subscriber gets the last complete
// second of every tracked tunnel, as one JSON `data:` line. Bounded: at most `maxClients`
// subscribers, and a subscriber that stops reading is cut once its unsent data passes
// `maxBufferedBytes`, so a slow browser never makes the relay buffer without limit.
// Subscribers are re-admitted every `recheckMs` (a revoked admin token ends its streams).
// Owns: the SSE framing and the subscriber set. Must not: decide access (the caller passes a
// recheck) or touch the relay.
import type { ServerResponse } from 'node:http';
import type { IoGraph } from './io-graph.js';

interface Subscriber {
  res: ServerResponse;
  stillAllowed: () => Promise<boolean>;
  checking: boolean;
}

export interface IoStreamOptions {
  maxClients?: number;
  maxBufferedBytes?: number;
  intervalMs?: number;
  recheckMs?: number;
}

export class IoStream {
  private readonly subscribers = new Set<Subscriber>();
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  readonly maxClients: number;
  private readonly maxBufferedBytes: number;
  private readonly intervalMs: number;
  private readonly recheckEvery: number;

  constructor(
    private readonly io: IoGraph,
    options: IoStreamOptions = {},
  ) {
    this.maxClients = options.maxClients ?? 32;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 256 * 1024;
    this.intervalMs = options.intervalMs ?? 1000;
    this.recheckEvery = Math.max(1, Math.round((options.recheckMs ?? 30_000) / this.intervalMs));
  }

  get size(): number {
    return this.subscribers.size;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Takes over `res` as an event stream; false (and nothing written) when full. */
  subscribe(res: ServerResponse, stillAllowed: () => Promise<boolean>, headers: Record<string, string>): boolean {
    if (this.subscribers.size >= this.maxClients) return false;
    res.writeHead(200, { ...headers, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    // the first point at once, so a new page does not wait a second for its first update
    res.write(`retry: 3000\n\n${this.frame()}`);
    const sub: Subscriber = { res, stillAllowed, checking: false };
    this.subscribers.add(sub);
    res.on('close', () => this.subscribers.delete(sub));
    return true;
  }

  private frame(): string {
    return `data: ${JSON.stringify(this.io.latest())}\n\n`;
  }

  private tick(): void {
    if (this.subscribers.size === 0) return;
    this.ticks += 1;
    const frame = this.frame();
    const recheck = this.ticks % this.recheckEvery === 0;
    for (const sub of this.subscribers) {
      if (sub.res.writableLength > this.maxBufferedBytes) {
        sub.res.destroy();
        this.subscribers.delete(sub);
        continue;
      }
      sub.res.write(frame);
      if (recheck && !sub.checking) {
        sub.checking = true;
        sub
          .stillAllowed()
          .catch(() => false)
          .then((ok) => {
            sub.checking = false;
            if (!ok) {
              this.subscribers.delete(sub);
              sub.res.end();
            }
          });
      }
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const sub of this.subscribers) sub.res.destroy();
    this.subscribers.clear();
  }
}
