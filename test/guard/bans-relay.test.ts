// Bans through real relay processes on loopback, with real TLS. An attacker binds its own
// loopback address (127.0.0.2, ...), so the relay tells it from the good user on 127.0.0.1:
// it crosses maxretry with no certificate and with a certificate from another CA, is then
// dropped before any TLS work (no ServerHello ever comes back; the relay logs why), is admitted
// again after bantime, and gets a longer ban when it comes back. Bans survive a relay restart;
// `warpstone ban add/remove` changes a running relay within about a second; the ignore list holds.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import { join } from 'node:path';
import { Cleanup, makeHome, startWarpstone, runWarpstone, freePort, echoServer, type Home, type Proc } from '../helpers/harness.ts';
import { waitForLog, logLines, h2EchoRoundTrip, captureClientHello, type LogLine } from '../helpers/tls-clients.ts';
import { readIdentityFile, type Identity } from '../../src/pki/pem.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Attempt {
  /** the TLS handshake completed (the relay then refused the identity) */
  handshake: boolean;
  error?: string;
}

/** One TLS connection from `from`; resolves once the relay has closed it. */
function tlsAttempt(port: number, from: string, ca: string, identity?: Identity): Promise<Attempt> {
  return new Promise((resolve) => {
    let handshake = false;
    let error: string | undefined;
    const raw = net.connect({ host: '127.0.0.1', port, localAddress: from });
    raw.on('error', (err) => (error ??= err.message));
    const socket = tls.connect({
      socket: raw,
      ca,
      ...(identity ? { key: identity.keyPem, cert: identity.certPem } : {}),
      checkServerIdentity: () => undefined,
      // an attacker with a stranger's certificate does not know our CA; it goes on anyway
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => socket.destroy(), 8_000);
    socket.once('secureConnect', () => {
      handshake = true;
      socket.write('CONNECT echo HTTP/1.1\r\n\r\n');
    });
    socket.on('data', () => undefined);
    socket.once('end', () => socket.destroy());
    socket.on('error', (err) => (error ??= err.message));
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ handshake, ...(error ? { error } : {}) });
    });
  });
}


/** Raw TCP from `from`, a ClientHello sent: every byte the relay answered until it closed. */
function rawHello(port: number, from: string, hello: Buffer): Promise<{ answered: Buffer; source: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    const chunks: Buffer[] = [];
    let source = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the relay kept the connection from ${from} open for 5 s`));
    }, 5_000);
    socket.once('connect', () => {
      source = `${socket.localAddress}:${socket.localPort}`;
      socket.write(hello);
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ answered: Buffer.concat(chunks), source });
    });
  });
}

/** Asserts that `from` is dropped before TLS: no byte of a ServerHello, and the relay says banned. */
async function assertDroppedBeforeTls(relay: Proc, port: number, from: string, hello: Buffer, since: number): Promise<LogLine> {
  const { answered, source } = await rawHello(port, from, hello);
  assert.equal(answered.length, 0, `the relay answered ${answered.length} bytes (a ServerHello starts with 0x16): ${answered.subarray(0, 16).toString('hex')}`);
  const attempt = await tlsAttempt(port, from, '');
  assert.equal(attempt.handshake, false, 'a TLS client never completes a handshake');
  assert.match(attempt.error ?? '', /socket disconnected before secure TLS connection|ECONNRESET|socket hang up/);
  return waitForLog(relay, (l) => String(l.msg).startsWith('connection dropped: source is banned') && l.source === source, 5_000, `banned drop of ${source}`, since);
}

async function startRelay(home: Home, port: number, args: string[]): Promise<Proc> {
  const relay = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${port}`, ...args], home.env);
  await relay.waitFor(/relay listening/);
  return relay;
}

test('an attacker crosses maxretry, is dropped before TLS, is released after bantime, and comes back to a longer ban', async () => {
  const home = await makeHome(cleanup);
  const alice = readIdentityFile(await home.issue('user', 'alice'));
  await home.grant('alice', 'echo');
  const stranger = readIdentityFile(await (await makeHome(cleanup)).issue('user', 'mallory'));
  const port = await freePort();
  const relay = await startRelay(home, port, ['--ban-maxretry', '3', '--ban-findtime', '1m', '--ban-time', '2s', '--ban-increment', '2.5', '--ban-maxtime', '1h']);
  const service = await echoServer(cleanup);
  const agent = startWarpstone(cleanup, ['agent', '--identity', await home.issue('agent', 'box'), '--relay', `127.0.0.1:${port}`, '--expose', `echo=127.0.0.1:${service}`], home.env);
  await agent.waitFor(/tunnel registered/);
  const hello = await captureClientHello();

  // three refused handshakes: no certificate, then a certificate from another CA (twice)
  const first = [await tlsAttempt(port, '127.0.0.2', home.caPem), await tlsAttempt(port, '127.0.0.2', home.caPem, stranger), await tlsAttempt(port, '127.0.0.2', home.caPem, stranger)];
  assert.deepEqual(first.map((a) => a.handshake), [true, true, true], 'before the ban, TLS runs and the relay refuses the identity');
  const banned = await waitForLog(relay, (l) => l.msg === 'source banned for 2 s' && l.prefix === '127.0.0.2/32', 5_000, 'the first ban');
  assert.equal(banned.offence, 1);
  assert.match(String(banned.reason), /^3 failures in .*: tls-no-certificate x1, tls-unknown-ca x2$/);
  const refusals = logLines(relay).filter((l) => l.msg === 'connection refused' && String(l.source).startsWith('127.0.0.2:'));
  assert.deepEqual(refusals.map((l) => l.code), ['WS_NO_CERT', 'WS_CERT_FOREIGN_CA', 'WS_CERT_FOREIGN_CA']);
  assert.match(String(refusals[1]?.explain), /the certificate of 'mallory' was issued by "warpstone CA .*", not by this relay's CA "warpstone CA .*"/);

  const mark = relay.output().length;
  await assertDroppedBeforeTls(relay, port, '127.0.0.2', hello, mark);
  // the good user on another address is not affected
  await h2EchoRoundTrip(alice, port);

  // released after bantime: the handshake runs again
  await waitForLog(relay, (l) => l.msg === 'ban expired; source admitted again' && l.prefix === '127.0.0.2/32', 10_000, 'the ban to expire');
  const again = await tlsAttempt(port, '127.0.0.2', home.caPem);
  assert.equal(again.handshake, true, 'admitted again after bantime');

  // back for more: two more failures make three within findtime -> a second, longer ban (2 s x 2.5)
  await tlsAttempt(port, '127.0.0.2', home.caPem, stranger);
  await tlsAttempt(port, '127.0.0.2', home.caPem, stranger);
  const second = await waitForLog(relay, (l) => l.msg === 'source banned for 5 s (offence 2)', 5_000, 'the second, longer ban');
  assert.equal(second.prefix, '127.0.0.2/32');
  await assertDroppedBeforeTls(relay, port, '127.0.0.2', hello, relay.output().length);
  const store = await openSqliteStore(join(home.dir, 'store.sqlite'));
  try {
    const history = (await store.listBans({ all: true })).filter((b) => b.prefix === '127.0.0.2/32');
    assert.deepEqual(history.map((b) => [b.offence, b.until.getTime() - b.bannedAt.getTime(), b.by]), [
      [1, 2_000, 'auto'],
      [2, 5_000, 'auto'],
    ]);
  } finally {
    await store.close();
  }
});

test('bans survive a relay restart; `warpstone ban add/remove` applies to a running relay; the ignore list holds', async () => {
  const home = await makeHome(cleanup);
  const alice = readIdentityFile(await home.issue('user', 'alice'));
  const port = await freePort();
  const args = ['--ban-maxretry', '3', '--ban-time', '10m', '--ban-ignore', '127.0.0.5'];
  let relay = await startRelay(home, port, args);
  const hello = await captureClientHello();

  for (let i = 0; i < 3; i++) await tlsAttempt(port, '127.0.0.3', home.caPem);
  await waitForLog(relay, (l) => l.msg === 'source banned for 10 min' && l.prefix === '127.0.0.3/32', 5_000, 'the ban of 127.0.0.3');
  assert.equal(await relay.stop('SIGTERM'), 0);

  relay = await startRelay(home, port, args);
  assert.match(relay.output(), /"active":1,.*"msg":"bans enabled"/);
  await assertDroppedBeforeTls(relay, port, '127.0.0.3', hello, 0);
  assert.equal((await tlsAttempt(port, '127.0.0.1', home.caPem, alice)).handshake, true, 'others are admitted');

  // the ignore list: many failures from 127.0.0.5, never banned
  for (let i = 0; i < 6; i++) assert.equal((await tlsAttempt(port, '127.0.0.5', home.caPem)).handshake, true, `attempt ${i + 1} from an ignored address`);
  assert.ok(!relay.output().includes('"prefix":"127.0.0.5/32"'), 'no ban for an ignored address');

  // an admin ban from the CLI reaches the running relay within about a second
  const add = await runWarpstone(['ban', 'add', '127.0.0.4', '--for', '1h', '--reason', 'port scan from the lab'], home.env);
  assert.equal(add.code, 0, add.stderr);
  assert.match(add.stdout, /^banned 127\.0\.0\.4\/32 for 1 h, until \S+ \(offence 1\)\n$/);
  await waitForLog(relay, (l) => l.msg === 'ban added by an admin' && l.prefix === '127.0.0.4/32', 5_000, 'the relay to load the admin ban');
  await assertDroppedBeforeTls(relay, port, '127.0.0.4', hello, relay.output().length);
  const list = await runWarpstone(['ban', 'list'], home.env);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^PREFIX\s+UNTIL\s+OFFENCE\s+BY\s+REASON\n/);
  assert.match(list.stdout, /\n127\.0\.0\.3\/32\s+\S+ \(in 9 min( \d+ s)?\)\s+1\s+auto\s+3 failures in .*: tls-no-certificate x3\n/);
  assert.match(list.stdout, /\n127\.0\.0\.4\/32\s+\S+ \(in 59 min( \d+ s)?\)\s+1\s+admin\s+port scan from the lab\n/);

  const remove = await runWarpstone(['ban', 'remove', '127.0.0.4'], home.env);
  assert.equal(remove.code, 0, remove.stderr);
  assert.equal(remove.stdout, 'unbanned 127.0.0.4/32\n');
  await waitForLog(relay, (l) => l.msg === 'ban removed by an admin; source admitted again' && l.prefix === '127.0.0.4/32', 5_000, 'the relay to lift the ban');
  assert.equal((await tlsAttempt(port, '127.0.0.4', home.caPem, alice)).handshake, true, 'admitted again after `ban remove`');
  const again = await runWarpstone(['ban', 'remove', '127.0.0.4'], home.env);
  assert.equal(again.stdout, '127.0.0.4/32 was not banned\n');

  const bad = await runWarpstone(['ban', 'add', 'not-an-address'], home.env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /ADDR: "not-an-address" is not an IP address or CIDR block/);
  const badFor = await runWarpstone(['ban', 'add', '192.0.2.1', '--for', '10'], home.env);
  assert.equal(badFor.code, 2);
  assert.match(badFor.stderr, /--for: '10' needs a unit/);
});

test('relay ban flags are checked before anything starts', async () => {
  const home = await makeHome(cleanup);
  const bad = await runWarpstone(['relay', '--listen', `127.0.0.1:${await freePort()}`, '--ban-time', '10'], home.env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--ban-time: '10' needs a unit \(did you mean '10s' or '10m'\?\)/);
  const ignore = await runWarpstone(['relay', '--listen', `127.0.0.1:${await freePort()}`, '--ban-ignore', '10.0.0.0/40'], home.env);
  assert.equal(ignore.code, 2);
  assert.match(ignore.stderr, /--ban-ignore: "10.0.0.0\/40" has prefix length '40'/);
});

test('a ban also closes what the source already holds: an authenticated client enumerating tunnels on one HTTP/2 session is cut off', async () => {
  const home = await makeHome(cleanup);
  const userPath = await home.issue('user', 'mallory');
  const mallory = readIdentityFile(userPath);
  const port = await freePort('127.0.0.1');
  const relay = await startRelay(home, port, ['--ban-maxretry', '3', '--ban-findtime', '1m', '--ban-time', '1m']);
  const raw = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3' });
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    createConnection: () =>
      tls.connect({ socket: raw, ca: home.caPem, key: mallory.keyPem, cert: mallory.certPem, ALPNProtocols: ['warpstone/1'], checkServerIdentity: () => undefined }),
  });
  session.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
  const statuses: number[] = [];
  // Every guess is refused (403: not granted, whether or not it exists); the third crosses maxretry, and the relay then ends the session
  // instead of letting it guess on forever.
  for (let i = 0; i < 10 && !session.closed && !session.destroyed; i++) {
    const status = await new Promise<number | undefined>((resolve) => {
      const stream = session.request({ ':method': 'CONNECT', ':authority': `guess${i}:80` });
      stream.on('response', (headers) => resolve(Number(headers[':status'])));
      stream.on('error', () => resolve(undefined));
      stream.on('close', () => resolve(undefined));
    });
    if (status !== undefined) statuses.push(status);
  }
  await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the banned session was not closed within 5 s')), 5_000))]);
  assert.ok(statuses.length >= 3 && statuses.length < 10, `answers before the cut: ${statuses.join(',')}`);
  assert.ok(statuses.every((s) => s === 403 || s === 404), statuses.join(','));
  await waitForLog(relay, (l) => l.msg === 'closed the connections of a banned source' && l.connections === 1, 5_000, 'ban closing the live session');
});

test('--no-ban: failures ban nobody, but a ban added with `warpstone ban add` still drops the source', async () => {
  const home = await makeHome(cleanup);
  const port = await freePort();
  const relay = await startRelay(home, port, ['--no-ban', '--ban-maxretry', '2']);
  assert.match(relay.output(), /automatic bans are off \(--no-ban\); bans added with `warpstone ban add` still apply/);
  const hello = await captureClientHello();
  for (let i = 0; i < 5; i++) assert.equal((await tlsAttempt(port, '127.0.0.6', home.caPem)).handshake, true, `attempt ${i + 1}: never banned automatically`);
  const add = await runWarpstone(['ban', 'add', '127.0.0.6', '--for', '1h'], home.env);
  assert.equal(add.code, 0, add.stderr);
  await waitForLog(relay, (l) => l.msg === 'ban added by an admin' && l.prefix === '127.0.0.6/32', 5_000, 'the relay to load the admin ban');
  await assertDroppedBeforeTls(relay, port, '127.0.0.6', hello, relay.output().length);
});
