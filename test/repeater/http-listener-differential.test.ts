// Differential test of `sport/http` listeners (src/repeater/tcp-relay.ts acceptOverHttp)
// against Debian's real stone 2.4: the client's request header is dropped, the client gets
// `HTTP/1.0 200 OK` and an empty line, then bytes are relayed raw; same replies and log lines
// from both. Then each one's `/http` destination talks to the other one's `/http` listener.
// Owns: this test. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, echoServer, freePort } from '../helpers/harness.ts';
import { requireProgram } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { startRepeater, stopRepeater, waitListening, type Which } from './stone-runner.ts';

/** Sends `data` in pieces (`pause` ms apart), returns what came back once `expect` bytes did. */
function exchange(port: number, pieces: string[], expect: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    const finish = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(got);
    };
    const timer = setTimeout(finish, 10_000);
    socket.on('connect', async () => {
      for (const p of pieces) {
        socket.write(Buffer.from(p, 'latin1'));
        await new Promise((r) => setTimeout(r, 150));
      }
    });
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.length >= expect) finish();
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

function norm(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => normalise(l, { loops: true }).replace(/^(<TIME> <TID> start \(2\.4\) )\[\d+\]$/, '$1[PID]').replace(/(127\.0\.0\.1|0\.0\.0\.0):\d+/g, '$1:<PORT>'))
    .filter((l) => !/SIGTERM|exiting/.test(l));
}

const WANT = 'HTTP/1.0 200 OK\r\n\r\nhello warp';

async function direct(which: Which): Promise<{ replies: string[]; log: string[] }> {
  const cleanup = new Cleanup();
  try {
    const echo = await echoServer(cleanup);
    const port = await freePort();
    const p = startRepeater(cleanup, which, ['-d', `127.0.0.1:${echo}`, `${port}/http`]);
    await waitListening(p, 1);
    const replies = [
      await exchange(port, ['POST /warp HTTP/1.0\r\nHost: x\r\n\r\nhello warp'], WANT.length),
      await exchange(port, ['POST /warp HTTP/1.0\r\n', 'Host: x\r\n', '\r\n', 'hello warp'], WANT.length),
      await exchange(port, ['GET / HTTP/1.0\n\nhello warp'], WANT.length),
    ];
    await stopRepeater(p);
    return { replies, log: norm(p.stderr()) };
  } finally {
    await cleanup.run();
  }
}

test('sport/http listeners answer and relay as stone 2.4 does', { timeout: 60_000 }, async () => {
  requireProgram('stone');
  const stone = await direct('stone');
  const ours = await direct('warpstone');
  assert.deepEqual(stone.replies, [WANT, WANT, WANT], 'the scenario');
  assert.deepEqual(ours.replies, stone.replies);
  assert.deepEqual(ours.log, stone.log);
});

test('a /http destination of one talks to the /http listener of the other', { timeout: 60_000 }, async () => {
  requireProgram('stone');
  for (const [front, back] of [['stone', 'warpstone'], ['warpstone', 'stone']] as const) {
    const cleanup = new Cleanup();
    try {
      const echo = await echoServer(cleanup);
      const [outer, inner] = [await freePort(), await freePort()];
      const b = startRepeater(cleanup, back, [`127.0.0.1:${echo}`, `${inner}/http`]);
      const f = startRepeater(cleanup, front, [`127.0.0.1:${inner}/http`, String(outer), 'POST /tunnel HTTP/1.0']);
      await waitListening(b, 1);
      await waitListening(f, 1);
      const payload = 'x'.repeat(5000);
      assert.equal(await exchange(outer, [payload], payload.length), payload, `${front} -> ${back}`);
      await stopRepeater(f);
      await stopRepeater(b);
    } finally {
      await cleanup.run();
    }
  }
});
