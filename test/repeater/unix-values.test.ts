// UNIX-socket listeners and destinations of `warpstone stone`, and the value escapes of /http
// request lines (\a \A \u \g \U \G: src/repeater/peer-values.ts), against Debian's real stone
// 2.4: the request line each sends for TCP clients (with and without -n, IPv4 and IPv6) and for
// UNIX-socket clients of two users (root and nobody, whose uid/gid/names come from SO_PEERCRED),
// the bytes relayed to and from UNIX-socket destinations, and the -ddd log lines.
// Owns: these tests. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, freePort, tempDir } from '../helpers/harness.ts';
import { requireProgram, spawnProgram, type Program } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { parseStoneArguments } from '../../src/repeater/grammar.ts';
import { startStones, type RunningStones } from '../../src/repeater/engine.ts';
import { stoneEnvironment } from '../../src/cli/stone.ts';
import { WarpstoneError } from '../../src/common/errors.ts';
import { startRepeater, stopRepeater, until, waitListening, type Which } from './stone-runner.ts';

type Listen = { port: number } | { path: string };

/** A server that records each request head (up to the empty line) and answers a short reply. */
async function recordingHttp(cleanup: Cleanup, listen: Listen): Promise<{ requests: string[] }> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let head = '';
    s.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      requests.push(head.slice(0, end));
      s.end('HTTP/1.0 200 OK\r\n\r\nbody');
    });
  });
  await new Promise<void>((resolve) => ('path' in listen ? server.listen(listen.path, resolve) : server.listen(listen.port, '127.0.0.1', resolve)));
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { requests };
}

/**
 * Connects (TCP port or socket path), reads until the end. With `say`, writes it and half-closes
 * at once; without, leaves the closing to the far end (so the order of EOFs is always the same).
 */
function fetchVia(target: { port: number; host?: string } | { path: string }, say = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in target ? net.connect({ path: target.path }) : net.connect({ port: target.port, host: target.host ?? '127.0.0.1' });
    let got = '';
    socket.on('connect', () => {
      if (say !== '') socket.end(say);
    });
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

/** The same from a child process running as `uid`/`gid`: a UNIX-socket client of another user. */
function fetchAsUser(path: string, uid: number, gid: number): Promise<string> {
  const script = `const s=require('net').connect(${JSON.stringify(path)});let g='';s.on('data',d=>g+=d);s.on('error',e=>{process.stderr.write(String(e));process.exit(3)});s.on('close',()=>process.stdout.write(g));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { uid, gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`client as uid ${uid} exited ${code}: ${err}`))));
  });
}

const REQUEST = 'GET /who?a=\\a&A=\\A&u=\\u&g=\\g&U=\\U&G=\\G HTTP/1.0';

/** The client's port differs from run to run. */
const maskPort = (r: string): string => r.replace(/&A=(.*):(\d+)&u=/, '&A=$1:<P>&u=');

async function tcpValuesRun(which: Which, extra: string[]): Promise<string[]> {
  const cleanup = new Cleanup();
  try {
    const httpPort = await freePort();
    const http = await recordingHttp(cleanup, { port: httpPort });
    const [p4, p6] = [await freePort(), await freePort('::1')];
    const p = startRepeater(cleanup, which, [...extra, `127.0.0.1:${httpPort}/http`, String(p4), REQUEST, '--', `127.0.0.1:${httpPort}/http`, `::1:${p6}/v6`, REQUEST]);
    await waitListening(p, 2);
    assert.equal(await fetchVia({ port: p4 }), 'body');
    assert.equal(await fetchVia({ port: p6, host: '::1' }), 'body');
    await stopRepeater(p);
    return http.requests.map(maskPort);
  } finally {
    await cleanup.run();
  }
}

for (const extra of [[], ['-n']]) {
  test(`\\a \\A \\u \\g \\U \\G in a /http request line, TCP clients over IPv4 and IPv6${extra.length ? ' with -n' : ''}: the same line as stone`, async () => {
    requireProgram('stone');
    const s = await tcpValuesRun('stone', extra);
    const w = await tcpValuesRun('warpstone', extra);
    assert.equal(s.length, 2);
    assert.match(s[0] as string, extra.length ? /^GET \/who\?a=127\.0\.0\.1&A=127\.0\.0\.1:<P>&u=&g=&U=&G= HTTP\/1\.0$/ : /^GET \/who\?a=localhost&A=127\.0\.0\.1:<P>&u=&g=&U=&G= HTTP\/1\.0$/);
    assert.deepEqual(w, s);
  });
}

/** The repeater's log lines, normalised, with the temporary directory and ports masked. */
function logLines(p: Program, dir: string): string[] {
  return p
    .stderr()
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => normalise(l, { loops: true }).split(dir).join('<DIR>'))
    .map((l) => l.replace(/^(<TIME> <TID> start \(2\.4\) )\[\d+\]$/, '$1[PID]'))
    .map((l) => l.replace(/((?:\d+\.){3}\d+):[^\s/]+/g, '$1:<P>'))
    // stone compares a second UNIX listener's address with the first one's through saComp(),
    // which knows no AF_UNIX and logs an error about it; warpstone does not repeat that
    .filter((l) => !l.endsWith('saComp: unknown family=1'))
    // stone's epoll loop sometimes reports a hang-up twice (IN|HUP, then HUP alone), by timing
    .filter((l) => !l.endsWith('TCP #: epoll # events=10 type=1'));
}

interface UnixRun {
  requests: string[];
  echoed: string[];
  log: string[];
}

async function unixRun(which: Which): Promise<UnixRun> {
  const cleanup = new Cleanup();
  try {
    const dir = tempDir(cleanup, 'ws-unix-');
    chmodSync(dir, 0o755);
    const httpPort = await freePort();
    const http = await recordingHttp(cleanup, { port: httpPort });
    const echo = await echoServer(cleanup);
    const echoPath = join(dir, 'echo.sock');
    const echoUnix = net.createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echoUnix.listen(echoPath, r));
    cleanup.add(() => new Promise<void>((r) => echoUnix.close(() => r())));
    const [valuesSock, relaySock] = [join(dir, 'values.sock'), join(dir, 'relay.sock')];
    const tcpToUnix = await freePort();
    const p = startRepeater(cleanup, which, [
      '-ddd',
      `127.0.0.1:${httpPort}/http`, valuesSock, REQUEST,
      '--', echoPath, String(tcpToUnix),
      '--', `127.0.0.1:${echo}`, relaySock,
    ]);
    await waitListening(p, 3);
    chmodSync(valuesSock, 0o777); // let another user connect
    const requests: string[] = [];
    assert.equal(await fetchVia({ path: valuesSock }), 'body');
    assert.equal(await fetchAsUser(valuesSock, 65534, 65534), 'body');
    requests.push(...http.requests);
    const echoed = [await fetchVia({ port: tcpToUnix }, 'tcp to unix'), await fetchVia({ path: relaySock }, 'unix to tcp')];
    await until(() => (p.stderr().match(/ close tx:/g) ?? []).length >= 8, `${which}: the close lines of 4 pairs`);
    await new Promise((r) => setTimeout(r, 100));
    await stopRepeater(p);
    return { requests, echoed, log: logLines(p, dir) };
  } finally {
    await cleanup.run();
  }
}

test('UNIX-socket listeners and destinations: \\a \\A \\u \\g \\U \\G from SO_PEERCRED (root and nobody), bytes both ways, -ddd lines: same as stone', async () => {
  requireProgram('stone');
  const s = await unixRun('stone');
  const w = await unixRun('warpstone');
  const host = (await import('node:os')).hostname();
  assert.deepEqual(s.requests, [
    `GET /who?a=${host}&A=unix:&u=0&g=0&U=root&G=root HTTP/1.0`,
    `GET /who?a=${host}&A=unix:&u=65534&g=65534&U=nobody&G=nogroup HTTP/1.0`,
  ]);
  assert.deepEqual(w.requests, s.requests);
  assert.deepEqual(s.echoed, ['tcp to unix', 'unix to tcp']);
  assert.deepEqual(w.echoed, s.echoed);
  assert.ok(s.log.some((l) => l.endsWith('stone #: accepted TCP # from unix: mode=0')), s.log.join('\n'));
  assert.ok(s.log.some((l) => / <- unix:<DIR>\/values\.sock$/.test(l)), s.log.join('\n'));
  assert.deepEqual(w.log, s.log);
});

/** Starts a program in this process; resolves with the running stones or the start-up error. */
async function startInProcess(args: string[]): Promise<RunningStones | WarpstoneError> {
  const parsed = parseStoneArguments(args, stoneEnvironment());
  if (parsed.kind !== 'program') throw new Error('not a program');
  try {
    return await startStones(parsed.program, { pid: 1 });
  } catch (err) {
    if (err instanceof WarpstoneError) return err;
    throw err;
  }
}

test('warpstone: a stale socket file is replaced; a live one, or a file that is not a socket, stops start-up with the reason', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const dir = tempDir(cleanup, 'ws-unix-stale-');
  const echo = await echoServer(cleanup);
  // a socket file left behind by a process killed while it listened
  const stale = join(dir, 'stale.sock');
  const crashed = spawnProgram(cleanup, process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
  await crashed.waitUntil((out) => out.toString().includes('up'), 'the doomed listener');
  crashed.child.kill('SIGKILL');
  await crashed.exited;
  assert.ok(existsSync(stale), 'the socket file outlived its process');
  const logFile = join(dir, 'log');
  const first = await startInProcess(['-L', logFile, `127.0.0.1:${echo}`, stale]);
  assert.ok(!(first instanceof WarpstoneError), String(first));
  assert.equal(await fetchVia({ path: stale }, 'hello'), 'hello');
  // the same path again, while the first one listens
  const second = await startInProcess(['-L', logFile, `127.0.0.1:${echo}`, stale]);
  assert.ok(second instanceof WarpstoneError);
  assert.equal(second.code, 'WS_STONE_LISTEN');
  assert.match(second.message, /cannot listen on .*stale\.sock: another program is listening on/);
  await first.close();
  assert.equal(existsSync(stale), false, 'the socket file is removed at close');
  const plain = join(dir, 'plain-file');
  writeFileSync(plain, 'keep me');
  const third = await startInProcess(['-L', logFile, `127.0.0.1:${echo}`, plain]);
  assert.ok(third instanceof WarpstoneError);
  assert.match(third.message, /plain-file exists and is not a socket \(not removed\)/);
  assert.equal(existsSync(plain), true);
});

/** A fake identd on `address`:113 answering `reply` about whatever ports it is asked. */
async function fakeIdentd(cleanup: Cleanup, address: string, reply: string): Promise<void> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (d: Buffer) => {
      const [a, b] = d.toString().trim().split(',').map((x) => x.trim());
      s.end(`${a} , ${b} : ${reply}\r\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(113, address, () => resolve());
  });
  cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
}

/** Connects from `source` (a loopback address), reads until the end. */
function fetchFrom(source: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: source });
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

async function identRun(which: Which): Promise<{ requests: string[]; log: string[]; accounting: string[] }> {
  const cleanup = new Cleanup();
  try {
    const dir = tempDir(cleanup, 'ws-ident-');
    await fakeIdentd(cleanup, '127.0.0.62', 'USERID : UNIX : alice');
    await fakeIdentd(cleanup, '127.0.0.64', 'ERROR : NO-USER');
    const httpPort = await freePort();
    const http = await recordingHttp(cleanup, { port: httpPort });
    const port = await freePort();
    const acc = join(dir, 'acc');
    const p = startRepeater(cleanup, which, ['-ddd', '-a', acc, `127.0.0.1:${httpPort}/http`, `${port}/ident`, 'GET /?U=\\U&a=\\a HTTP/1.0']);
    await waitListening(p, 1);
    for (const source of ['127.0.0.62', '127.0.0.63', '127.0.0.64']) assert.equal(await fetchFrom(source, port), 'body');
    await until(() => (p.stderr().match(/ close tx:/g) ?? []).length >= 6, `${which}: the close lines of 3 pairs`);
    await stopRepeater(p);
    const { readFileSync } = await import('node:fs');
    // ports differ between runs; so does the request's length (\U differs on purpose for the
    // ERROR answer, compared through the requests), hence the /http side's tx count
    const mask = (l: string): string =>
      l
        .replace(/(127\.0\.0\.\d+):\d+/g, '$1:<P>')
        .replace(/\b\d{4,5}\b/g, '<P>')
        .replace(/close tx:\d+ rx:23 /, 'close tx:<N> rx:23 ');
    return {
      requests: http.requests,
      log: logLines(p, dir).map(mask),
      accounting: readFileSync(acc, 'latin1').split('\n').filter((l) => l).map((l) => mask(normalise(l)).replace(/^<TIME> \d+\[/, '<TIME> <P>[')),
    };
  } finally {
    await cleanup.run();
  }
}

test('/ident listeners: the identd\'s answer in the accepted and -a lines and in \\U, like stone (an ERROR token never becomes \\U)', async () => {
  requireProgram('stone');
  if (process.getuid?.() !== 0) throw new Error('this test runs fake identds on port 113 and needs root (CI runs as root)');
  const s = await identRun('stone');
  const w = await identRun('warpstone');
  assert.deepEqual(s.requests, ['GET /?U=alice&a=127.0.0.62 HTTP/1.0', 'GET /?U=&a=127.0.0.63 HTTP/1.0', 'GET /?U=NO-USER&a=127.0.0.64 HTTP/1.0']);
  assert.deepEqual(w.requests, ['GET /?U=alice&a=127.0.0.62 HTTP/1.0', 'GET /?U=&a=127.0.0.63 HTTP/1.0', 'GET /?U=&a=127.0.0.64 HTTP/1.0'], 'documented difference: no error token as a user');
  assert.ok(s.log.some((l) => l.endsWith('stone #: accepted TCP # from alice@127.0.0.62:<P>/ident mode=0')), s.log.join('\n'));
  assert.deepEqual(w.log, s.log);
  assert.deepEqual(s.accounting, ['<TIME> <P>[#] alice@127.0.0.62:<P>/ident[127.0.0.62]', '<TIME> <P>[#] 127.0.0.63:<P>/ident[127.0.0.63]', '<TIME> <P>[#] NO-USER@127.0.0.64:<P>/ident[127.0.0.64]']);
  assert.deepEqual(w.accounting, s.accounting);
});
