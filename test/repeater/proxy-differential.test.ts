// Differential tests of `proxy`, `health` and `identd` stones, `/proxy` headers and `/base`
// (src/repeater/proxy-stone.ts, proxy-request.ts, command-stones.ts, stream-filters.ts) against
// Debian's real stone 2.4: the same command line (-d, an -x permit, proxy, health, identd, a
// /proxy header pair, a /base pair feeding a /base listener) runs through both, the same
// conversations are held, and the replies, the bytes the origin server received and the log
// lines (normalised for time, pid and descriptors) must be equal. Then cross checks: stone's
// /base output decoded by warpstone and the reverse.
// Owns: these tests. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { requireProgram, type Program } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { startRepeater, stopRepeater, until, waitListening, type Which } from './stone-runner.ts';

const REPLY = 'HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello';

interface Origin {
  port: number;
  /** requests received, in order (each up to the end of its header) */
  requests: string[];
  /** remote ports of the connections it accepted, in order */
  peers: number[];
}

/** An HTTP origin: answers REPLY once a header is complete, then closes (unless held). */
async function origin(cleanup: Cleanup): Promise<Origin & { hold: boolean }> {
  const state = { port: 0, requests: [] as string[], peers: [] as number[], hold: false };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    state.peers.push(socket.remotePort ?? 0);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      state.requests.push(text.slice(0, end + 4));
      text = text.slice(end + 4);
      if (!state.hold) socket.end(REPLY);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  // below 32768: stone 2.4 keeps -x ports in a signed short and refuses every higher port
  for (let attempt = 0; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) break;
    if (attempt > 50) throw new Error('no free port below 32768 for the origin');
  }
  state.port = (server.address() as net.AddressInfo).port;
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return state;
}

/** Sends `data`, then collects what comes back until the far end closes or `quietMs` passes. */
function ask(port: number, data: string, options: { quietMs?: number; keep?: (s: net.Socket) => void } = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      if (!options.keep) socket.destroy();
      resolve(got);
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(finish, options.quietMs ?? 1500);
    };
    socket.on('connect', () => {
      socket.write(Buffer.from(data, 'latin1'));
      options.keep?.(socket);
      arm();
    });
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      arm();
    });
    socket.on('close', finish);
    socket.on('error', finish);
  });
}

/** stone's log lines, normalised: time, thread id, pid, descriptors, the time-log clock. */
function normalisedLog(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => normalise(l))
    .map((l) => l.replace(/start \(2\.4\) \[\d+\]/, 'start (2.4) [PID]').replace(/<TID> \d\d:\d\d:\d\d \d+ /, '<TID> <CLOCK> ').replace(/^(<TIME> <TID> )?\d+ TCP \d+:/, '$1# TCP #:'))
    .filter((l) => !/SIGTERM|exiting/.test(l));
}

interface Run {
  log: string[];
  results: Record<string, string>;
  requests: string[];
}

async function runScenario(which: Which): Promise<Run> {
  const cleanup = new Cleanup();
  try {
    const web = await origin(cleanup);
    const [proxyPort, healthPort, identdPort, headerPort, basePort, unbasePort, closedPort] = (await Promise.all(Array.from({ length: 7 }, () => freePort()))) as [number, number, number, number, number, number, number];
    const args: string[] = [];
    args.push(
      '-d',
      '-x', String(web.port), '127.0.0.1', '--',
      'proxy', String(proxyPort),
      '--', 'health', String(healthPort),
      '--', 'identd', String(identdPort),
      '--', `127.0.0.1:${web.port}/proxy`, String(headerPort), 'X-Via: stone',
      '--', `127.0.0.1:${unbasePort}/base`, String(basePort),
      '--', `127.0.0.1:${web.port}`, `${unbasePort}/base`,
    );
    const p: Program = startRepeater(cleanup, which, args.map(String));
    await waitListening(p, 6);
    const results: Record<string, string> = {};
    // health first: no other pairs exist yet, so HELO's counts are comparable
    results.helo = await ask(healthPort, 'HELO me\r\n', { quietMs: 700 });
    results.limitPair = await ask(healthPort, 'LIMIT PAIR 100\r\n', { quietMs: 700 });
    results.limitBad = await ask(healthPort, 'LIMIT FOO 1\r\n', { quietMs: 700 });
    results.stat = await ask(healthPort, 'STAT\r\n', { quietMs: 700 });
    results.cvs = await ask(healthPort, 'CVS_ID\r\n', { quietMs: 700 });
    results.healthGet = await ask(healthPort, 'GET /check HTTP/1.0\r\nHost: probe.example\r\n\r\n', { quietMs: 700 });
    results.healthQuit = await ask(healthPort, 'QUIT\r\n');
    results.healthUnknown = await ask(healthPort, 'FOO bar\r\n');
    // proxy
    results.get = await ask(proxyPort, `GET http://127.0.0.1:${web.port}/path?q=1 HTTP/1.0\r\nHost: x\r\n\r\n`);
    results.getNoPath = await ask(proxyPort, `get http://127.0.0.1:${web.port} HTTP/1.0\r\n\r\n`);
    results.connect = await ask(proxyPort, `CONNECT 127.0.0.1:${web.port} HTTP/1.0\r\nHost: x\r\n\r\nGET /inside HTTP/1.0\r\n\r\n`);
    results.deniedPort = await ask(proxyPort, `GET http://127.0.0.1:${closedPort}/ HTTP/1.0\r\n\r\n`);
    results.unknownMethod = await ask(proxyPort, 'BREW coffee HTTP/1.0\r\n\r\n');
    results.unknownUrl = await ask(proxyPort, 'GET ftp://example/ HTTP/1.0\r\n\r\n');
    // /proxy header and identd (asked while the /proxy pair is held open)
    web.hold = true;
    let held: net.Socket | undefined;
    results.header = await ask(headerPort, 'GET /a HTTP/1.0\r\nHost: y\r\n\r\n', { quietMs: 800, keep: (s) => (held = s) });
    await until(() => web.requests.some((r) => r.startsWith('GET /a ')), `the /proxy request at the origin (got ${JSON.stringify(web.requests)}, ${JSON.stringify(results)}, log ${p.stderr()})`);
    const stonePort = web.peers.at(-1) as number;
    results.identdHit = await ask(identdPort, `${stonePort},${web.port}\r\n`, { quietMs: 700 });
    results.identdMiss = await ask(identdPort, `${stonePort + 1},${web.port}\r\n`, { quietMs: 700 });
    results.identdBad = await ask(identdPort, `${stonePort} , ${web.port}\r\n`);
    held?.destroy();
    web.hold = false;
    // /base there and back
    results.base = await ask(basePort, 'GET /b64 HTTP/1.0\r\nHost: z\r\n\r\n');
    await new Promise((r) => setTimeout(r, 300));
    await stopRepeater(p);
    const fix = (s: string): string => s.replaceAll(String(stonePort + 1), 'PORT+1').replaceAll(String(stonePort), 'PORT').replaceAll(String(web.port), 'ORIGIN').replaceAll(String(identdPort), 'IDENTD').replaceAll(String(headerPort), 'HEADER');
    return {
      log: normalisedLog(p.stderr()).map((l) => l.replace(/:\d+\b/g, ':#').replace(/port \d+/g, `port ${l.includes(String(closedPort)) ? 'CLOSED' : '#'}`)),
      results: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, fix(v)])),
      requests: web.requests,
    };
  } finally {
    await cleanup.run();
  }
}

test('proxy, health, identd, /proxy and /base behave as stone 2.4', { timeout: 90_000 }, async () => {
  requireProgram('stone');
  const stone = await runScenario('stone');
  const ours = await runScenario('warpstone');
  // the pair count depends on when stone frees the previous session's pairs: compared in shape
  for (const run of [stone, ours]) {
    assert.match(run.results.limitPair ?? '', /^200 pair=\d+ is less than 100\r\n$/);
    run.results.limitPair = 'checked';
    run.log = run.log.map((l) => l.replace(/: LIMIT pair 100: \d+$/, ': LIMIT pair 100: N'));
  }
  // the scenario itself must have exercised what it claims
  assert.match(stone.results.helo ?? '', /^250 stone:2\.4 debug=1 stone=6 pair=2 trash=0 conn=0 origin=0\r\n$/);
  assert.equal(stone.results.get, REPLY);
  assert.equal(stone.results.connect, `HTTP/1.0 200 OK\r\n\r\n${REPLY}`);
  assert.equal(stone.requests.length, 5);
  assert.match(stone.results.identdHit ?? '', /^PORT , ORIGIN : USERID : STONE : HEADER\r\n$/);
  for (const key of Object.keys(stone.results)) assert.equal(ours.results[key], stone.results[key], `reply to ${key}`);
  assert.deepEqual(ours.requests, stone.requests, 'what the origin received');
  assert.deepEqual(ours.log, stone.log, 'log lines');
});

/** One repeater's /base side against the other's: bytes must survive both ways. */
async function crossBase(encoder: Which, decoder: Which): Promise<{ reply: string; request: string }> {
  const cleanup = new Cleanup();
  try {
    const web = await origin(cleanup);
    const [front, back] = await Promise.all([freePort(), freePort()]);
    const dec = startRepeater(cleanup, decoder, [`127.0.0.1:${web.port}`, `${back}/base`]);
    const enc = startRepeater(cleanup, encoder, [`127.0.0.1:${back}/base`, String(front)]);
    await waitListening(dec, 1);
    await waitListening(enc, 1);
    const body = 'x'.repeat(3001);
    const reply = await ask(front, `POST /cross HTTP/1.0\r\nContent-Length: 3001\r\n\r\n${body}`);
    await stopRepeater(enc);
    await stopRepeater(dec);
    return { reply, request: web.requests[0] ?? '' };
  } finally {
    await cleanup.run();
  }
}

test('/base interoperates with stone 2.4 in both directions', { timeout: 60_000 }, async () => {
  requireProgram('stone');
  for (const [encoder, decoder] of [['warpstone', 'stone'], ['stone', 'warpstone']] as const) {
    const r = await crossBase(encoder, decoder);
    assert.equal(r.request, 'POST /cross HTTP/1.0\r\nContent-Length: 3001\r\n\r\n', `${encoder} -> ${decoder}: request`);
    assert.equal(r.reply, REPLY, `${encoder} -> ${decoder}: reply`);
  }
});
