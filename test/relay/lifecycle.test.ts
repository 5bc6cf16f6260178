// Processes coming and going, through real processes: agents killed and restarted, a relay
// restarted under its agents and clients, revocation of a live stream, tunnel name conflicts,
// stale agent sessions, signals, IPv6.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  Cleanup,
  startCluster,
  startConnect,
  startWarpstone,
  runWarpstone,
  exchange,
  sha256,
  type Cluster,
  type Home,
  type Proc,
} from '../helpers/harness.ts';
import {
  waitForLog,
  waitForCount,
  logLines,
  tcpOpen,
  closedWithin,
  echoOnce,
  readBytes,
  textConnect,
  taggedEcho,
  relayClient,
  h2EchoRoundTrip,
  h2OpenError,
  sleep,
  type LogLine,
} from '../helpers/tls-clients.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { StreamRefused } from '../../src/common/errors.ts';
import type { RelayStatus } from '../../src/relay/admin.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

async function status(home: Home): Promise<RelayStatus & { running?: boolean }> {
  const r = await runWarpstone(['status', '--json'], home.env);
  assert.equal(r.code, 0, `warpstone status --json failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as RelayStatus & { running?: boolean };
}

function tunnel(s: RelayStatus, name: string): RelayStatus['tunnels'][number] {
  const t = s.tunnels.find((x) => x.name === name);
  assert.ok(t, `status lists no tunnel '${name}': ${JSON.stringify(s.tunnels)}`);
  return t;
}

/** Polls `warpstone status --json` until `check` holds; returns that status. */
async function statusUntil(home: Home, check: (s: RelayStatus) => boolean, timeoutMs: number, what: string): Promise<RelayStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: RelayStatus | undefined;
  for (;;) {
    last = await status(home);
    if (check(last)) return last;
    if (Date.now() > deadline) assert.fail(`status did not show ${what} within ${timeoutMs} ms; last: ${JSON.stringify(last, null, 1)}`);
    await sleep(150);
  }
}

const agentArgs = (c: Cluster, identity = c.agentIdentity, expose = `echo=127.0.0.1:${c.servicePort}`, relay = `127.0.0.1:${c.relayPort}`): string[] => [
  'agent',
  '--identity',
  identity,
  '--relay',
  relay,
  '--expose',
  expose,
];

const log = (proc: Proc, predicate: (l: LogLine) => boolean, what: string, timeoutMs = 5_000): Promise<LogLine> =>
  waitForLog(proc, predicate, timeoutMs, what);

test('kill -9 of the agent: status reports the tunnel offline, clients get 503; a restarted agent brings it back', async () => {
  const c = await startCluster(cleanup);
  const alice = readIdentityFile(c.userIdentity);
  await h2EchoRoundTrip(alice, c.relayPort);
  const before = await status(c.home);
  assert.equal(tunnel(before, 'echo').online, true);
  assert.deepEqual(before.agents.map((a) => a.name), ['box']);

  c.agent.child.kill('SIGKILL');
  assert.equal(await c.agent.exited, 'SIGKILL');
  // the kernel closed the agent's TCP connection: the relay must notice without waiting for a ping
  const offline = await statusUntil(c.home, (s) => s.tunnels.some((t) => t.name === 'echo' && !t.online), 3_000, "tunnel 'echo' offline");
  assert.equal(tunnel(offline, 'echo').agent, 'box');
  assert.deepEqual(offline.agents, []);
  await log(c.relay, (l) => l.msg === 'agent offline' && l.agent === 'box', 'agent offline');

  const t0 = Date.now();
  const err = await h2OpenError(alice, c.relayPort, 'echo');
  assert.ok(err instanceof StreamRefused, `${err.name}: ${err.message}`);
  assert.equal(err.status, 503);
  assert.equal(err.code, 'WS_TUNNEL_OFFLINE');
  assert.match(err.message, /^tunnel 'echo' is offline/);
  assert.ok(Date.now() - t0 < 3_000, `the refusal took ${Date.now() - t0} ms`);
  const text = await textConnect({ port: c.relayPort, ca: c.home.caPem, key: alice.keyPem, cert: alice.certPem, target: 'echo' });
  assert.match(text.statusLine, /^HTTP\/1\.1 503 tunnel 'echo' is offline/);
  await log(c.relay, (l) => l.msg === 'stream refused' && l.code === 'WS_TUNNEL_OFFLINE' && l.source === text.source, 'WS_TUNNEL_OFFLINE logged');

  const again = startWarpstone(cleanup, agentArgs(c), c.home.env);
  await again.waitFor(/tunnel registered/);
  const back = await status(c.home);
  assert.equal(tunnel(back, 'echo').online, true);
  await h2EchoRoundTrip(alice, c.relayPort);
});

test('an agent stopped with SIGTERM exits 0 and its tunnel is offline at the relay at once', async () => {
  const c = await startCluster(cleanup);
  assert.equal(await c.agent.stop('SIGTERM'), 0);
  await statusUntil(c.home, (s) => s.tunnels.some((t) => t.name === 'echo' && !t.online), 2_000, "tunnel 'echo' offline after the agent's SIGTERM");
  await log(c.relay, (l) => l.msg === 'agent offline' && l.agent === 'box', 'agent offline');
  const alice = readIdentityFile(c.userIdentity);
  const err = await h2OpenError(alice, c.relayPort, 'echo');
  assert.ok(err instanceof StreamRefused && err.status === 503, `expected 503, got ${err.name}: ${err.message}`);
});

test('relay restart: SIGTERM exits 0 and closes live streams; the agent and `connect` reconnect by themselves', async () => {
  const c = await startCluster(cleanup);
  const alice = readIdentityFile(c.userIdentity);
  const { proc: connect, port: localPort } = await startConnect(cleanup, c, 'echo');
  const live = await tcpOpen(localPort);
  assert.deepEqual(await echoOnce(live, Buffer.from('before restart')), Buffer.from('before restart'));

  assert.equal(await c.relay.stop('SIGTERM'), 0);
  assert.ok((await closedWithin(live, 3_000)) <= 3_000, 'a live stream outlived the relay');
  await c.agent.waitFor(/reconnecting to relay/, 5_000);

  const relay2 = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${c.relayPort}`], c.home.env);
  await relay2.waitFor(/relay listening/);
  await waitForCount(c.agent, /tunnel registered/, 2, 35_000);
  await log(relay2, (l) => l.msg === 'agent online' && l.agent === 'box', 'agent online at the new relay');
  assert.equal(tunnel(await status(c.home), 'echo').online, true);

  await h2EchoRoundTrip(alice, c.relayPort);
  // the `warpstone connect` that ran through the restart opens new streams on a new session
  const payload = randomBytes(256 * 1024);
  assert.equal(sha256(await exchange(localPort, payload)), sha256(payload));
  assert.equal(connect.child.exitCode, null, 'connect exited');
  assert.equal(c.agent.child.exitCode, null, 'agent exited');
});

test('`warpstone revoke alice` closes her idle live stream within 5 s and refuses new ones', async () => {
  const c = await startCluster(cleanup);
  const { proc: connect, port: localPort } = await startConnect(cleanup, c, 'echo');
  const live = await tcpOpen(localPort);
  assert.deepEqual(await echoOnce(live, Buffer.from('hello')), Buffer.from('hello'));
  const open = await status(c.home);
  assert.equal(open.streams.filter((s) => s.user === 'alice' && s.tunnel === 'echo').length, 1, 'the relay lists the live stream');
  await sleep(1_000); // idle: nothing flows on the stream from here on

  const revoke = await runWarpstone(['revoke', 'alice'], c.home.env);
  // from here the revocation is in the store; the relay has 5 s to act on it
  const revokedAt = Date.now();
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, /revoked 1 certificate\(s\) of 'alice'/);
  const ms = await closedWithin(live, 5_000, revokedAt);
  assert.ok(ms <= 5_000, `alice's stream was still open 5 s after revoke`);

  await log(c.relay, (l) => l.msg === 'stream closed' && l.user === 'alice' && /revoked/.test(String(l.reason)), "stream closed with reason 'certificate revoked'");
  const after = await status(c.home);
  assert.deepEqual(after.streams.filter((s) => s.user === 'alice'), []);

  // a new local connection through the same `connect` process is refused, with the reason logged
  const next = await tcpOpen(localPort);
  assert.ok((await closedWithin(next, 5_000)) <= 5_000, 'a new stream of a revoked user stayed open');
  await log(connect, (l) => l.msg === 'stream refused' && /revoked/.test(String(l.reason)), 'connect logs the refusal');
  await log(c.relay, (l) => l.code === 'WS_REVOKED' && l.name === 'alice', 'relay logs WS_REVOKED');
});

test('two agent identities claim one tunnel name: the second is refused naming the first, the first keeps serving', async () => {
  const c = await startCluster(cleanup);
  const alice = readIdentityFile(c.userIdentity);
  const intruderService = await taggedEcho(cleanup, 'INTRUDER');
  const intruder = startWarpstone(cleanup, agentArgs(c, await c.home.issue('agent', 'intruder'), `echo=127.0.0.1:${intruderService}`), c.home.env);
  const refused = await log(intruder, (l) => l.msg === 'tunnel refused by the relay', "intruder logs 'tunnel refused by the relay'", 10_000);
  assert.equal(refused.tunnel, 'echo');
  assert.match(String(refused.reason), /^tunnel 'echo' is already served by agent 'box' \(connected from 127\.0\.0\.1:\d+ since \d{4}-/);
  await log(c.relay, (l) => l.msg === 'tunnel name conflict; refused' && l.agent === 'intruder' && l.owner === 'box' && l.tunnel === 'echo', 'relay logs the conflict');

  // the intruder retries; wait for a second refusal so a later registration would have shown
  await waitForCount(intruder, /tunnel refused by the relay/, 2, 10_000);
  assert.doesNotMatch(intruder.output(), /tunnel registered/);
  // every stream still reaches box's plain echo service (the intruder's would prefix 'INTRUDER')
  for (let i = 0; i < 3; i++) await h2EchoRoundTrip(alice, c.relayPort);
  const s = await status(c.home);
  assert.equal(tunnel(s, 'echo').agent, 'box');
  assert.equal(tunnel(s, 'echo').online, true);
  assert.equal(c.agent.child.exitCode, null);
  assert.equal(logLines(c.agent).filter((l) => l.msg === 'tunnel registered').length, 1, 'box was never disturbed');
});

test('the same agent identity connecting again replaces its stale session; streams use the new one', async () => {
  const c = await startCluster(cleanup);
  const alice = readIdentityFile(c.userIdentity);
  await h2EchoRoundTrip(alice, c.relayPort);
  // The first agent freezes: its TCP connection stays up but nothing answers (a stale session).
  c.agent.child.kill('SIGSTOP');
  cleanup.add(() => c.agent.child.kill('SIGKILL'));
  const newService = await taggedEcho(cleanup, 'NEW:');
  const second = startWarpstone(cleanup, agentArgs(c, c.agentIdentity, `echo=127.0.0.1:${newService}`), c.home.env);
  await second.waitFor(/tunnel registered/);
  await log(c.relay, (l) => l.msg === 'agent reconnected; replacing the stale session' && l.agent === 'box', 'relay replaces the stale session');

  const client = relayClient(alice, c.relayPort);
  cleanup.add(() => client.close());
  for (let i = 0; i < 3; i++) {
    const stream = await client.open('echo');
    assert.equal((await readBytes(stream, 4)).toString(), 'NEW:', 'the stream reached the new session');
    assert.deepEqual(await echoOnce(stream, Buffer.from(`ping ${i}`)), Buffer.from(`ping ${i}`));
    stream.end();
  }
  const s = await status(c.home);
  assert.equal(s.agents.filter((a) => a.name === 'box').length, 1, 'one session of box');
  assert.equal(tunnel(s, 'echo').online, true);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} makes connect, agent and relay exit 0`, async () => {
    const c = await startCluster(cleanup);
    const { proc: connect, port: localPort } = await startConnect(cleanup, c, 'echo');
    const live = await tcpOpen(localPort);
    assert.deepEqual(await echoOnce(live, Buffer.from('x')), Buffer.from('x'));

    assert.equal(await connect.stop(signal), 0, `connect: ${connect.output()}`);
    assert.ok((await closedWithin(live, 3_000)) <= 3_000, 'the local end of a stream outlived connect');
    assert.equal(await c.agent.stop(signal), 0, `agent: ${c.agent.output()}`);
    assert.equal(await c.relay.stop(signal), 0, `relay: ${c.relay.output()}`);
    await log(c.relay, (l) => l.msg === 'stopping', "relay logs 'stopping'");
    const st = await status(c.home);
    assert.equal(st.running, false, 'status sees no running relay');
  });
}

test('IPv6: relay on [::1]:PORT, agent and connect dial [::1]:PORT, round trip works', async () => {
  const c = await startCluster(cleanup, { relayHost: '::1' });
  await log(c.relay, (l) => l.msg === 'relay listening' && l.listen === `[::1]:${c.relayPort}`, 'relay listening on [::1]');
  const online = await log(c.relay, (l) => l.msg === 'agent online' && l.agent === 'box', 'agent online');
  assert.match(String(online.address), /^\[::1\]:\d+$/);
  const { port: localPort } = await startConnect(cleanup, c, 'echo', c.userIdentity, `[::1]:${c.relayPort}`);
  const payload = randomBytes(1024 * 1024);
  assert.equal(sha256(await exchange(localPort, payload)), sha256(payload));
  const opened = await log(c.relay, (l) => l.msg === 'stream open' && l.user === 'alice', 'stream open');
  assert.match(String(opened.source), /^\[::1\]:\d+$/);
  const s = await status(c.home);
  assert.deepEqual(s.relay.listen, [`[::1]:${c.relayPort}`]);
});
