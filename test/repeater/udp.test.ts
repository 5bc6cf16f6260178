// UDP stones of `warpstone stone` (src/repeater/udp-relay.ts, tcp-to-udp.ts, udp-to-stream.ts) against Debian's
// real stone 2.4: the same command lines through both, comparing the datagrams each client gets
// back, how the destination sees the clients (one source port per client: stone's origins), the
// xhost decision, TCP<->UDP framing (2-byte length) both ways, and the log and dump lines after
// logline.ts normalise() (ports masked: they differ between runs). Then what stone cannot show in
// a short test: origin expiry, the -u cap, -T on a UDP-to-TCP association, a stray datagram to a
// TCP-to-UDP pair, and a datagram larger than stone's first buffer (a documented difference).
// Owns: these tests. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import dgram from 'node:dgram';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, freePort, tempDir } from '../helpers/harness.ts';
import { converse, requireProgram } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { parseStoneArguments } from '../../src/repeater/grammar.ts';
import { startStones } from '../../src/repeater/engine.ts';
import { stoneEnvironment } from '../../src/cli/stone.ts';
import { startRepeater, stopRepeater, until, waitListening, type Which } from './stone-runner.ts';
import { ask, udpClient, udpEcho } from './datagram-peers.ts';

/** stone's lines after normalise(), with every port masked (they differ from run to run) */
function norm(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => normalise(l, { loops: true }))
    .map((l) => l.replace(/^(<TIME> <TID> start \(2\.4\) )\[\d+\]$/, '$1[PID]'))
    .map((l) => l.replace(/((?:\d+\.){3}\d+|::1|unix):[^\s/:]+/g, '$1:<P>'));
}

const frame = (s: string): Buffer => {
  const b = Buffer.from(s);
  const out = Buffer.alloc(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
};

// ---------------------------------------------------------------------------------------------
// UDP -> UDP

interface UdpObservation {
  answers: (string | undefined)[];
  /** per client: how many source ports the destination saw it from */
  portsPerClient: number[];
  /** the clients were all seen from different ports */
  distinct: boolean;
  denied: string | undefined;
  log: string[];
}

async function udpRun(which: Which): Promise<UdpObservation> {
  const cleanup = new Cleanup();
  try {
    const echo = await udpEcho(cleanup);
    const [p1, p2] = [await freePort(), await freePort()];
    const p = startRepeater(cleanup, which, ['-dddd', '-p', `127.0.0.1:${echo.port}/udp`, `${p1}/udp`, '--', `127.0.0.1:${echo.port}/udp`, `${p2}/udp`, '10.0.0.0/8']);
    await waitListening(p, 2);
    const clients = [await udpClient(cleanup), await udpClient(cleanup), await udpClient(cleanup)];
    const answers: (string | undefined)[] = [];
    for (const round of [1, 2]) {
      for (const [i, c] of clients.entries()) answers.push((await ask(c, `client${i} datagram${round}`, p1))?.toString());
    }
    const denied = (await ask(clients[0] as (typeof clients)[0], 'not allowed', p2, 500))?.toString();
    const portsPerClient = clients.map((_c, i) => new Set(echo.seen.filter((s) => s.data.toString().startsWith(`client${i} `)).map((s) => s.port)).size);
    const all = new Set(echo.seen.map((s) => s.port));
    await new Promise((r) => setTimeout(r, 200));
    await stopRepeater(p);
    return { answers, portsPerClient, distinct: all.size === clients.length, denied, log: norm(p.stderr()) };
  } finally {
    await cleanup.run();
  }
}

test('UDP -> UDP: replies reach the right client, one origin per client, xhost, -dddd -p lines: same as stone', async () => {
  requireProgram('stone');
  const s = await udpRun('stone');
  const w = await udpRun('warpstone');
  assert.deepEqual(s.answers, ['re:client0 datagram1', 're:client1 datagram1', 're:client2 datagram1', 're:client0 datagram2', 're:client1 datagram2', 're:client2 datagram2']);
  assert.deepEqual(s.portsPerClient, [1, 1, 1]);
  assert.equal(s.distinct, true);
  assert.equal(s.denied, undefined, 'stone drops a datagram from a host outside the xhost list');
  assert.deepEqual(w.answers, s.answers);
  assert.deepEqual(w.portsPerClient, s.portsPerClient);
  assert.equal(w.distinct, s.distinct);
  assert.equal(w.denied, s.denied);
  assert.ok(s.log.some((l) => /UDP #: New origin 127\.0\.0\.1:<P>\/udp$/.test(l)), s.log.join('\n'));
  assert.ok(s.log.some((l) => /# UDP<#: re:client2 datagram2$/.test(l)), s.log.join('\n'));
  assert.deepEqual(w.log, s.log);
});

test('UDP -> UDP over IPv6 (/v6 on both sides): datagrams relayed both ways like stone', async () => {
  requireProgram('stone');
  const results: (string | undefined)[][] = [];
  for (const which of ['stone', 'warpstone'] as const) {
    const cleanup = new Cleanup();
    try {
      const echo = await udpEcho(cleanup, 'udp6');
      const port = await freePort('::1');
      const p = startRepeater(cleanup, which, [`::1:${echo.port}/udp,v6`, `::1:${port}/udp,v6`]);
      await waitListening(p, 1);
      const c = await udpClient(cleanup, 'udp6');
      results.push([(await ask(c, 'six', port))?.toString(), (await ask(c, 'again', port))?.toString()]);
      assert.equal(new Set(echo.seen.map((x) => x.port)).size, 1, `${which}: one origin`);
    } finally {
      await cleanup.run();
    }
  }
  assert.deepEqual(results[0], ['re:six', 're:again']);
  assert.deepEqual(results[1], results[0]);
});

test('a datagram larger than 2048 bytes: stone drops the first one and grows its buffer; warpstone relays it (documented difference)', async () => {
  requireProgram('stone');
  const got: Record<Which, (number | undefined)[]> = { stone: [], warpstone: [] };
  const logs: Record<Which, string> = { stone: '', warpstone: '' };
  for (const which of ['stone', 'warpstone'] as const) {
    const cleanup = new Cleanup();
    try {
      const echo = await udpEcho(cleanup);
      const port = await freePort();
      const p = startRepeater(cleanup, which, [`127.0.0.1:${echo.port}/udp`, `${port}/udp`]);
      await waitListening(p, 1);
      const c = await udpClient(cleanup);
      for (let i = 0; i < 2; i++) got[which].push((await ask(c, Buffer.alloc(3000, 0x61 + i), port, 800))?.length);
      await stopRepeater(p);
      logs[which] = p.stderr();
    } finally {
      await cleanup.run();
    }
  }
  assert.deepEqual(got.stone, [undefined, 3003]);
  assert.match(logs.stone, /recvfrom failed: larger packet \(3000 bytes\) arrived from 127\.0\.0\.1:\d+\/udp/);
  assert.deepEqual(got.warpstone, [3003, 3003]);
  assert.doesNotMatch(logs.warpstone, /larger packet/);
});

// ---------------------------------------------------------------------------------------------
// TCP <-> UDP framing

interface MixedObservation {
  tcpAnswer: string;
  udpAnswers: (string | undefined)[];
  udpFrom: (number | undefined)[];
  refused: string[];
  log: string[];
}

async function mixedRun(which: Which): Promise<MixedObservation> {
  const cleanup = new Cleanup();
  try {
    const udp = await udpEcho(cleanup);
    const tcp = await echoServer(cleanup);
    const closed = await freePort();
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const p = startRepeater(cleanup, which, ['-ddd', '-p', `127.0.0.1:${udp.port}/udp`, String(p1), '--', `127.0.0.1:${tcp}`, `${p2}/udp`, '--', `127.0.0.1:${closed}`, `${p3}/udp`]);
    await waitListening(p, 3);
    // TCP client -> UDP destination: one frame a write (stone sends a second frame of the same
    // read only when the next read comes), answers come back framed
    const c = await converse(p1);
    c.socket.write(frame('hello'));
    await c.waitForBytes(frame('re:hello').length);
    c.socket.write(frame('abc'));
    const want = Buffer.concat([frame('re:hello'), frame('re:abc')]);
    const tcpAnswer = (await c.waitForBytes(want.length)).toString('latin1');
    c.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    // UDP client -> TCP destination (an echo: the frames come back and are unframed)
    const u = await udpClient(cleanup);
    const udpAnswers: (string | undefined)[] = [];
    const udpFrom: (number | undefined)[] = [];
    for (const d of ['ping', 'second datagram']) {
      u.send(d, p2);
      const back = await u.next();
      udpAnswers.push(back?.data.toString());
      udpFrom.push(back?.port === p2 ? 0 : back?.port);
    }
    // UDP client -> a TCP destination that refuses
    const r = await udpClient(cleanup);
    r.send('nobody', p3);
    await until(() => /connect getsockopt err=111/.test(p.stderr()), 'the refused connect to be logged');
    await new Promise((res) => setTimeout(res, 200));
    await stopRepeater(p);
    const log = norm(p.stderr());
    return { tcpAnswer, udpAnswers, udpFrom, refused: log.filter((l) => /getsockopt|epoll/.test(l)), log };
  } finally {
    await cleanup.run();
  }
}

test('TCP <-> UDP: 2-byte length framing both ways, answers from the listening port, log and dump lines like stone', async () => {
  requireProgram('stone');
  const s = await mixedRun('stone');
  const w = await mixedRun('warpstone');
  assert.equal(s.tcpAnswer, Buffer.concat([frame('re:hello'), frame('re:abc')]).toString('latin1'));
  assert.deepEqual(s.udpAnswers, ['ping', 'second datagram']);
  assert.deepEqual(s.udpFrom, [0, 0], 'answers come from the listening port');
  assert.equal(w.tcpAnswer, s.tcpAnswer);
  assert.deepEqual(w.udpAnswers, s.udpAnswers);
  assert.deepEqual(w.udpFrom, s.udpFrom);
  assert.deepEqual(w.refused, s.refused);
  // every line: accept, connect, established, the `tu` and plain dumps, EOF, the refused connect
  assert.ok(s.log.some((l) => /stone #: accepted TCP -1 from 127\.0\.0\.1:<P>\/udp mode=1$/.test(l)), s.log.join('\n'));
  assert.ok(s.log.some((l) => /# tu-1<# 00 04 'p 'i 'n 'g$/.test(l)), s.log.join('\n'));
  assert.ok(s.log.some((l) => /# tu#># 00 05 'h 'e 'l 'l 'o$/.test(l)), s.log.join('\n'));
  assert.deepEqual(w.log, s.log);
});

test('an /ssl listener to a /udp destination: frames over TLS, answers framed back; same bytes as stone', async () => {
  requireProgram('stone');
  requireProgram('openssl');
  const answers: Record<Which, string> = { stone: '', warpstone: '' };
  for (const which of ['stone', 'warpstone'] as const) {
    const cleanup = new Cleanup();
    try {
      const dir = tempDir(cleanup, 'ws-udp-ssl-');
      // serial 2: stone 2.4 on OpenSSL 3 fails a handshake when the serial does not fit a long
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '2', '-set_serial', '2', '-subj', '/CN=localhost'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      const echo = await udpEcho(cleanup);
      const port = await freePort();
      const p = startRepeater(cleanup, which, ['-z', `key=${join(dir, 'k.pem')}`, '-z', `cert=${join(dir, 'c.pem')}`, `127.0.0.1:${echo.port}/udp`, `${port}/ssl`]);
      await waitListening(p, 1);
      const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
      cleanup.add(() => socket.destroy());
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
      let got = Buffer.alloc(0);
      const want = frame('re:over tls').length;
      socket.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
      socket.write(frame('over tls'));
      await until(() => got.length >= want, `${which}: the framed answer`);
      answers[which] = got.toString('latin1');
    } finally {
      await cleanup.run();
    }
  }
  assert.equal(answers.stone, frame('re:over tls').toString('latin1'));
  assert.equal(answers.warpstone, answers.stone);
});

// ---------------------------------------------------------------------------------------------
// warpstone only (in process, for the time limits stone has no option for)

async function inProcess(cleanup: Cleanup, args: string[], options: { udpOriginIdleMs?: number } = {}): Promise<{ logText: () => string }> {
  const dir = tempDir(cleanup, 'ws-udp-');
  const logFile = join(dir, 'stone.log');
  const parsed = parseStoneArguments(['-L', logFile, ...args], stoneEnvironment());
  assert.equal(parsed.kind, 'program');
  if (parsed.kind !== 'program') throw new Error('not a program');
  const running = await startStones(parsed.program, { pid: 1, ...options });
  cleanup.add(() => running.close());
  return { logText: () => readFileSync(logFile, 'latin1') };
}

test('warpstone: an origin closes after its idle time; the client then gets a new one (new source port)', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await udpEcho(cleanup);
  const port = await freePort();
  const { logText } = await inProcess(cleanup, ['-ddd', `127.0.0.1:${echo.port}/udp`, `${port}/udp`], { udpOriginIdleMs: 300 });
  const c = await udpClient(cleanup);
  assert.equal((await ask(c, 'one', port))?.toString(), 're:one');
  assert.equal((await ask(c, 'two', port))?.toString(), 're:two');
  await until(() => / UDP \d+: close$/m.test(logText()), 'the idle origin to close', 5000);
  assert.equal((await ask(c, 'three', port))?.toString(), 're:three');
  const ports = echo.seen.map((s) => s.port);
  assert.equal(ports[0], ports[1], 'one origin while the client is active');
  assert.notEqual(ports[2], ports[1], 'a new origin after the idle close');
});

test('warpstone: -u caps the origins; the least recently used one is closed to make room', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await udpEcho(cleanup);
  const port = await freePort();
  const { logText } = await inProcess(cleanup, ['-ddd', '-u', '2', `127.0.0.1:${echo.port}/udp`, `${port}/udp`]);
  const [a, b, c] = [await udpClient(cleanup), await udpClient(cleanup), await udpClient(cleanup)];
  const seenFrom = (name: string): number[] => echo.seen.filter((s) => s.data.toString().startsWith(name)).map((s) => s.port);
  await ask(a, 'a1', port);
  await ask(b, 'b1', port);
  await ask(b, 'b2', port);
  await ask(c, 'c1', port); // a is the least recently used: its origin closes
  assert.equal((logText().match(/ UDP \d+: close$/gm) ?? []).length, 1);
  assert.equal((await ask(b, 'b3', port))?.toString(), 're:b3');
  assert.equal((await ask(a, 'a2', port))?.toString(), 're:a2'); // a needs room again: c goes
  const [pa, pb] = [seenFrom('a'), seenFrom('b')];
  assert.equal(new Set(pb).size, 1, 'b kept its origin');
  assert.notEqual(pa[0], pa[1], 'a got a new origin');
});

test('warpstone: an origin relays answers from any sender back to its client (stone does too)', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await udpEcho(cleanup);
  const port = await freePort();
  await inProcess(cleanup, [`127.0.0.1:${echo.port}/udp`, `${port}/udp`]);
  const c = await udpClient(cleanup);
  await ask(c, 'hello', port);
  const origin = echo.seen[0]?.port as number;
  const other = dgram.createSocket('udp4');
  cleanup.add(() => new Promise<void>((r) => other.close(() => r())));
  other.send('from elsewhere', origin, '127.0.0.1');
  assert.equal((await c.next())?.data.toString(), 'from elsewhere');
});

test('warpstone: several frames in one TCP write go out at once (stone holds back all but the first until the next read)', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await udpEcho(cleanup);
  const port = await freePort();
  await inProcess(cleanup, [`127.0.0.1:${echo.port}/udp`, String(port)]);
  const c = await converse(port);
  c.socket.write(Buffer.concat([frame('one'), frame('two'), frame('three').subarray(0, 3)]));
  const two = Buffer.concat([frame('re:one'), frame('re:two')]);
  assert.deepEqual(await c.waitForBytes(two.length), two);
  c.socket.write(frame('three').subarray(3));
  assert.deepEqual(await c.waitForBytes(two.length + frame('re:three').length), Buffer.concat([two, frame('re:three')]), 'a frame split over two writes is joined');
  c.socket.destroy();
});

test('warpstone: a datagram from a stranger to a TCP->UDP pair is logged and dropped; the pair goes on', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const echo = await udpEcho(cleanup);
  const port = await freePort();
  const { logText } = await inProcess(cleanup, [`127.0.0.1:${echo.port}/udp`, String(port)]);
  const c = await converse(port);
  c.socket.write(frame('one'));
  await c.waitForBytes(frame('re:one').length);
  const pairPort = echo.seen[0]?.port as number;
  const other = dgram.createSocket('udp4');
  cleanup.add(() => new Promise<void>((r) => other.close(() => r())));
  other.send('intruder', pairPort, '127.0.0.1');
  await until(() => /UDP \d+: received from unknown 127\.0\.0\.1:\d+\/udp$/m.test(logText()), 'the stranger to be logged');
  c.socket.write(frame('two'));
  const all = await c.waitForBytes(frame('re:one').length + frame('re:two').length);
  assert.deepEqual(all, Buffer.concat([frame('re:one'), frame('re:two')]), 'nothing of the intruder reached the client');
  c.socket.destroy();
});

test('warpstone: -T closes an idle UDP->TCP association; the next datagram opens a new connection', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.pipe(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
  cleanup.add(() => {
    server.getConnections(() => undefined);
  });
  const port = await freePort();
  const { logText } = await inProcess(cleanup, ['-ddd', '-T', '1', `127.0.0.1:${(server.address() as net.AddressInfo).port}`, `${port}/udp`]);
  const u = await udpClient(cleanup);
  assert.equal((await ask(u, 'first', port))?.toString(), 'first');
  assert.equal((await ask(u, 'second', port))?.toString(), 'second');
  assert.equal(connections, 1);
  await until(() => /TCP -1: idle time exceeds$/m.test(logText()), 'the idle association to close', 8000);
  assert.equal((await ask(u, 'third', port))?.toString(), 'third');
  assert.equal(connections, 2);
});

test('warpstone: -u caps UDP->TCP associations too (stone has no limit there)', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
  const port = await freePort();
  await inProcess(cleanup, ['-u', '2', `127.0.0.1:${(server.address() as net.AddressInfo).port}`, `${port}/udp`]);
  const clients = [await udpClient(cleanup), await udpClient(cleanup), await udpClient(cleanup)];
  for (const [i, c] of clients.entries()) assert.equal((await ask(c, `c${i}`, port))?.toString(), `c${i}`);
  await until(() => sockets.size === 2, 'the oldest association to be closed');
  assert.equal((await ask(clients[2] as (typeof clients)[2], 'still', port))?.toString(), 'still');
});
