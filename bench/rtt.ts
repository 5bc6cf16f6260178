// Round-trip latency: one TCP connection (noDelay), a fixed-size message sent, the same number
// of bytes awaited back from the echo service, repeated. Warm-up round trips are not counted.
// Owns: the ping-pong client. Must not: start servers.
import net from 'node:net';
import { percentile, mean } from './stats.ts';

export interface RttOptions {
  size: number;
  warmup: number;
  count: number;
}

export interface RttResult {
  p50: number;
  p99: number;
  mean: number;
  count: number;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Sends `payload`, resolves once as many bytes came back. */
function once(socket: net.Socket, payload: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (chunk: Buffer): void => {
      got += chunk.length;
      if (got >= payload.length) {
        socket.off('data', onData);
        socket.off('close', onClose);
        resolve();
      }
    };
    const onClose = (): void => reject(new Error('connection closed during a round trip'));
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(payload);
  });
}

export async function measureRtt(port: number, options: RttOptions): Promise<RttResult> {
  const socket = await connect(port);
  socket.on('error', () => undefined);
  const payload = Buffer.alloc(options.size, 0x61);
  const samples: number[] = [];
  try {
    for (let i = 0; i < options.warmup + options.count; i++) {
      const t0 = process.hrtime.bigint();
      await once(socket, payload);
      if (i >= options.warmup) samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    socket.destroy();
  }
  return { p50: percentile(samples, 50), p99: percentile(samples, 99), mean: mean(samples), count: samples.length };
}
