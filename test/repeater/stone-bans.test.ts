// `warpstone stone --ban-home DIR`: the relay's ban guard in the repeater, with real processes.
// A stone whose xhost list admits only 127.0.0.1: clients from 127.0.0.2 are refused by xhost,
// each refusal counts, after --ban-maxretry the source is dropped at accept (the xhost check never
// runs again: no new `access denied` line), `warpstone ban list` shows the ban, 127.0.0.1 keeps
// relaying, the ban expires after --ban-time, a repeat ban lasts --ban-increment times longer and
// `warpstone ban remove` lifts it in the running stone. A second stone (with --json) has an SSL
// listener that drops a source banned with `warpstone ban add`'s code before the TLS handshake (not one
// byte comes back) and a UDP pair that drops such a source's datagrams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import dgram from 'node:dgram';
import { Cleanup, echoServer, freePort, makeHome, runWarpstone } from '../helpers/harness.ts';
import type { Program } from '../helpers/programs.ts';
import { ownOptions } from '../../src/cli/stone.ts';
import { runBanAdd } from '../../src/cli/ban.ts';
import { startRepeater, until, waitListening } from './stone-runner.ts';

/** Connects from `localAddress`, sends `payload`, half-closes, and returns what came back. */
function talk(port: number, localAddress: string, payload = 'ping'): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ host: '127.0.0.1', port, localAddress, allowHalfOpen: false });
    const timer = setTimeout(() => socket.destroy(), 5_000);
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

const count = (text: string, pattern: RegExp): number => (text.match(new RegExp(pattern.source, 'gm')) ?? []).length;
const DENIED_FROM_2 = /access denied: from 127\.0\.0\.2:/;

async function waitLog(stone: Program, pattern: RegExp, what: string, atLeast = 1): Promise<void> {
  await stone.waitUntil((_out, err) => count(err, pattern) >= atLeast, what, 15_000);
}

test('ownOptions: --json and --ban-* before stone arguments; stone tokens after them are untouched', () => {
  const own = ownOptions(['--ban-home', '/tmp/h', '--json', '--ban-maxretry=3', '--ban-ignore', '10.0.0.0/8', '-d', 'a:1', '2', '--ban-time', '1s']);
  assert.equal(own.json, true);
  assert.equal(own.bans?.home, '/tmp/h');
  assert.equal(own.bans?.settings.maxRetry, 3);
  assert.equal(own.bans?.settings.ignore.size, 1);
  assert.deepEqual(own.stoneArgs, ['-d', 'a:1', '2', '--ban-time', '1s']);
  assert.equal(ownOptions(['--json', 'a:1', '2']).bans, undefined);
  assert.throws(() => ownOptions(['--ban-maxretry', '3', 'a:1', '2']), /--ban-maxretry needs --ban-home/);
  assert.throws(() => ownOptions(['--ban-home']), /--ban-home needs a value/);
  assert.throws(() => ownOptions(['--ban-home', '/h', '--ban-maxretry', 'x']), /--ban-maxretry: 'x'/);
  assert.throws(() => ownOptions(['--ban-home', '/h', '--ban-tim', '1s']), /--ban-tim: unknown option/);
});

test('xhost denials ban a source: dropped at accept, listed, expire, grow, and ban remove lifts them', async () => {
  const cleanup = new Cleanup();
  try {
    const home = await makeHome(cleanup);
    const echo = await echoServer(cleanup);
    const port = await freePort();
    const stone = startRepeater(cleanup, 'warpstone', [
      '--ban-home', home.dir, '--ban-maxretry', '3', '--ban-time', '2s', '--ban-increment', '30', '--ban-maxtime', '1h',
      `127.0.0.1:${echo}`, `127.0.0.1:${port}`, '127.0.0.1',
    ]);
    await waitListening(stone, 1);
    assert.match(stone.stderr(), /ban: bans enabled .*maxretry=3/);
    assert.equal((await talk(port, '127.0.0.1', 'hello')).toString(), 'hello');

    // three refusals by xhost: the third bans 127.0.0.2/32
    for (let i = 1; i <= 3; i++) {
      assert.equal((await talk(port, '127.0.0.2')).length, 0);
      await waitLog(stone, DENIED_FROM_2, `access denied #${i}`, i);
    }
    await waitLog(stone, /ban: source banned for 2 s prefix=127\.0\.0\.2\/32 .*xhost-denied x3/, 'the first ban');

    // banned: dropped before the xhost check (no fourth `access denied`), logged as a drop
    assert.equal((await talk(port, '127.0.0.2')).length, 0);
    await waitLog(stone, /ban: connection dropped: source is banned .*source=127\.0\.0\.2:\d+ prefix=127\.0\.0\.2\/32/, 'the drop line');
    assert.equal(count(stone.stderr(), DENIED_FROM_2), 3);
    assert.equal((await talk(port, '127.0.0.1', 'still here')).toString(), 'still here');

    // the ban expires after --ban-time: xhost decides again
    await waitLog(stone, /ban: ban expired; source admitted again prefix=127\.0\.0\.2\/32/, 'the ban expiring');
    assert.equal((await talk(port, '127.0.0.2')).length, 0);
    await waitLog(stone, DENIED_FROM_2, 'access denied after the ban', 4);

    // a repeat offence: 2 s x 30 = 1 min, listed by `warpstone ban list`
    for (let i = 5; i <= 6; i++) {
      await talk(port, '127.0.0.2');
      await waitLog(stone, DENIED_FROM_2, `access denied #${i}`, i);
    }
    await waitLog(stone, /ban: source banned for 1 min \(offence 2\) prefix=127\.0\.0\.2\/32/, 'the repeat ban');
    const listed = await runWarpstone(['ban', 'list', '--json', '--home', home.dir], home.env);
    assert.equal(listed.code, 0, listed.stderr);
    const bans = JSON.parse(listed.stdout) as { prefix: string; offence: number; by: string; reason: string }[];
    const ban = bans.find((b) => b.prefix === '127.0.0.2/32');
    assert.ok(ban, listed.stdout);
    assert.equal(ban.offence, 2);
    assert.equal(ban.by, 'auto');
    assert.match(ban.reason, /xhost-denied x3/);
    assert.equal((await talk(port, '127.0.0.2')).length, 0);
    await waitLog(stone, /ban: connection dropped: source is banned/, 'a drop under the repeat ban', 2);
    assert.equal(count(stone.stderr(), DENIED_FROM_2), 6);

    // `warpstone ban remove` reaches the running stone
    const removed = await runWarpstone(['ban', 'remove', '127.0.0.2', '--home', home.dir], home.env);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /unbanned 127\.0\.0\.2\/32/);
    await waitLog(stone, /ban: ban removed by an admin; source admitted again prefix=127\.0\.0\.2\/32/, 'the admin removal');
    await talk(port, '127.0.0.2');
    await waitLog(stone, DENIED_FROM_2, 'access denied after the removal', 7);
    assert.equal((await talk(port, '127.0.0.1', 'bye')).toString(), 'bye');

    stone.child.kill('SIGTERM');
    assert.equal(await stone.exited, 0);
  } finally {
    await cleanup.run();
  }
});

/** Bytes the server sent back to a TLS client from `localAddress` (0: dropped before a ServerHello). */
function tlsBytesBack(port: number, localAddress: string): Promise<{ bytes: number; secure: boolean }> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port, localAddress });
    raw.on('error', () => undefined);
    let secure = false;
    const client = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' }, () => {
      secure = true;
      client.end();
    });
    client.on('error', () => undefined);
    const timer = setTimeout(() => client.destroy(), 5_000);
    client.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes: raw.bytesRead, secure });
    });
  });
}

test('--json: an SSL listener drops a banned source before the handshake, a UDP pair drops its datagrams', async () => {
  const cleanup = new Cleanup();
  try {
    const home = await makeHome(cleanup);
    // what `warpstone ban add ADDR --for 1h` runs (in-process: a spawn costs seconds on a busy box)
    for (const address of ['127.0.0.2', '127.0.0.3']) await runBanAdd(home.dir, address, { forMs: 3_600_000 });
    const identity = await home.issue('agent', 'stone-front');
    const echo = await echoServer(cleanup);
    const udpEcho = dgram.createSocket('udp4');
    udpEcho.on('message', (msg, from) => udpEcho.send(msg, from.port, from.address));
    await new Promise<void>((resolve) => udpEcho.bind(0, '127.0.0.1', resolve));
    cleanup.add(() => udpEcho.close());
    const sslPort = await freePort();
    const udpPort = await freePort();
    const stone = startRepeater(cleanup, 'warpstone', [
      '--json', '--ban-home', home.dir,
      '-z', `key=${identity}`, '-z', `cert=${identity}`,
      `127.0.0.1:${echo}`, `127.0.0.1:${sslPort}/ssl`, '--',
      `127.0.0.1:${udpEcho.address().port}/udp`, `127.0.0.1:${udpPort}/udp`,
    ]);
    await waitListening(stone, 2, () => stone.stderr().split('\n').map((l) => (l.startsWith('{') ? (JSON.parse(l) as { message: string }).message : l)).join('\n'));

    const allowed = await tlsBytesBack(sslPort, '127.0.0.1');
    assert.equal(allowed.secure, true);
    assert.ok(allowed.bytes > 0);
    const banned = await tlsBytesBack(sslPort, '127.0.0.2');
    assert.equal(banned.secure, false);
    assert.equal(banned.bytes, 0, 'no ServerHello for a banned source');

    const sender = (localAddress: string): Promise<dgram.Socket> =>
      new Promise((resolve) => {
        const s = dgram.createSocket('udp4');
        cleanup.add(() => s.close());
        s.bind(0, localAddress, () => resolve(s));
      });
    const good = await sender('127.0.0.1');
    const answered = new Promise<string>((resolve) => good.once('message', (m) => resolve(m.toString())));
    good.send('dgram ok', udpPort, '127.0.0.1');
    assert.equal(await answered, 'dgram ok');
    const bad = await sender('127.0.0.3');
    let badAnswers = 0;
    bad.on('message', () => badAnswers++);
    bad.send('dgram banned', udpPort, '127.0.0.1');

    const drops = (): { source: string; prefix: string; level: string }[] =>
      stone
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { event?: string; message: string; source: string; prefix: string; level: string })
        .filter((e) => e.event === 'ban' && e.message.startsWith('ban: connection dropped'));
    await until(() => drops().some((d) => d.prefix === '127.0.0.3/32'), 'the UDP drop line');
    const ssl = drops().find((d) => d.prefix === '127.0.0.2/32');
    assert.ok(ssl, stone.stderr());
    assert.match(ssl.source, /^127\.0\.0\.2:\d+$/);
    assert.equal(ssl.level, 'info');
    // the drop is logged as the datagram is discarded: a reply would have had the same turn
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(badAnswers, 0);
    assert.doesNotMatch(stone.stderr(), /SSL_accept|handshake/i);

    stone.child.kill('SIGTERM');
    assert.equal(await stone.exited, 0);
  } finally {
    await cleanup.run();
  }
});
