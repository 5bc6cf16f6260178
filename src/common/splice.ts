// Joins two duplex streams byte for byte. A plain pump per direction: 'data' -> write, pause the
// source while the destination's buffer is full, resume on 'drain'; end-of-stream is carried
// separately each way (half-close). Backpressure holds: a slow reader pauses the other side's
// reading instead of growing a buffer. Counts bytes each way; idle pairs are closed by one
// shared sweep per timeout value, not a timer per stream.
// Why not stream.pipeline: two pipelines cost ~25 KiB of closures per idle stream and half the
// connection rate (docs/BENCHMARKS.md, A/B notes); this pump does the same job in a few handlers.
// Shaping hooks in per direction (`throttleAToB`, `throttleBToA`): before a chunk is written the
// throttle is asked; when it says wait, the source is paused with that one chunk held, and the
// throttle's release writes it and resumes. A direction without a throttle runs the plain pump,
// unchanged: unshaped streams pay nothing for the hook.
// Owns: the data pump. Must not: know what the streams are (TCP, TLS, HTTP/2) or how a throttle
// decides.
import type { Duplex } from 'node:stream';

export interface SpliceCounters {
  /** bytes read from `a`, written to `b` */
  aToB: number;
  /** bytes read from `b`, written to `a` */
  bToA: number;
  lastActivity: number;
}

export interface SpliceResult extends SpliceCounters {
  error: Error | undefined;
}

/** Decides when a chunk may be forwarded (bandwidth shaping, src/guard/throttle.ts). */
export interface SpliceThrottle {
  /**
   * A chunk of `bytes` was read and is about to be written. True: write it now. False: the pump
   * holds it and pauses the source until the throttle calls `release` (once per false).
   */
  admit(bytes: number, release: () => void): boolean;
  /** The pair is finished: forget any pending release. */
  close(): void;
}

export interface SpliceOptions {
  idleTimeoutMs?: number;
  /** shapes the bytes read from `a` and written to `b` */
  throttleAToB?: SpliceThrottle;
  /** shapes the bytes read from `b` and written to `a` */
  throttleBToA?: SpliceThrottle;
}

export interface SpliceHandle {
  counters: SpliceCounters;
  done: Promise<SpliceResult>;
  /** Ends both sides now (used by revocation, shutdown, idle timeout). */
  destroy(reason?: Error): void;
}

const BENIGN = new Set(['ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE', 'ERR_HTTP2_STREAM_ERROR', 'ERR_STREAM_DESTROYED', 'ERR_HTTP2_INVALID_STREAM']);

function isBenign(err: Error): boolean {
  return BENIGN.has((err as NodeJS.ErrnoException).code ?? '');
}

interface Side {
  stream: Duplex;
  /** this side's readable ended (its peer sent end-of-stream) */
  readEnded: boolean;
  /** everything we wrote to this side was flushed after end() */
  writeFinished: boolean;
  /** shapes what is read from this side; set only on shaped pairs (no field on the others) */
  throttle?: SpliceThrottle;
}

/** One interval per idle timeout value sweeps every pair registered with it. */
const sweeps = new Map<number, { pairs: Set<{ counters: SpliceCounters; destroy: (e: Error) => void }>; timer: NodeJS.Timeout }>();

function watchIdle(idleMs: number, pair: { counters: SpliceCounters; destroy: (e: Error) => void }): () => void {
  let sweep = sweeps.get(idleMs);
  if (!sweep) {
    const pairs = new Set<{ counters: SpliceCounters; destroy: (e: Error) => void }>();
    const timer = setInterval(() => {
      const now = Date.now();
      for (const p of pairs) {
        if (now - p.counters.lastActivity >= idleMs) p.destroy(new Error(`idle for ${Math.round(idleMs / 1000)} s`));
      }
    }, Math.max(50, Math.min(idleMs / 4, 30_000)));
    timer.unref();
    sweep = { pairs, timer };
    sweeps.set(idleMs, sweep);
  }
  sweep.pairs.add(pair);
  const owned = sweep;
  return () => {
    owned.pairs.delete(pair);
    if (owned.pairs.size === 0) {
      clearInterval(owned.timer);
      sweeps.delete(idleMs);
    }
  };
}

/** What a shaped pump needs of its pair. */
interface PairState {
  counters: SpliceCounters;
  isSettled(): boolean;
  checkDone(): void;
}

/**
 * The pump with a throttle in front of each write. It lives outside splice() so that an
 * unshaped pair does not even allocate it. The source is paused for two reasons that must both
 * clear before it resumes: a full destination (until 'drain') and a held chunk (until the
 * throttle's release). At most one chunk is held; an end that arrives meanwhile waits for it.
 */
function shapedPump(from: Side, to: Side, count: (n: number) => void, throttle: SpliceThrottle, pair: PairState): void {
  let corked = false;
  const uncork = (): void => {
    corked = false;
    to.stream.uncork();
  };
  let held: Buffer | undefined;
  let awaitingDrain = false;
  let endAfterHeld = false;
  const forward = (chunk: Buffer): void => {
    if (!corked) {
      corked = true;
      to.stream.cork();
      process.nextTick(uncork);
    }
    if (!to.stream.write(chunk)) {
      awaitingDrain = true;
      from.stream.pause();
    }
  };
  const endDestination = (): void => {
    to.stream.end(() => {
      to.writeFinished = true;
      pair.checkDone();
    });
  };
  const release = (): void => {
    const chunk = held;
    held = undefined;
    if (chunk === undefined || pair.isSettled()) return;
    pair.counters.lastActivity = Date.now();
    forward(chunk);
    if (endAfterHeld) endDestination();
    else if (!awaitingDrain) from.stream.resume();
  };
  from.stream.on('data', (chunk: Buffer) => {
    count(chunk.length);
    pair.counters.lastActivity = Date.now();
    if (held !== undefined) {
      // Node emits no 'data' after pause(); should a stream ever do so, keep the bytes in
      // order with the held chunk rather than lose them (they go uncharged).
      held = Buffer.concat([held, chunk]);
      return;
    }
    if (throttle.admit(chunk.length, release)) {
      forward(chunk);
      return;
    }
    held = chunk;
    from.stream.pause();
  });
  to.stream.on('drain', () => {
    awaitingDrain = false;
    if (held === undefined) from.stream.resume();
  });
  from.stream.once('end', () => {
    from.readEnded = true;
    // The end must follow the held chunk, not overtake it.
    if (held !== undefined) endAfterHeld = true;
    else endDestination();
  });
}

export function splice(a: Duplex, b: Duplex, options: SpliceOptions = {}): SpliceHandle {
  const counters: SpliceCounters = { aToB: 0, bToA: 0, lastActivity: Date.now() };
  const sideA: Side = { stream: a, readEnded: false, writeFinished: false };
  const sideB: Side = { stream: b, readEnded: false, writeFinished: false };
  let firstError: Error | undefined;
  let settled = false;
  let settle!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (settle = resolve));
  let unwatch: (() => void) | undefined;

  const finish = (): void => {
    if (settled) return;
    settled = true;
    unwatch?.();
    // However the pair ends, its throttles forget it (a held chunk is dropped with the pair).
    sideA.throttle?.close();
    sideB.throttle?.close();
    settle({ ...counters, error: firstError });
  };

  const fail = (err: Error | undefined): void => {
    if (err && !firstError && !isBenign(err)) firstError = err;
    a.destroy();
    b.destroy();
    finish();
  };

  const complete = (side: Side): boolean => side.readEnded && side.writeFinished;
  const checkDone = (): void => {
    if (complete(sideA) && complete(sideB)) finish();
  };

  const pump = (from: Side, to: Side, count: (n: number) => void, throttle: SpliceThrottle | undefined): void => {
    if (throttle) {
      from.throttle = throttle;
      shapedPump(from, to, count, throttle, { counters, isSettled: () => settled, checkDone });
      return;
    }
    // Chunks that arrive in one tick leave in one write: HTTP/2 frames straddle 16 KiB TLS
    // records, so each frame arrives in two pieces; corking until the end of the tick joins
    // them (measured: -7 to -9 % CPU per byte, about +11 % throughput, no added round trip).
    let corked = false;
    const uncork = (): void => {
      corked = false;
      to.stream.uncork();
    };
    from.stream.on('data', (chunk: Buffer) => {
      count(chunk.length);
      counters.lastActivity = Date.now();
      if (!corked) {
        corked = true;
        to.stream.cork();
        process.nextTick(uncork);
      }
      if (!to.stream.write(chunk)) from.stream.pause();
    });
    to.stream.on('drain', () => from.stream.resume());
    from.stream.once('end', () => {
      from.readEnded = true;
      to.stream.end(() => {
        to.writeFinished = true;
        checkDone();
      });
    });
  };

  pump(sideA, sideB, (n) => (counters.aToB += n), options.throttleAToB);
  pump(sideB, sideA, (n) => (counters.bToA += n), options.throttleBToA);
  for (const side of [sideA, sideB]) {
    side.stream.on('error', (err: Error) => fail(err));
    side.stream.once('close', () => {
      // A side that closes after ending both ways is the normal finish; before that, the pair
      // is broken and the other side must not wait for bytes that will never come.
      if (complete(side)) checkDone();
      else fail(undefined);
    });
  }

  const destroy = (reason?: Error): void => {
    if (reason && !firstError) firstError = reason;
    fail(undefined);
  };
  const idle = options.idleTimeoutMs ?? 0;
  if (idle > 0) unwatch = watchIdle(idle, { counters, destroy });

  // Sources may have been handed over paused (pauseOnConnect, head parsing): start the flow.
  a.resume();
  b.resume();
  return { counters, done, destroy };
}
