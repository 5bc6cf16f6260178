// New connections per second: N parallel workers, each in a loop for a fixed time: open a TCP
// connection, send a small message, wait for it to come back from the echo service, half-close
// and wait for the far end's close. Only complete cycles count; failures are counted apart.
// Owns: the connection-churn client. Must not: start servers.
import net from 'node:net';
import { percentile } from './stats.ts';

export interface ConnRateOptions {
  workers: number;
  seconds: number;
  size: number;
}

export interface ConnRateResult {
  perSecond: number;
  completed: number;
  failed: number;
  /** median time of one open → exchange → close cycle, ms */
  p50ms: number;
  firstError: string | undefined;
}

/** One cycle; resolves true when the echo came back and the far end closed. */
function cycle(port: number, payload: Buffer): Promise<true> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
    let got = 0;
    const timer = setTimeout(() => socket.destroy(new Error('cycle took over 10 s')), 10_000);
    socket.on('data', (chunk: Buffer) => {
      got += chunk.length;
      if (got >= payload.length) socket.end();
    });
    socket.once('end', () => socket.destroy());
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (got >= payload.length) resolve(true);
      else reject(new Error(`closed after ${got} of ${payload.length} bytes`));
    });
    socket.write(payload);
  });
}

export async function measureConnRate(port: number, options: ConnRateOptions): Promise<ConnRateResult> {
  const payload = Buffer.alloc(options.size, 0x62);
  const deadline = Date.now() + options.seconds * 1000;
  const durations: number[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const t0 = process.hrtime.bigint();
      try {
        await cycle(port, payload);
        durations.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } catch (err) {
        failed += 1;
        firstError ??= (err as Error).message;
      }
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: options.workers }, worker));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  return { perSecond: durations.length / elapsed, completed: durations.length, failed, p50ms: percentile(durations, 50), firstError };
}
