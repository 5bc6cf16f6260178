// Differential tests of `warpstone stone` (src/repeater/engine.ts, src/cli/stone.ts) against
// Debian's real stone 2.4: the same command lines run through both, comparing the bytes
// delivered (SHA-256 of 8 MiB each way), access decisions for a table of xhost lists (IPv4 and
// an IPv6 listener written as stone spells it, `::1:PORT/v6`), and the log and dump lines after
// logline.ts normalise(). Plus what stone cannot be compared on: refusing unsupported stones
// (exit 2), half-close carried through, SIGTERM exiting 0, -C files.
// Owns: these tests. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, exchange, freePort, sha256, tempDir } from '../helpers/harness.ts';
import { converse, requireProgram, within, type Program } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { parseStoneArguments } from '../../src/repeater/grammar.ts';
import { startStones } from '../../src/repeater/engine.ts';
import { StoneUnsupportedError } from '../../src/repeater/support.ts';
import { stoneEnvironment } from '../../src/cli/stone.ts';
import { startRepeater, sizedEcho, type Which } from './stone-runner.ts';


/** Waits until `count` listeners were logged (`stone N: DST <- SRC`). */
async function listening(p: Program, count: number, log: () => string = () => p.stderr()): Promise<void> {
  await p.waitUntil(() => (log().match(/ <- \S+$/gm) ?? []).length >= count, `${count} listener line(s)`, 20_000);
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

/** normalise() plus the pid of the start line and the synthetic fds the two differ in. */
function norm(text: string): string[] {
  return lines(text).map((l) => normalise(l, { loops: true }).replace(/^(<TIME> <TID> start \(2\.4\) )\[\d+\]$/, '$1[PID]'));
}

async function stop(p: Program, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
  p.child.kill(signal);
  return p.exited;
}

async function poll(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------------------------------------
// bytes

for (const which of ['stone', 'warpstone'] as const) {
  test(`${which}: 8 MiB each way arrive unchanged (SHA-256), with and without -X 65536`, async (t) => {
    requireProgram('stone');
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const echo = await echoServer(cleanup);
    const [p1, p2] = [await freePort(), await freePort()];
    const p = startRepeater(cleanup, which, ['-X', '65536', `127.0.0.1:${echo}`, String(p1), '--', `127.0.0.1:${echo}`, String(p2)]);
    await listening(p, 2);
    const payload = randomBytes(8 * 1024 * 1024);
    for (const port of [p1, p2]) {
      const back = await exchange(port, payload);
      assert.equal(back.length, payload.length);
      assert.equal(sha256(back), sha256(payload));
    }
    assert.equal(await stop(p), which === 'stone' ? 1 : 0, 'stone exits 1 on SIGTERM; warpstone exits 0');
  });
}

test('warpstone: the default 1000-byte -X does not throttle (8 MiB through in well under a second a MiB)', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await echoServer(cleanup);
  const port = await freePort();
  const p = startRepeater(cleanup, 'warpstone', [`127.0.0.1:${echo}`, String(port)]);
  await listening(p, 1);
  const payload = randomBytes(8 * 1024 * 1024);
  const began = Date.now();
  const back = await exchange(port, payload);
  assert.equal(sha256(back), sha256(payload));
  assert.ok(Date.now() - began < 8000, `took ${Date.now() - began} ms`);
});

// ---------------------------------------------------------------------------------------------
// access decisions

const RULES: { rules: string[]; v6?: boolean }[] = [
  { rules: [] },
  { rules: ['127.0.0.1/32'] },
  { rules: ['127.0.0.1'] },
  { rules: ['!', '127.0.0.1'] },
  { rules: ['10.0.0.0/8'] },
  { rules: ['!', '10.0.0.0/8'] },
  { rules: ['127.0.0.0/8', '!', '127.0.0.1'] },
  { rules: ['!', '127.0.0.1', '!', '127.0.0.0/8'] },
  { rules: ['10.1.2.3', '127.0.0.1/p2'] },
  { rules: ['!', '!'] },
  { rules: [], v6: true },
  { rules: ['::1'], v6: true },
  { rules: ['!', '::1'], v6: true },
  { rules: ['fe80::/10'], v6: true },
  { rules: ['!', 'fe80::/10'], v6: true },
];

/** Connects, sends `ping`, half-closes: true when the echo came back (allowed). */
async function allowed(port: number, host: string): Promise<boolean> {
  const c = await converse(port, host);
  c.socket.end('ping');
  const got = await c.ended.catch(() => Buffer.alloc(0));
  c.socket.destroy();
  return got.toString() === 'ping';
}

async function accessRun(which: Which, debug: string[]): Promise<{ decisions: boolean[]; log: string[] }> {
  const cleanup = new Cleanup();
  try {
    const echo = await echoServer(cleanup);
    const echo6 = await echoServer(cleanup, '::1');
    const ports: number[] = [];
    const args: string[] = [...debug];
    for (const [i, r] of RULES.entries()) {
      const port = await freePort(r.v6 ? '::1' : '127.0.0.1');
      ports.push(port);
      if (i > 0) args.push('--');
      args.push(r.v6 ? `::1:${echo6}/v6` : `127.0.0.1:${echo}`, r.v6 ? `::1:${port}/v6` : String(port), ...r.rules);
    }
    const p = startRepeater(cleanup, which, args);
    await listening(p, RULES.length);
    const decisions: boolean[] = [];
    for (const [i, r] of RULES.entries()) decisions.push(await allowed(ports[i] as number, r.v6 ? '::1' : '127.0.0.1'));
    const denied = decisions.filter((d) => !d).length;
    await poll(() => (p.stderr().match(/access denied/g) ?? []).length >= denied, `${denied} access denied lines`);
    await new Promise((r) => setTimeout(r, 200));
    await stop(p);
    // stone logs the client's port; the ports differ between runs, so mask them
    return { decisions, log: norm(p.stderr()).map((l) => l.replace(/(from \S+:)\d+/, '$1<PORT>').replace(/:\d+(\/v6)?( |$)/g, ':<P>$1$2')) };
  } finally {
    await cleanup.run();
  }
}

for (const debug of [[], ['-dd']]) {
  test(`xhost access decisions and their log lines match stone ${debug.join(' ') || '(no -d)'}`, async () => {
    requireProgram('stone');
    const s = await accessRun('stone', debug);
    const w = await accessRun('warpstone', debug);
    const table = RULES.map((r, i) => `${r.v6 ? '[v6] ' : ''}${r.rules.join(' ') || '(none)'} -> ${s.decisions[i] ? 'allow' : 'deny'}`);
    assert.deepEqual(w.decisions, s.decisions, table.join('\n'));
    // The same lines, each as often; their order across connections is not compared: a dump line
    // of one connection may be written just after the next connection's "access denied" on a
    // loaded machine, in either program.
    const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
    assert.deepEqual([...w.log].sort(byText), [...s.log].sort(byText));
    assert.equal(w.log[0], s.log[0], 'the start line comes first');
    assert.equal(w.log.at(-1), s.log.at(-1), 'the exit line comes last');
  });
}

// ---------------------------------------------------------------------------------------------
// dumps and debug lines

const TEXT = Buffer.from('GET / HTTP/1.0\r\nHost: example\r\n\r\nhello world\ttab \x1b[1mbold\x1b[0m caf\xc3\xa9\n', 'latin1');
const BINARY = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const LONG_TEXT = Buffer.from(
  Array.from({ length: 60 }, (_, i) => `line ${String(i).padStart(3, '0')}: the quick brown fox jumps over the lazy dog\n`)
    .join('')
    .slice(0, 2500),
  'latin1',
);

/** An echo server that answers each expected payload in one write once all of it has arrived. */

async function conversation(port: number, echo: { expect(size: number): void }, payloads: Buffer[]): Promise<void> {
  const c = await converse(port);
  let total = 0;
  for (const p of payloads) {
    echo.expect(p.length);
    c.socket.write(p);
    total += p.length;
    await c.waitForBytes(total);
  }
  c.socket.end();
  await c.ended;
  c.socket.destroy();
}

async function dumpRun(which: Which, flags: string[], logFile: boolean): Promise<string[]> {
  const cleanup = new Cleanup();
  try {
    const dir = tempDir(cleanup, 'ws-engine-');
    const file = join(dir, 'log');
    const acc = join(dir, 'acc');
    const echo = await sizedEcho(cleanup);
    const port = await freePort();
    const args = [...(logFile ? ['-L', file, '-a', acc] : []), ...flags, `127.0.0.1:${echo.port}`, String(port)];
    const p = startRepeater(cleanup, which, args);
    const read = (): string => (logFile ? (() => { try { return readFileSync(file, 'latin1'); } catch { return ''; } })() : p.stderr());
    if (logFile) await poll(() => / <- \S+$/m.test(read()), 'the listener line in the -L file', 20_000);
    else await listening(p, 1);
    await conversation(port, echo, [TEXT, BINARY, LONG_TEXT]);
    await conversation(port, echo, []);
    // the second pair's last line (at -ddd its close, else the listener/accepted lines) settles quickly
    await new Promise((r) => setTimeout(r, 400));
    await stop(p);
    // ports differ between runs (and may print as service names)
    const masked = (l: string): string => l.replace(/(127\.0\.0\.1|0\.0\.0\.0):[\w-]+/g, '$1:<PORT>').replace(/^<TIME> \d+\[#\]/, '<TIME> <PORT>[#]');
    const out = norm(read()).map(masked);
    if (logFile) {
      assert.equal(p.stderr(), '', `${which}: with -L nothing goes to stderr`);
      out.push(...norm(readFileSync(acc, 'latin1')).map(masked));
    }
    return out;
  } finally {
    await cleanup.run();
  }
}

const DUMP_SPECS: { flags: string[]; logFile?: boolean }[] = [
  { flags: ['-p'] },
  { flags: ['-pp', '-X', '700'] },
  { flags: ['-ppp'] },
  { flags: ['-d'] },
  { flags: ['-dd', '-p'], logFile: true },
  { flags: ['-ddd', '-p', '-X', '1000'] },
];

for (const spec of DUMP_SPECS) {
  test(`log and dump lines match stone: ${spec.flags.join(' ')}${spec.logFile ? ' -L file -a file' : ''}`, async () => {
    requireProgram('stone');
    const s = await dumpRun('stone', spec.flags, spec.logFile ?? false);
    const w = await dumpRun('warpstone', spec.flags, spec.logFile ?? false);
    assert.deepEqual(w, s);
  });
}

// ---------------------------------------------------------------------------------------------
// warpstone only

test('half-close is carried through both ways', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  // a server that answers only after the client's end-of-stream, then ends its side
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('end', () => socket.end(Buffer.concat([Buffer.from('after EOF: '), ...got])));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.add(() => server.close());
  const port = await freePort();
  const p = startRepeater(cleanup, 'warpstone', [`127.0.0.1:${(server.address() as net.AddressInfo).port}`, String(port)]);
  await listening(p, 1);
  const back = await exchange(port, Buffer.from('question'));
  assert.equal(back.toString(), 'after EOF: question');
});

const UNSUPPORTED: [string[], RegExp][] = [
  [['-q', 'lb1=2', 'localhost:443/ssl', '8443'], /stone 1 \(argument 3: localhost:443 <- 8443\): -q lb1=2 is not supported yet/],
  [['proxy', '8080/udp'], /stone 1 \(argument 1: proxy <- 8080\): the 'proxy' command on a UDP listener is not supported yet/],
  [['127.0.0.1:80', '8082', '--', 'health', '8083/http'], /stone 2 .*an HTTP-wrapped listener \(\/http\) other than in a TCP relay is not supported yet/],
  [['127.0.0.1:80/http', '8084', 'GET /\\D HTTP/1.0'], /\\D \(the original destination, SO_ORIGINAL_DST\) in a \/http request line is not supported yet/],
  [['-I', '127.0.0.1', '127.0.0.1:80', '8085'], /-I 127\.0\.0\.1 is not supported yet/],
  [['127.0.0.1:80/ssl', '8087/udp'], /an \/ssl destination behind a UDP listener is not supported yet/],
  [['-D', '127.0.0.1:80', '8086'], /option -D \(become a daemon\) is not supported yet/],
];

test('stones this engine cannot run yet are refused before anything starts, naming the stone; the command exits 2', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  for (const [args, message] of UNSUPPORTED) {
    const parsed = parseStoneArguments(args, stoneEnvironment());
    assert.equal(parsed.kind, 'program');
    if (parsed.kind !== 'program') continue;
    await assert.rejects(startStones(parsed.program), (err: unknown) => err instanceof StoneUnsupportedError && err.code === 'WS_STONE_UNSUPPORTED' && message.test(err.message), args.join(' '));
  }
  // through the command: exit 2, `warpstone stone: ` and nothing started
  const [args, message] = UNSUPPORTED[0] as [string[], RegExp];
  const p = startRepeater(cleanup, 'warpstone', args);
  assert.equal(await p.exited, 2, `${args.join(' ')}: ${p.stderr()}`);
  assert.match(p.stderr(), /^warpstone stone: /);
  assert.match(p.stderr(), message);
  assert.doesNotMatch(p.stderr(), /start \(2\.4\)/, 'nothing started');
});

test('grammar errors: `warpstone stone: <message>`, exit 2', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const p = startRepeater(cleanup, 'warpstone', ['127.0.0.1:80', '8080/foo']);
  assert.equal(await p.exited, 2);
  assert.match(p.stderr(), /^warpstone stone: argument 2: '8080\/foo': unknown extension 'foo'/);
});

test('SIGTERM and SIGINT: `SIGTERM/INT. exiting`, exit 0; -N checks and exits 0', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await echoServer(cleanup);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const port = await freePort();
    const p = startRepeater(cleanup, 'warpstone', ['-d', `127.0.0.1:${echo}`, String(port)]);
    await listening(p, 1);
    const c = await converse(port); // an open pair must not keep it alive
    c.socket.write('x');
    await c.waitForBytes(1);
    assert.equal(await stop(p, signal), 0);
    assert.match(lines(p.stderr()).at(-1) ?? '', /SIGTERM\/INT\. exiting$/);
    c.socket.destroy();
  }
  const n = startRepeater(cleanup, 'warpstone', ['-N', `127.0.0.1:${echo}`, String(await freePort())]);
  assert.equal(await n.exited, 0);
  assert.match(n.stderr(), / <- 0\.0\.0\.0:/);
});

test('-C file (through cpp, and with -P \'\') and options like -p, -d, -- pass through commander untouched', async (t) => {
  requireProgram('cpp');
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const dir = tempDir(cleanup, 'ws-engine-conf-');
  const echo = await echoServer(cleanup);
  const [p1, p2] = [await freePort(), await freePort()];
  const conf = join(dir, 'stone.cfg');
  writeFileSync(conf, `-d\n127.0.0.1:${echo} ${p1}\n-- 127.0.0.1:${echo} "${p2}"\n`);
  for (const pre of [[], ['-P', '']]) {
    const p = startRepeater(cleanup, 'warpstone', [...pre, '-p', '-C', conf]);
    await listening(p, 2);
    assert.match(p.stderr(), /Debug level: 1/);
    for (const port of [p1, p2]) assert.equal((await exchange(port, Buffer.from('hi'))).toString(), 'hi');
    assert.match(p.stderr(), / \d+>\d+ hi$/m, '-p from the command line dumps');
    assert.equal(await stop(p), 0);
  }
});

// Not compared with stone: Debian's stone 2.4 did not close an idle pair within 8 s at -T 1 in
// our runs (its epoll loop's idle scan; not investigated yet), so this checks warpstone alone.
for (const which of ['warpstone'] as const) {
  test(`${which}: -T 1 closes an idle pair, gracefully (the client sees end-of-stream)`, async (t) => {
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const echo = await echoServer(cleanup);
    const port = await freePort();
    const p = startRepeater(cleanup, which, ['-T', '1', `127.0.0.1:${echo}`, String(port)]);
    await listening(p, 1);
    const c = await converse(port);
    c.socket.write('x');
    await c.waitForBytes(1);
    const began = Date.now();
    const got = await within(c.ended, 8000, `${which} to close the idle pair`);
    assert.equal(got.toString(), 'x');
    assert.ok(Date.now() - began < 4000, `closed after ${Date.now() - began} ms`);
    c.socket.destroy();
  });
}
