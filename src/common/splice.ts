// Joins two duplex streams byte for byte: one pipeline per direction, so end-of-stream travels
// separately each way (half-close) and backpressure holds (a slow reader pauses the other side's
// reading instead of growing a buffer). Counts bytes each way and closes idle pairs.
// Owns: the data pump. Must not: know what the streams are (TCP, TLS, HTTP/2).
import { pipeline } from 'node:stream';
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

export interface SpliceHandle {
  counters: SpliceCounters;
  done: Promise<SpliceResult>;
  /** Ends both sides now (used by revocation, shutdown, idle timeout). */
  destroy(reason?: Error): void;
}

function isBenignClose(err: NodeJS.ErrnoException): boolean {
  return (
    err.code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    err.code === 'ECONNRESET' ||
    err.code === 'EPIPE' ||
    err.code === 'ERR_HTTP2_STREAM_ERROR' ||
    err.code === 'ERR_STREAM_DESTROYED'
  );
}

export function splice(a: Duplex, b: Duplex, options: { idleTimeoutMs?: number } = {}): SpliceHandle {
  const counters: SpliceCounters = { aToB: 0, bToA: 0, lastActivity: Date.now() };
  let firstError: Error | undefined;
  let pending = 2;
  let settle!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (settle = resolve));
  let idleTimer: NodeJS.Timeout | undefined;

  const destroyBoth = (err?: Error): void => {
    if (err && !firstError) firstError = err;
    a.destroy();
    b.destroy();
  };

  const finishOne = (err: NodeJS.ErrnoException | null): void => {
    if (err && !isBenignClose(err) && !firstError) firstError = err;
    if (err) destroyBoth();
    pending -= 1;
    if (pending === 0) {
      if (idleTimer) clearInterval(idleTimer);
      // Both directions ended: sockets and HTTP/2 streams close themselves once both sides have
      // ended; destroying them here could cut frames still queued for the wire.
      settle({ ...counters, error: firstError });
    }
  };

  // Two pipelines, the counters and the owners' handlers all listen for close/error/end on
  // the same streams: more than Node's warning threshold of 10, and all legitimate.
  a.setMaxListeners(Math.max(a.getMaxListeners(), 30));
  b.setMaxListeners(Math.max(b.getMaxListeners(), 30));
  a.on('data', (chunk: Buffer) => {
    counters.aToB += chunk.length;
    counters.lastActivity = Date.now();
  });
  b.on('data', (chunk: Buffer) => {
    counters.bToA += chunk.length;
    counters.lastActivity = Date.now();
  });
  pipeline(a, b, finishOne);
  pipeline(b, a, finishOne);

  const idle = options.idleTimeoutMs ?? 0;
  if (idle > 0) {
    idleTimer = setInterval(() => {
      if (Date.now() - counters.lastActivity >= idle) {
        destroyBoth(new Error(`idle for ${Math.round(idle / 1000)} s`));
      }
    }, Math.min(idle, 30_000));
    idleTimer.unref();
  }

  return { counters, done, destroy: (reason) => destroyBoth(reason) };
}
