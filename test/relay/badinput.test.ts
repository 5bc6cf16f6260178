// Bad input at the relay, through real processes: identities the relay must refuse, streams it
// must refuse, bytes that are not the protocol. Each refusal is checked three ways: what the
// client sees, the relay's log line with the reason, and that the relay goes on serving a good
// client afterwards.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import {
  Cleanup,
  makeHome,
  startCluster,
  startWarpstone,
  freePort,
  type Cluster,
  type Home,
} from '../helpers/harness.ts';
import {
  waitForLog,
  textConnect,
  tlsOpen,
  tcpOpen,
  closedWithin,
  collect,
  echoOnce,
  formatSource,
  sleep,
  h2EchoRoundTrip,
  h2OpenError,
  captureClientHello,
  relayClient,
  type LogLine,
} from '../helpers/tls-clients.ts';
import { readIdentityFile, type Identity } from '../../src/pki/pem.ts';
import { runRevoke } from '../../src/cli/revoke.ts';
import { StreamRefused } from '../../src/common/errors.ts';
import { withStore } from '../../src/cli/shared.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

let cluster: Cluster;
let home: Home;
let port: number;
let alice: Identity;
let bob: Identity;
let carol: Identity;
let expired: Identity;
let foreign: Identity;

/** Outcome of a connection that stalls during the handshake: ms until the relay closed it. */
interface Stall {
  what: string;
  source: string;
  closedAfterMs: Promise<number>;
}
let stalls: Stall[] = [];

const relayLog = (predicate: (l: LogLine) => boolean, what: string, timeoutMs = 5_000, since = 0): Promise<LogLine> =>
  waitForLog(cluster.relay, predicate, timeoutMs, `relay log: ${what}`, since);

/** The relay still runs and a good user still gets an echo round trip on a new connection. */
async function relayStillServes(): Promise<void> {
  assert.equal(cluster.relay.child.exitCode, null, 'the relay process exited');
  assert.equal(cluster.relay.child.signalCode, null, 'the relay process was killed');
  await h2EchoRoundTrip(alice, port);
}

/** The h2 client's open() was refused with this status, code and reason (not cut off, not hung). */
function assertRefused(err: Error & { code?: string; status?: number }, status: number, code: string, reason: RegExp): void {
  assert.ok(err instanceof StreamRefused, `expected StreamRefused, got ${err.name}: ${err.message}`);
  assert.equal(err.status, status, err.message);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, reason);
}

async function policyReloads(change: () => Promise<unknown>): Promise<void> {
  const mark = cluster.relay.output().length;
  await change();
  // A change of several writes can be seen half-way by one poll: wait for the reload that saw
  // the store's revision after the last write.
  const revision = await withStore(cluster.home.dir, (store) => store.revision());
  await relayLog((l) => l.msg === 'policy reloaded' && Number(l.revision) >= revision, `policy reloaded at revision ${revision}`, 5_000, mark);
}


async function startStall(what: string, firstBytes: Buffer | undefined): Promise<Stall> {
  const socket = await tcpOpen(port);
  const since = Date.now();
  if (firstBytes) socket.write(firstBytes);
  return { what, source: formatSource(socket.localAddress, socket.localPort), closedAfterMs: closedWithin(socket, 20_000, since) };
}

test('setup: relay, agents (serving, stopped, target down), users, a foreign CA', async () => {
  // Dozens of refusals from 127.0.0.1 on purpose: with bans on, the relay would ban the tests.
  cluster = await startCluster(cleanup, { relayArgs: ['--no-ban'] });
  home = cluster.home;
  port = cluster.relayPort;
  alice = readIdentityFile(cluster.userIdentity);
  // The stalled handshakes take ~10 s to be dropped: start them now, check them last.
  const hello = await captureClientHello();
  assert.equal(hello[0], 0x16, 'captured bytes are a TLS handshake record');
  stalls = [await startStall('a TCP client that sends nothing', undefined), await startStall('half a ClientHello', hello.subarray(0, Math.floor(hello.length / 2)))];

  bob = readIdentityFile(await home.issue('user', 'bob'));
  carol = readIdentityFile(await home.issue('user', 'carol'));
  const day = 86_400_000;
  expired = readIdentityFile(await home.issueRaw('user', 'oldtimer', { notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) }));
  const other = await makeHome(cleanup);
  foreign = readIdentityFile(await other.issue('user', 'mallory'));

  // 'gone': a tunnel whose agent registered and then stopped.
  const goneService = await freePort();
  const gone = startWarpstone(cleanup, ['agent', '--identity', await home.issue('agent', 'gonebox'), '--relay', `127.0.0.1:${port}`, '--expose', `gone=127.0.0.1:${goneService}`], home.env);
  await gone.waitFor(/tunnel registered/);
  assert.equal(await gone.stop('SIGTERM'), 0);

  // 'dead': an agent whose target port has nothing listening.
  const deadPort = await freePort();
  const dead = startWarpstone(cleanup, ['agent', '--identity', await home.issue('agent', 'deadbox'), '--relay', `127.0.0.1:${port}`, '--expose', `dead=127.0.0.1:${deadPort}`], home.env);
  await dead.waitFor(/tunnel registered/);

  await policyReloads(async () => {
    for (const t of ['gone', 'dead', 'nosuch']) await home.grant('alice', t);
    await home.grant('carol', 'echo');
  });
  await relayStillServes();
});

// ---------------------------------------------------------------------------------------------
// Identities the relay refuses at the connection level.

const identityCases: Array<{ name: string; identity: () => Identity; code: string; reason: RegExp }> = [
  {
    name: 'a certificate from another CA',
    identity: () => foreign,
    code: 'WS_CERT_FOREIGN_CA',
    reason: /^certificate of 'mallory' was issued by another CA \('warpstone CA [^']+'\), not this relay's$/,
  },
  {
    name: 'an expired certificate',
    identity: () => expired,
    code: 'WS_CERT_EXPIRED',
    reason: /^certificate of 'oldtimer' expired on \d{4}-\d\d-\d\dT/,
  },
];

/** `HTTP/1.1 <status> <reason>` with the reason matching. */
function assertStatusLine(statusLine: string, status: number, reason: RegExp): void {
  const m = /^HTTP\/1\.1 (\d{3}) (.*)$/.exec(statusLine);
  assert.ok(m, `not an HTTP status line: ${JSON.stringify(statusLine)}`);
  assert.equal(Number(m[1]), status, statusLine);
  assert.match(m[2] as string, reason);
}

test('no client certificate: text and h2 clients get 403 with the reason, relay logs WS_NO_CERT', async () => {
  const answer = await textConnect({ port, ca: home.caPem, target: 'echo' });
  assert.equal(answer.statusLine, 'HTTP/1.1 403 no client certificate was presented');
  const line = await relayLog((l) => l.code === 'WS_NO_CERT' && l.source === answer.source, 'WS_NO_CERT for the text client');
  assert.match(String(line.reason), /no client certificate/);

  // h2: the same client code `warpstone connect` uses, holding no key or certificate
  const mark = cluster.relay.output().length;
  const err = await h2OpenError({ ...alice, keyPem: '', certPem: '' }, port, 'echo');
  assertRefused(err, 403, 'WS_NO_CERT', /^no client certificate was presented$/);
  await relayLog((l) => l.code === 'WS_NO_CERT' && l.msg === 'connection refused', 'WS_NO_CERT for the h2 client', 5_000, mark);
  await relayStillServes();
});

for (const c of identityCases) {
  test(`${c.name}: text and h2 clients get 403 with the reason, relay logs ${c.code}`, async () => {
    const id = c.identity();
    const answer = await textConnect({ port, ca: home.caPem, key: id.keyPem, cert: id.certPem, target: 'echo' });
    assertStatusLine(answer.statusLine, 403, c.reason);
    const line = await relayLog((l) => l.code === c.code && l.source === answer.source, `${c.code} for the text client`);
    assert.equal(line.name, id.name);
    assert.match(String(line.reason), c.reason);

    const mark = cluster.relay.output().length;
    // the client trusts the right relay CA but presents a certificate the relay must refuse
    const err = await h2OpenError({ ...id, caPem: home.caPem }, port, 'echo');
    assertRefused(err, 403, c.code, c.reason);
    await relayLog((l) => l.code === c.code && l.name === id.name && l.msg === 'connection refused', `${c.code} for the h2 client`, 5_000, mark);
    await relayStillServes();
  });
}

test('a revoked certificate: works before `revoke`, refused after the policy poll; relay logs WS_REVOKED', async () => {
  await h2EchoRoundTrip(carol, port);
  await policyReloads(() => runRevoke(home.dir, 'carol'));

  const answer = await textConnect({ port, ca: home.caPem, key: carol.keyPem, cert: carol.certPem, target: 'echo' });
  assertStatusLine(answer.statusLine, 403, /^certificate of 'carol' .*revoked/);
  const line = await relayLog((l) => l.code === 'WS_REVOKED' && l.source === answer.source, 'WS_REVOKED for the text client');
  assert.equal(line.name, 'carol');

  const mark = cluster.relay.output().length;
  assertRefused(await h2OpenError(carol, port, 'echo'), 403, 'WS_REVOKED', /^certificate of 'carol' .*revoked/);
  await relayLog((l) => l.code === 'WS_REVOKED' && l.name === 'carol' && l.msg === 'connection refused', 'WS_REVOKED for the h2 client', 5_000, mark);
  await relayStillServes();
});

// ---------------------------------------------------------------------------------------------
// Streams the relay refuses: the connection is fine, the request is not.

const streamCases: Array<{ name: string; user: () => Identity; target: string; status: number; code: string; reason: RegExp}> = [
  { name: 'user not granted', user: () => bob, target: 'echo', status: 403, code: 'WS_NOT_GRANTED', reason: /^user 'bob' is not granted tunnel 'echo'$/ },
  { name: 'unknown tunnel', user: () => alice, target: 'nosuch', status: 404, code: 'WS_NO_SUCH_TUNNEL', reason: /^no tunnel named 'nosuch'$/ },
  {
    name: 'offline tunnel (its agent stopped)',
    user: () => alice,
    target: 'gone',
    status: 503,
    code: 'WS_TUNNEL_OFFLINE',
    reason: /^tunnel 'gone' is offline/,
  },
  {
    name: 'target refuses connections',
    user: () => alice,
    target: 'dead',
    status: 502,
    code: 'WS_TARGET_REFUSED',
    reason: /^target refused: the service behind tunnel 'dead' refused the connection$/,
  },
];

for (const c of streamCases) {
  test(`${c.name}: h2 and text clients get ${c.status} ${c.code} promptly; relay logs the reason`, async () => {
    const user = c.user();
    const mark = cluster.relay.output().length;
    const t0 = Date.now();
    assertRefused(await h2OpenError(user, port, c.target), c.status, c.code, c.reason);
    assert.ok(Date.now() - t0 < 5_000, `refusal took ${Date.now() - t0} ms`);
    const h2Line = await relayLog((l) => l.msg === 'stream refused' && l.code === c.code && l.user === user.name && l.tunnel === c.target && l.via !== 'connect', `${c.code} (h2)`, 5_000, mark);
    assert.match(String(h2Line.reason), c.reason);
    assert.equal(h2Line.tunnel, c.target);

    const answer = await textConnect({ port, ca: home.caPem, key: user.keyPem, cert: user.certPem, target: c.target });
    assertStatusLine(answer.statusLine, c.status, c.reason);
    assert.match(answer.text, /\r\nConnection: close\r\n/);
    const textLine = await relayLog((l) => l.msg === 'stream refused' && l.code === c.code && l.source === answer.source && l.via === 'connect', `${c.code} (text)`);
    assert.match(String(textLine.reason), c.reason);
    await relayStillServes();
  });
}

/**
 * A refused text client that half-closes nothing: it reads the refusal and the relay's FIN but
 * never ends its own side (allowHalfOpen). `released` is true if the relay let go of the
 * connection: 3 s later, writes are answered by a reset (the relay's socket is gone) instead of
 * being read.
 */
async function relayLetsGoOfHalfOpenRefusal(options: { key?: string; cert?: string; request: string }): Promise<{ released: boolean; statusLine: string }> {
  // allowHalfOpen works on tls.connect (it is passed on to the socket) but is not in its types
  const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
    host: '127.0.0.1',
    port,
    ca: home.caPem,
    ...(options.key ? { key: options.key, cert: options.cert } : {}),
    allowHalfOpen: true,
    checkServerIdentity: () => undefined,
  };
  const socket = tls.connect(connectOptions);
  socket.on('error', () => undefined);
  const got = collect(socket);
  const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
  await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
  socket.write(options.request);
  await ended; // the relay answered and sent its FIN; this client keeps its side open
  const statusLine = got.data().toString('latin1').split('\r\n')[0] ?? '';
  await sleep(3_000);
  // after its EOF this socket no longer reads, so a reset shows on the write after the one that
  // drew it
  socket.write('anyone there?\n');
  await sleep(300);
  socket.write('hello?\n');
  const ms = await closedWithin(socket, 2_000);
  socket.destroy();
  return { released: ms <= 2_000, statusLine };
}

test('a refused text client that never closes its side does not hold a relay connection open', async () => {
  const [noCert, notGranted] = await Promise.all([
    relayLetsGoOfHalfOpenRefusal({ request: 'CONNECT echo HTTP/1.1\r\n\r\n' }),
    relayLetsGoOfHalfOpenRefusal({ key: bob.keyPem, cert: bob.certPem, request: 'CONNECT echo HTTP/1.1\r\n\r\n' }),
  ]);
  assert.match(notGranted.statusLine, /^HTTP\/1\.1 403 user 'bob' is not granted/);
  assert.ok(notGranted.released, 'a refused stream (not granted) kept its connection open');
  assert.match(noCert.statusLine, /^HTTP\/1\.1 403 no client certificate was presented/);
  assert.ok(noCert.released, 'a refused connection (no certificate) kept its connection open: any stranger can hold relay sockets');
  await relayStillServes();
});

// ---------------------------------------------------------------------------------------------
// Bytes that are not the protocol.

test('random bytes on the TLS port: closed at once, relay logs WS_NOT_TLS', async () => {
  const socket = await tcpOpen(port);
  const source = formatSource(socket.localAddress, socket.localPort);
  const got = collect(socket);
  const junk = randomBytes(600);
  junk[0] = 0x9c; // not 0x16 (TLS handshake) and not a letter of an HTTP method
  socket.write(junk);
  const ms = await closedWithin(socket, 3_000);
  assert.ok(ms <= 3_000, 'the relay kept a junk connection open');
  assert.equal(got.data().length, 0, 'the relay answered junk with bytes');
  const line = await relayLog((l) => l.code === 'WS_NOT_TLS' && l.source === source, 'WS_NOT_TLS');
  assert.match(String(line.reason), /0x9c is not a TLS handshake/);
  await relayStillServes();
});

test('a TLS record header followed by random bytes: closed at once, relay logs WS_HANDSHAKE', async () => {
  const socket = await tcpOpen(port);
  const source = formatSource(socket.localAddress, socket.localPort);
  const body = randomBytes(300);
  body[0] = 0x01; // ClientHello type, then nonsense
  socket.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x01, 0x2c]), body]));
  const ms = await closedWithin(socket, 3_000);
  assert.ok(ms <= 3_000, 'the relay kept a broken handshake open');
  const line = await relayLog((l) => l.code === 'WS_HANDSHAKE' && l.source === source, 'WS_HANDSHAKE for the bogus ClientHello');
  assert.match(String(line.reason), /TLS handshake failed/);
  await relayStillServes();
});

test('plain HTTP on the TLS port: an HTTP/1.1 400 answer in plain text, relay logs WS_PLAIN_HTTP', async () => {
  const socket = await tcpOpen(port);
  const source = formatSource(socket.localAddress, socket.localPort);
  const got = collect(socket);
  socket.write('GET / HTTP/1.1\r\nHost: relay\r\n\r\n');
  const ms = await closedWithin(socket, 3_000);
  assert.ok(ms <= 3_000, 'the relay did not close after answering');
  const text = got.data().toString('utf8');
  assert.match(text, /^HTTP\/1\.1 400 this port speaks TLS with client certificates; plain HTTP is refused\r\n/);
  assert.match(text, /\r\n\r\nBad Request: this port speaks TLS/);
  const line = await relayLog((l) => l.code === 'WS_PLAIN_HTTP' && l.source === source, 'WS_PLAIN_HTTP');
  assert.match(String(line.reason), /plain HTTP/);
  await relayStillServes();
});

// HTTP/2 frames by hand: 9-byte header (length 24 bits, type, flags, stream id 31 bits) + payload.
function frame(type: number, flags: number, streamId: number, payload: Buffer, declaredLength = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(declaredLength, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const SETTINGS = (payload = Buffer.alloc(0)): Buffer => frame(0x4, 0, 0, payload);

/** Finds a GOAWAY frame among what the relay sent and returns its error code. */
function goawayCode(bytes: Buffer): number | undefined {
  let off = 0;
  while (off + 9 <= bytes.length) {
    const len = bytes.readUIntBE(off, 3);
    const type = bytes[off + 3];
    if (type === 0x7 && off + 9 + 8 <= bytes.length) return bytes.readUInt32BE(off + 9 + 4);
    off += 9 + len;
  }
  return undefined;
}

/** Connections that broke HTTP/2 and must end up closed by the relay (checked at the end). */
interface BrokenH2 {
  what: string;
  source: string;
  closedAfterMs: Promise<number>;
  /** the relay must log a line naming this connection's source when it closes it */
  sourcedLog: boolean;
}
const brokenH2: BrokenH2[] = [];
/**
 * RFC 9113 section 5.4.1: after the GOAWAY for a connection error the endpoint MUST close the TCP
 * connection. The bound leaves room for a relay that finds out by an unanswered ping (interval
 * 15 s + timeout 10 s) because Node reports nothing when it terminates a session itself.
 */
const BROKEN_H2_CLOSE_MS = 30_000;

const h2Garbage: Array<{ name: string; bytes: () => Buffer; goaway?: number; closeMs: number }> = [
  {
    name: 'garbage instead of the HTTP/2 preface',
    bytes: () => Buffer.concat([Buffer.from('THIS IS NOT HTTP/2 AT ALL, SORRY\r\n\r\n'), randomBytes(200)]),
    closeMs: 5_000,
  },
  {
    name: 'a frame declaring 16 MiB after a valid preface (limit 64 KiB)',
    bytes: () => Buffer.concat([PREFACE, SETTINGS(), frame(0x0, 0, 1, randomBytes(1000), 0xffffff)]),
    goaway: 0x6, // FRAME_SIZE_ERROR
    closeMs: BROKEN_H2_CLOSE_MS,
  },
  {
    name: 'a malformed SETTINGS frame (length not a multiple of 6) after a valid preface',
    bytes: () => Buffer.concat([PREFACE, SETTINGS(Buffer.from([0, 4, 0, 0, 1]))]),
    goaway: 0x6, // FRAME_SIZE_ERROR
    closeMs: BROKEN_H2_CLOSE_MS,
  },
];

/** A relay log line about the HTTP/2 connection from `source` (or, if `loose`, from no named source) being broken. */
const isBrokenH2Line = (source: string, loose = false) => (l: LogLine): boolean =>
  (l.source === source || (loose && l.source === undefined)) &&
  (l.code === 'WS_PROTOCOL' || /session error|protocol/i.test(String(l.msg))) &&
  (l.err !== undefined || l.reason !== undefined);

for (const c of h2Garbage) {
  test(`authenticated user sends ${c.name}: that connection is refused, others go on`, async () => {
    // A healthy session of the same user, with a stream open before the bad connection.
    const healthy = relayClient(alice, port);
    cleanup.add(() => healthy.close());
    const stream = await healthy.open('echo');
    assert.deepEqual(await echoOnce(stream, Buffer.from('before')), Buffer.from('before'));

    const socket = await tlsOpen({ port, ca: home.caPem, key: alice.keyPem, cert: alice.certPem, ALPNProtocols: ['warpstone/1'] });
    assert.equal(socket.alpnProtocol, 'warpstone/1');
    socket.on('error', () => undefined);
    const source = formatSource(socket.localAddress, socket.localPort);
    const got = collect(socket);
    await relayLog((l) => l.msg === 'client connected' && l.source === source, `client connected from ${source}`);
    const logMark = cluster.relay.output().length;
    const sentAt = Date.now();
    socket.write(c.bytes());
    const closed = closedWithin(socket, c.closeMs, sentAt);
    brokenH2.push({ what: c.name, source, closedAfterMs: closed, sourcedLog: c.goaway !== undefined });

    if (c.goaway !== undefined) {
      // the relay answers at once with GOAWAY and the HTTP/2 error code ...
      const deadline = Date.now() + 3_000;
      while (goawayCode(got.data()) === undefined && Date.now() < deadline) await sleep(20);
      assert.equal(goawayCode(got.data()), c.goaway, 'GOAWAY with the HTTP/2 error code');
    } else {
      // ... or, not HTTP/2 at all, closes at once and logs why
      const ms = await closed;
      assert.ok(ms <= c.closeMs, `the relay kept the connection open ${c.closeMs} ms after garbage`);
      const line = await relayLog(isBrokenH2Line(source, true), 'a line about the broken HTTP/2 session', 5_000, logMark);
      assert.match(String(line.err ?? line.reason), /magic|preface/i, 'the log line says what was wrong');
    }

    // the other session and its stream are untouched, and new connections are served
    assert.deepEqual(await echoOnce(stream, Buffer.from('after')), Buffer.from('after'));
    stream.end();
    healthy.close();
    await relayStillServes();
  });
}

test('connections that broke HTTP/2 after the preface are closed by the relay, with a log line', async () => {
  for (const b of brokenH2) {
    const ms = await b.closedAfterMs;
    assert.ok(ms <= BROKEN_H2_CLOSE_MS, `${b.what}: the connection was still open ${BROKEN_H2_CLOSE_MS} ms after the GOAWAY`);
    if (b.sourcedLog) await relayLog(isBrokenH2Line(b.source), `a line about the closed connection from ${b.source} (${b.what})`, 1_000);
  }
  await relayStillServes();
});

test('stalled handshakes (nothing sent, half a ClientHello) are closed after ~10 s; relay logs WS_HANDSHAKE', async () => {
  for (const stall of stalls) {
    const ms = await stall.closedAfterMs;
    assert.ok(ms >= 8_000 && ms <= 15_000, `${stall.what}: closed after ${ms} ms, expected 8-15 s`);
    const line = await relayLog((l) => l.code === 'WS_HANDSHAKE' && l.source === stall.source, `WS_HANDSHAKE for ${stall.what}`);
    assert.match(String(line.reason), /10 s|timeout|timed out/i, `${stall.what}: ${String(line.reason)}`);
  }
  await relayStillServes();
});
