// The bandwidth model: one bucket with a baseline rate that is always available and burst credits
// that are earned while traffic stays under the baseline and spent to go up to a maximum rate,
// the way cloud instances meter their network (AWS "burstable" credits).
//
// Two ledgers, both in bytes:
// - `credits` fills at the baseline rate and drains by every byte sent, capped at `creditCap`.
//   Sending under the baseline earns the difference; sending above it spends the difference.
//   When it reaches zero the bucket is *exhausted*: the allowed rate drops to the baseline
//   (at which credits neither grow nor shrink). It is *restored* once credits climb back above
//   a small threshold, which only happens while traffic stays under the baseline.
// - `tokens` paces the bytes at the allowed rate (max while credits last, else baseline). It
//   holds at most `paceWindowMs` of traffic, so an idle bucket cannot hand out a spike beyond
//   that; it may go negative by one chunk ("debt", see throttle.ts): a chunk is let through
//   whenever tokens are not negative, whole, and the next one waits until the debt is repaid.
//   Over any interval the bytes sent stay within rate × time + window + one chunk.
//
// Pure: no timers, no I/O. Time comes from an injectable clock in milliseconds (monotonic by
// default, on the epoch scale so transition times convert to Dates). Transitions are reported
// through a callback with the exact time they happened (a restoration is dated when the credits
// crossed the threshold, not when somebody next looked).
// Owns: the arithmetic of one bucket. Must not: touch streams, timers, the store or events.
import { WarpstoneError } from '../common/errors.js';

export interface ShaperLimit {
  /** always available, bytes per second (> 0) */
  baselineBytesPerSecond: number;
  /** reachable while credits last, bytes per second (>= baseline) */
  maxBytesPerSecond: number;
  /** the most credit a bucket can hold, in bytes above the baseline (0 = a plain rate limit) */
  creditCapBytes: number;
}

/** `bursting`: above the baseline, paid by credits. `baseline`: within the baseline (by choice or
 * because credits ran out: see `exhausted`). `idle`: nothing sent for a second. */
export type ShaperState = 'bursting' | 'baseline' | 'idle';

export interface CreditTransition {
  kind: 'exhausted' | 'restored';
  /** clock time (ms) at which it happened */
  atMs: number;
  baselineBytesPerSecond: number;
}

export interface BucketSnapshot {
  baselineBytesPerSecond: number;
  maxBytesPerSecond: number;
  creditCapBytes: number;
  /** whole bytes of credit now (never shown below 0) */
  credits: number;
  /** the rate the bucket lets through now: max while credits last, else the baseline */
  allowedBytesPerSecond: number;
  /** bytes per second actually sent, averaged over the last `measureWindowMs` */
  measuredBytesPerSecond: number;
  /** the same over the last second (what `state` is judged on) */
  recentBytesPerSecond: number;
  measureWindowMs: number;
  state: ShaperState;
  exhausted: boolean;
  /** bytes charged to this bucket since it was created */
  totalBytes: number;
  /** at the current drain, how long credits last (bursting only; else null), seconds */
  secondsOfCreditLeft: number | null;
}

export interface ShaperOptions {
  /** milliseconds; default: monotonic time on the epoch scale */
  clock?: () => number;
  /** credits a new bucket starts with; default: the full cap (like a freshly launched instance) */
  initialCredits?: number;
  /** credits must climb back to this fraction of the cap before bursting resumes; default 0.05 */
  restoreFraction?: number;
  /** pacing depth, in milliseconds of traffic at the allowed rate; default 50 */
  paceWindowMs?: number;
  /** window of the measured rate; default 5000 */
  measureWindowMs?: number;
  onTransition?: (transition: CreditTransition) => void;
}

/** A limit that cannot be modelled (non-positive baseline, max under baseline, ...). */
export class LimitInvalid extends WarpstoneError {
  constructor(message: string) {
    super('WS_LIMIT_INVALID', message);
  }
}

/** The largest rate or size accepted: beyond it doubles lose byte precision over a day. */
export const MAX_LIMIT_VALUE = 2 ** 50;

/** Returns the first problem with a limit as a sentence, or undefined when it is usable. */
export function limitProblem(limit: ShaperLimit): string | undefined {
  const { baselineBytesPerSecond: base, maxBytesPerSecond: max, creditCapBytes: cap } = limit;
  const finite = (v: number): boolean => Number.isFinite(v) && v <= MAX_LIMIT_VALUE;
  if (!finite(base) || base <= 0) return `baseline must be a positive rate, got ${base} bytes/s`;
  if (!finite(max) || max < base) return `max (${max} bytes/s) must be at least the baseline (${base} bytes/s)`;
  if (!finite(cap) || cap < 0) return `credit cap must be 0 or more bytes, got ${cap}`;
  return undefined;
}

export function assertLimit(limit: ShaperLimit): void {
  const problem = limitProblem(limit);
  if (problem) throw new LimitInvalid(problem);
}

export const defaultClock = (): number => performance.timeOrigin + performance.now();

/** Traffic histogram for the measured rate: fixed slots, no allocation per byte or per chunk. */
const BIN_MS = 250;
const IDLE_AFTER_MS = 1_000;

export class CreditBucket {
  private limit: ShaperLimit;
  private readonly clock: () => number;
  private readonly restoreFraction: number;
  private readonly paceWindowMs: number;
  private readonly measureWindowMs: number;
  private readonly onTransition: ((t: CreditTransition) => void) | undefined;
  private credits: number;
  private tokens: number;
  private exhaustedNow = false;
  /** an 'exhausted' went out and no 'restored' yet: only such a pair is reported */
  private announced = false;
  private last: number;
  private readonly createdAt: number;
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private total = 0;
  private readonly binIndex: Float64Array;
  private readonly binBytes: Float64Array;

  constructor(limit: ShaperLimit, options: ShaperOptions = {}) {
    assertLimit(limit);
    this.limit = { ...limit };
    this.clock = options.clock ?? defaultClock;
    this.restoreFraction = options.restoreFraction ?? 0.05;
    this.paceWindowMs = options.paceWindowMs ?? 50;
    this.measureWindowMs = options.measureWindowMs ?? 5_000;
    this.onTransition = options.onTransition;
    const slots = Math.ceil(this.measureWindowMs / BIN_MS) + 2;
    this.binIndex = new Float64Array(slots).fill(-1);
    this.binBytes = new Float64Array(slots);
    this.last = this.createdAt = this.clock();
    this.credits = Math.min(limit.creditCapBytes, Math.max(0, options.initialCredits ?? limit.creditCapBytes));
    // A bucket that starts without credits starts at the baseline (nothing to burst with),
    // quietly: nothing ran out, so nothing is announced.
    if (this.burstable() && this.credits <= 0) this.exhaustedNow = true;
    this.tokens = this.depth();
  }

  /** Bursting needs both headroom above the baseline and somewhere to keep credits. */
  private burstable(): boolean {
    return this.limit.creditCapBytes > 0 && this.limit.maxBytesPerSecond > this.limit.baselineBytesPerSecond;
  }

  private allowed(): number {
    return this.burstable() && !this.exhaustedNow ? this.limit.maxBytesPerSecond : this.limit.baselineBytesPerSecond;
  }

  private depth(): number {
    return (this.allowed() * this.paceWindowMs) / 1000;
  }

  private restoreAt(): number {
    const cap = this.limit.creditCapBytes;
    return Math.min(cap, Math.max(cap * this.restoreFraction, 1));
  }

  /** Brings both ledgers up to now. */
  private advance(now: number): void {
    const dtMs = now - this.last;
    if (!(dtMs > 0)) return; // a clock that stands still or steps back earns nothing
    const from = this.last;
    this.last = now;
    const base = this.limit.baselineBytesPerSecond;
    this.tokens = Math.min(this.depth(), this.tokens + (this.allowed() * dtMs) / 1000);
    const before = this.credits;
    this.credits = Math.min(this.limit.creditCapBytes, before + (base * dtMs) / 1000);
    if (this.exhaustedNow && this.burstable() && this.credits >= this.restoreAt()) {
      // Credits grew linearly over the interval: date the crossing exactly.
      const crossedAt = from + ((this.restoreAt() - before) / base) * 1000;
      this.setExhausted(false, Math.min(now, Math.max(from, crossedAt)));
    }
  }

  private setExhausted(exhausted: boolean, atMs: number): void {
    if (this.exhaustedNow === exhausted) return;
    this.exhaustedNow = exhausted;
    // The pace depth follows the rate: falling to the baseline takes the max-rate depth away.
    this.tokens = Math.min(this.tokens, this.depth());
    if (!exhausted && !this.announced) return;
    this.announced = exhausted;
    this.onTransition?.({ kind: exhausted ? 'exhausted' : 'restored', atMs, baselineBytesPerSecond: this.limit.baselineBytesPerSecond });
  }

  /** True when a chunk may go now (the pace is not in debt). */
  ready(): boolean {
    this.advance(this.clock());
    return this.tokens >= 0;
  }

  /** Milliseconds until `ready()` turns true at the current rate (0 when it already is). */
  msUntilReady(): number {
    this.advance(this.clock());
    if (this.tokens >= 0) return 0;
    return Math.ceil((-this.tokens / this.allowed()) * 1000);
  }

  /** Charges `bytes` that are being sent now; may leave the pace in debt (one chunk at most,
   * when callers only take while `ready()`). */
  take(bytes: number): void {
    const now = this.clock();
    this.advance(now);
    this.tokens -= bytes;
    this.credits -= bytes;
    this.total += bytes;
    this.lastSentAt = now;
    this.record(now, bytes);
    if (this.burstable() && !this.exhaustedNow && this.credits <= 0) this.setExhausted(true, now);
  }

  /** New parameters for the same bucket: credits are kept (clamped to the new cap). */
  reconfigure(limit: ShaperLimit): void {
    assertLimit(limit);
    const now = this.clock();
    this.advance(now);
    const couldBurst = this.burstable();
    this.limit = { ...limit };
    this.credits = Math.min(this.credits, limit.creditCapBytes);
    this.tokens = Math.min(this.tokens, this.depth());
    if (this.exhaustedNow && (!this.burstable() || this.credits >= this.restoreAt())) this.setExhausted(false, now);
    else if (!this.exhaustedNow && this.burstable() && this.credits <= 0) {
      // A plain limit that gains bursting starts without credits, like a new bucket: quietly.
      if (couldBurst) this.setExhausted(true, now);
      else this.exhaustedNow = true;
    }
  }

  /** The bucket is going away: an open exhaustion is closed so alerts do not hang open. */
  retire(): void {
    if (this.exhaustedNow) this.setExhausted(false, this.clock());
  }

  sameLimit(limit: ShaperLimit): boolean {
    return (
      limit.baselineBytesPerSecond === this.limit.baselineBytesPerSecond &&
      limit.maxBytesPerSecond === this.limit.maxBytesPerSecond &&
      limit.creditCapBytes === this.limit.creditCapBytes
    );
  }

  private record(now: number, bytes: number): void {
    const index = Math.floor(now / BIN_MS);
    const slot = index % this.binIndex.length;
    if (this.binIndex[slot] !== index) {
      this.binIndex[slot] = index;
      this.binBytes[slot] = 0;
    }
    this.binBytes[slot] = (this.binBytes[slot] ?? 0) + bytes;
  }

  /** Bytes per second over the last `windowMs` (whole bins), shortened for a young bucket. */
  private rateOver(now: number, windowMs: number): number {
    const current = Math.floor(now / BIN_MS);
    const first = current - Math.max(0, Math.ceil(windowMs / BIN_MS) - 1);
    let bytes = 0;
    for (let index = first; index <= current; index++) {
      const slot = index % this.binIndex.length;
      if (this.binIndex[slot] === index) bytes += this.binBytes[slot] ?? 0;
    }
    const spanMs = Math.min(now - first * BIN_MS, now - this.createdAt);
    return spanMs > 0 ? (bytes * 1000) / spanMs : 0;
  }

  snapshot(): BucketSnapshot {
    const now = this.clock();
    this.advance(now);
    const base = this.limit.baselineBytesPerSecond;
    const recent = this.rateOver(now, IDLE_AFTER_MS);
    let state: ShaperState;
    if (now - this.lastSentAt > IDLE_AFTER_MS) state = 'idle';
    else if (!this.burstable() || this.exhaustedNow || recent <= base) state = 'baseline';
    else state = 'bursting';
    const drain = recent - base;
    return {
      baselineBytesPerSecond: base,
      maxBytesPerSecond: this.limit.maxBytesPerSecond,
      creditCapBytes: this.limit.creditCapBytes,
      credits: Math.max(0, Math.floor(this.credits)),
      allowedBytesPerSecond: this.allowed(),
      measuredBytesPerSecond: Math.round(this.rateOver(now, this.measureWindowMs)),
      recentBytesPerSecond: Math.round(recent),
      measureWindowMs: this.measureWindowMs,
      state,
      exhausted: this.exhaustedNow,
      totalBytes: this.total,
      secondsOfCreditLeft: state === 'bursting' && drain > 0 ? Math.max(0, this.credits) / drain : null,
    };
  }
}
