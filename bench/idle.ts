// Memory per idle stream: the middle hop's resident memory (VmRSS) before and after holding N
// idle connections through a peer. Each connection first carries one byte to the echo service
// and back, so it is known to be open end to end, then stays silent. A warm-up connection
// opened before the baseline makes sure the client's session to the middle hop already exists.
// Owns: holding idle connections and the RSS arithmetic. Must not: start servers.
import net from 'node:net';
import { rssKiB, type Watched } from './procfs.ts';
import { sleep } from './procs.ts';

export interface IdleResult {
  streams: number;
  rssBeforeKiB: number;
  rssHeldKiB: number;
  rssAfterCloseKiB: number;
  kibPerStream: number;
  failed: number;
  firstError: string | undefined;
}

function openOne(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => socket.destroy(new Error('no echo within 20 s')), 20_000);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('data', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.write('x');
  });
}

async function openMany(port: number, n: number, concurrency: number): Promise<{ sockets: net.Socket[]; failed: number; firstError: string | undefined }> {
  const sockets: net.Socket[] = [];
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next += 1;
      try {
        const s = await openOne(port);
        s.on('error', () => undefined);
        sockets.push(s);
      } catch (err) {
        failed += 1;
        firstError ??= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { sockets, failed, firstError };
}

async function closeAll(sockets: net.Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.destroyed) return resolve();
          s.once('close', () => resolve());
          s.destroy();
        }),
    ),
  );
}

export async function measureIdle(port: number, middle: Watched, n: number, settleMs: number): Promise<IdleResult> {
  const warm = await openOne(port);
  await sleep(settleMs);
  const rssBeforeKiB = rssKiB(middle.pid, middle.tree);
  const { sockets, failed, firstError } = await openMany(port, n, 200);
  await sleep(settleMs);
  const rssHeldKiB = rssKiB(middle.pid, middle.tree);
  await closeAll([...sockets, warm]);
  await sleep(settleMs);
  const rssAfterCloseKiB = rssKiB(middle.pid, middle.tree);
  const streams = sockets.length;
  return {
    streams,
    rssBeforeKiB,
    rssHeldKiB,
    rssAfterCloseKiB,
    kibPerStream: streams > 0 ? (rssHeldKiB - rssBeforeKiB) / streams : Number.NaN,
    failed,
    firstError,
  };
}
