// Shaping applied to live streams: the registry of buckets (one per limit), and the
// per-stream gate that splice consults before forwarding each chunk.
//
// How a chunk goes through: the pump reads a chunk and asks the stream's gate. The gate passes the
// chunk through its buckets in order (tunnel, then user); each bucket charges it at once if its
// pace is not in debt and nobody is queued before it, otherwise the stream joins that bucket's
// FIFO queue and the pump pauses its source (reading stops, so TCP or HTTP/2 flow control pushes
// back on the sender). Each bucket has at most one timer, armed for when its debt is repaid; it
// then lets queued streams go, one chunk each in arrival order, while the bucket allows. So
// streams of one bucket share it chunk by chunk, a paused stream holds exactly one chunk, and
// nothing is dropped.
//
// Large chunks go into debt rather than being split: a chunk is charged whole as soon as the
// pace is not negative, and the next chunk of that bucket waits until the debt is repaid. The
// long-run rate stays exact, the overshoot is bounded by one chunk per bucket (a socket read is
// at most 64 KiB), and there is no extra write, copy or frame per chunk that splitting would cost.
//
// One bucket per limit (scope + name) counts the bytes of both directions together: a limit of
// 10 Mbit/s is 10 Mbit/s in total, like the "bytes" a tunnel or user is billed for.
//
// Limits apply to streams opened after they are set; changing a limit's numbers changes the same
// buckets (live streams follow, credits are kept); removing a limit releases the streams waiting
// on it, which then run unshaped.
// Owns: buckets per limit, gates per stream, timers. Must not: read the store, emit relay events
// itself (it reports transitions through a callback), or know what the streams carry.
import type { LimitRecord, LimitScope } from '../store/ops-store.js';
import type { SpliceThrottle } from '../common/splice.js';
import type { ShapingSnapshot as OpsShapingSnapshot } from '../ops/view.js';
import { CreditBucket, defaultClock, limitProblem, type BucketSnapshot, type CreditTransition, type ShaperOptions } from './shaper.js';

export interface CreditsEvent {
  kind: 'credits-exhausted' | 'credits-restored';
  time: Date;
  scope: LimitScope;
  name: string;
  baselineBytesPerSecond: number;
}

export interface ShapingSnapshot extends BucketSnapshot {
  scope: LimitScope;
  name: string;
  /** live streams charged to this bucket */
  streams: number;
  /** stream directions paused now, each holding one chunk, waiting for this bucket */
  waiting: number;
}

/** Timer functions, injectable so tests can run the registry on simulated time. */
export interface TimerApi {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: TimerApi = {
  set: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // Waiting streams keep their sockets, and the sockets keep the process alive; the timer
    // alone must not delay an exit.
    t.unref();
    return t;
  },
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface ShapingRegistryOptions {
  clock?: () => number;
  timers?: TimerApi;
  /** credits-exhausted / credits-restored, dated when they happened */
  onCredits?: (event: CreditsEvent) => void;
  /** a limit record that cannot be applied (the others still are) */
  onInvalid?: (record: LimitRecord, problem: string) => void;
  /** passed to every bucket (restore threshold, pacing window, initial credits, ...) */
  bucket?: Omit<ShaperOptions, 'clock' | 'onTransition'>;
}

/** What applyLimits changed, for the relay's log line. */
export interface ApplyResult {
  added: string[];
  changed: string[];
  removed: string[];
  kept: string[];
  invalid: string[];
}

/** A stream waiting on a bucket. One per gate, reused for every chunk: no allocation per chunk. */
interface Waiter {
  readonly bytes: number;
  /** the bucket charged this waiter's chunk; carry on */
  proceed(): void;
}

/** One bucket with its queue and its single timer. */
class ThrottledBucket {
  private readonly waiters = new Set<Waiter>();
  private timer: unknown;
  private retired = false;
  streams = 0;

  constructor(
    readonly scope: LimitScope,
    readonly name: string,
    readonly model: CreditBucket,
    private readonly timers: TimerApi,
  ) {}

  /** True when `bytes` were charged now; false when the waiter was queued (proceed() follows). */
  admit(waiter: Waiter, bytes: number): boolean {
    if (this.retired) return true;
    if (this.waiters.size === 0 && this.model.ready()) {
      this.model.take(bytes);
      return true;
    }
    this.waiters.add(waiter);
    this.arm();
    return false;
  }

  cancel(waiter: Waiter): void {
    if (!this.waiters.delete(waiter) || this.waiters.size > 0) return;
    this.disarm();
  }

  get waiting(): number {
    return this.waiters.size;
  }

  get armed(): boolean {
    return this.timer !== undefined;
  }

  private arm(): void {
    if (this.timer !== undefined || this.waiters.size === 0) return;
    this.timer = this.timers.set(this.release, Math.max(1, this.model.msUntilReady()));
  }

  private disarm(): void {
    if (this.timer === undefined) return;
    this.timers.clear(this.timer);
    this.timer = undefined;
  }

  /** The timer: let queued streams go in order while the bucket allows, then re-arm. */
  private readonly release = (): void => {
    this.timer = undefined;
    try {
      for (const waiter of this.waiters) {
        if (!this.model.ready()) break;
        this.waiters.delete(waiter);
        this.model.take(waiter.bytes);
        waiter.proceed();
      }
    } finally {
      // whatever one stream did, the others still waiting get their timer
      this.arm();
    }
  };

  /** The limit is gone: everyone waiting goes now, uncharged, and later chunks pass freely. */
  retire(): void {
    this.retired = true;
    this.disarm();
    this.model.retire();
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiting) waiter.proceed();
  }
}

/** Counts a stream once in its buckets although it has a gate per direction. */
class StreamTicket {
  private open = 2;
  constructor(private readonly buckets: readonly ThrottledBucket[]) {
    for (const bucket of buckets) bucket.streams++;
  }
  gateClosed(): void {
    if (--this.open === 0) for (const bucket of this.buckets) bucket.streams--;
  }
}

/** A stream's gate for one direction: its buckets, in order (tunnel, then user). */
class StreamGate implements SpliceThrottle, Waiter {
  bytes = 0;
  private stage = 0;
  private waitingOn: ThrottledBucket | undefined;
  private release: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly buckets: readonly ThrottledBucket[],
    private readonly ticket: StreamTicket,
  ) {}

  admit(bytes: number, release: () => void): boolean {
    if (this.closed) return true;
    this.bytes = bytes;
    this.stage = 0;
    if (this.pass()) return true;
    this.release = release;
    return false;
  }

  /** Goes through the remaining buckets; false while one of them has queued this gate. */
  private pass(): boolean {
    while (this.stage < this.buckets.length) {
      const bucket = this.buckets[this.stage] as ThrottledBucket;
      if (!bucket.admit(this, this.bytes)) {
        this.waitingOn = bucket;
        return false;
      }
      this.stage++;
    }
    return true;
  }

  proceed(): void {
    this.waitingOn = undefined;
    this.stage++;
    if (this.closed || !this.pass()) return;
    const release = this.release;
    this.release = undefined;
    release?.();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waitingOn?.cancel(this);
    this.waitingOn = undefined;
    this.release = undefined;
    this.ticket.gateClosed();
  }
}

interface LimitEntry {
  record: LimitRecord;
  bucket: ThrottledBucket;
}

const keyOf = (scope: LimitScope, name: string): string => `${scope}:${name}`;

export class ShapingRegistry {
  private readonly limits = new Map<string, LimitEntry>();
  private readonly clock: () => number;
  private readonly timers: TimerApi;

  constructor(private readonly options: ShapingRegistryOptions = {}) {
    this.clock = options.clock ?? defaultClock;
    this.timers = options.timers ?? realTimers;
  }

  /**
   * Makes the registry hold exactly these limits. Unchanged limits keep their buckets (and so
   * their credits); changed ones are reconfigured in place (credits kept, clamped to the new
   * cap); missing ones are retired. An invalid record is reported and skipped; if it replaces
   * a valid one, the previous numbers stay in force.
   */
  applyLimits(records: readonly LimitRecord[]): ApplyResult {
    const result: ApplyResult = { added: [], changed: [], removed: [], kept: [], invalid: [] };
    const wanted = new Map<string, LimitRecord>();
    for (const record of records) {
      const key = keyOf(record.scope, record.name);
      const problem = limitProblem(record);
      if (problem) {
        result.invalid.push(key);
        this.options.onInvalid?.(record, problem);
        const previous = this.limits.get(key);
        if (previous) wanted.set(key, previous.record);
        continue;
      }
      wanted.set(key, record);
    }
    for (const [key, entry] of this.limits) {
      if (wanted.has(key)) continue;
      entry.bucket.retire();
      this.limits.delete(key);
      result.removed.push(key);
    }
    for (const [key, record] of wanted) {
      const entry = this.limits.get(key);
      if (!entry) {
        this.limits.set(key, { record: { ...record }, bucket: this.bucket(record) });
        result.added.push(key);
      } else if (entry.bucket.model.sameLimit(record)) {
        result.kept.push(key);
      } else {
        entry.bucket.model.reconfigure(record);
        entry.record = { ...record };
        result.changed.push(key);
      }
    }
    return result;
  }

  private bucket(record: LimitRecord): ThrottledBucket {
    const { scope, name } = record;
    const onTransition = (t: CreditTransition): void => {
      this.options.onCredits?.({
        kind: t.kind === 'exhausted' ? 'credits-exhausted' : 'credits-restored',
        time: new Date(t.atMs),
        scope,
        name,
        baselineBytesPerSecond: t.baselineBytesPerSecond,
      });
    };
    const model = new CreditBucket(record, { ...this.options.bucket, clock: this.clock, onTransition });
    return new ThrottledBucket(scope, name, model, this.timers);
  }

  /**
   * The throttles for one new stream, or undefined when no limit applies (then pass nothing to
   * splice: an unshaped stream costs nothing). `up` shapes user -> service, `down` the other way.
   * Each returned throttle must reach splice (which closes it when the stream ends).
   */
  forStream(tunnel: string, user: string): { up: SpliceThrottle; down: SpliceThrottle } | undefined {
    const entries = [this.limits.get(keyOf('tunnel', tunnel)), this.limits.get(keyOf('user', user))].filter((e): e is LimitEntry => e !== undefined);
    if (entries.length === 0) return undefined;
    const buckets = entries.map((e) => e.bucket);
    const ticket = new StreamTicket(buckets);
    return { up: new StreamGate(buckets, ticket), down: new StreamGate(buckets, ticket) };
  }

  /** Every bucket, for `status`, metrics and the dashboard (advances the buckets to now, which
   * also reports restorations that happened while nobody sent). */
  snapshot(): ShapingSnapshot[] {
    const out: ShapingSnapshot[] = [];
    for (const { bucket } of this.limits.values()) {
      out.push({ scope: bucket.scope, name: bucket.name, streams: bucket.streams, waiting: bucket.waiting, ...bucket.model.snapshot() });
    }
    return out;
  }

  /** The same, in the shape the ops side reads (OpsView.shaping: metrics, dashboard). */
  opsSnapshot(): OpsShapingSnapshot[] {
    return this.snapshot().map((s) => ({
      scope: s.scope,
      name: s.name,
      credits: s.credits,
      creditCap: s.creditCapBytes,
      rateBytesPerSecond: s.recentBytesPerSecond,
      state: s.allowedBytesPerSecond > s.baselineBytesPerSecond ? 'burst' : 'baseline',
    }));
  }

  /** Armed timers across all buckets (at most one per bucket). */
  armedTimers(): number {
    let n = 0;
    for (const { bucket } of this.limits.values()) if (bucket.armed) n++;
    return n;
  }

  /** Retires every bucket (relay shutdown): waiting streams are released. */
  close(): void {
    this.applyLimits([]);
  }
}
