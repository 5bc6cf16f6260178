// Shared by the repeater's differential tests: start the real stone or `warpstone stone` with
// the same arguments, and an echo service that answers each expected payload in one write once
// all of it has arrived (so stone's read chunking, and so its dump lines, are deterministic).
import net from 'node:net';
import { BIN, ROOT, type Cleanup } from '../helpers/harness.ts';
import { spawnProgram, type Program } from '../helpers/programs.ts';

export type Which = 'stone' | 'warpstone';

/** `stone ARGS` or `warpstone stone ARGS` (from the sources), as a Program. */
export function startRepeater(cleanup: Cleanup, which: Which, args: string[]): Program {
  if (which === 'stone') return spawnProgram(cleanup, 'stone', args);
  process.env.WARPSTONE_FROM_SOURCE = '1';
  return spawnProgram(cleanup, process.execPath, [BIN, 'stone', ...args], { cwd: ROOT });
}

/** An echo service told in advance how many bytes each answer carries. */
export async function sizedEcho(cleanup: Cleanup): Promise<{ port: number; expect(size: number): void }> {
  const sizes: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    let held = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      held = Buffer.concat([held, d]);
      while (sizes.length > 0 && held.length >= (sizes[0] as number)) {
        const n = sizes.shift() as number;
        socket.write(held.subarray(0, n));
        held = held.subarray(n);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, expect: (size) => sizes.push(size) };
}

/** Waits until `count` listener lines (`stone N: DST <- SRC`) were logged. */
export async function waitListening(p: Program, count: number, log: () => string = () => p.stderr()): Promise<void> {
  await p.waitUntil(() => (log().match(/ <- \S+$/gm) ?? []).length >= count, `${count} listener line(s)`, 20_000);
}

/** SIGTERM, then the exit code (stone exits 1, warpstone 0). */
export async function stopRepeater(p: Program): Promise<number | string> {
  p.child.kill('SIGTERM');
  return p.exited;
}

/** Polls `check` every 20 ms until it holds, failing after `timeoutMs` with `what`. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
