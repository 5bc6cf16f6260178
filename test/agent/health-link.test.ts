// Target health over a real agent link: a real `warpstone agent` process (YAML config with check
// blocks) dials a TLS listener that holds the relay's certificate and, like the relay's AgentHub,
// becomes the HTTP/2 client on the agent's connection and runs a HealthPoller on it. The
// services behind the tunnels change state; the poller must report exactly those transitions.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, makeHome, startWarpstone, echoServer, freePort } from '../helpers/harness.ts';
import { waitForLog, sleep } from '../helpers/tls-clients.ts';
import { homePaths } from '../../src/common/home.ts';
import { splitPem } from '../../src/pki/pem.ts';
import { ALPN_V1 } from '../../src/wire/protocol.ts';
import { h2Settings } from '../../src/wire/defaults.ts';
import { HealthPoller, type TargetHealthChange } from '../../src/relay/health-poller.ts';
import { silentLogger } from '../../src/common/log.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

/** A TLS listener with the relay's identity; hands each agent's HTTP/2 client session over. */
async function relaySide(home: string, onSession: (session: http2.ClientHttp2Session, agent: string) => void): Promise<number> {
  const paths = homePaths(home);
  const blocks = splitPem(readFileSync(paths.relayIdentity, 'utf8'));
  const server = tls.createServer({
    key: blocks.find((b) => b.label.endsWith('PRIVATE KEY'))?.text,
    cert: blocks.find((b) => b.label === 'CERTIFICATE')?.text,
    ca: readFileSync(paths.caCert, 'utf8'),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: [ALPN_V1],
  });
  const sessions = new Set<http2.ClientHttp2Session>();
  server.on('secureConnection', (socket) => {
    const cn = (socket.getPeerCertificate().subject as unknown as Record<string, string>).CN ?? '';
    const session = http2.connect('http://agent.invalid', { createConnection: () => socket, settings: h2Settings() });
    session.on('error', () => undefined);
    sessions.add(session);
    onSession(session, cn);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    for (const s of sessions) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

async function until<T>(what: string, read: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('a real agent reports HTTP and TCP target changes through the link; the poller sees each transition once', async () => {
  const home = await makeHome(cleanup);
  const identity = await home.issue('agent', 'box');
  let status = 200;
  const web = http.createServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? status : 404;
    res.end();
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    web.closeAllConnections();
    web.close();
  });
  const webPort = (web.address() as net.AddressInfo).port;
  const echoPort = await echoServer(cleanup);
  const deadPort = await freePort();
  const changes: TargetHealthChange[] = [];
  let poller: HealthPoller | undefined;
  const relayPort = await relaySide(home.dir, (session, agent) => {
    poller = new HealthPoller(session, agent, 250, (c) => changes.push(c), { log: silentLogger() });
    cleanup.add(() => poller?.stop());
  });
  const configPath = join(home.dir, 'agent.yaml');
  writeFileSync(
    configPath,
    [
      `identity: ${identity}`,
      `relay: 127.0.0.1:${relayPort}`,
      'expose:',
      `  echo: 127.0.0.1:${echoPort}`,
      '  web:',
      `    target: 127.0.0.1:${webPort}`,
      '    check: { every: 1s, rise: 1, fall: 1, http: { path: /healthz, status: 200 } }',
      '  dead:',
      `    target: 127.0.0.1:${deadPort}`,
      '    check: { every: 1s, fall: 1 }',
    ].join('\n'),
  );
  const agent = startWarpstone(cleanup, ['agent', '--config', configPath], home.env);
  const seen = (tunnel: string, state: 'up' | 'down', previous: string): TargetHealthChange | undefined =>
    changes.find((c) => c.tunnel === tunnel && c.state === state && c.previous === previous);

  const echoUp = await until('echo up', () => seen('echo', 'up', 'unknown'));
  const webUp = await until('web up', () => seen('web', 'up', 'unknown'));
  const deadDown = await until('dead down', () => seen('dead', 'down', 'unknown'));
  assert.equal(echoUp.agent, 'box');
  assert.match(echoUp.detail, /^connected in \d+ ms$/);
  assert.equal(webUp.detail, 'HTTP 200');
  assert.equal(deadDown.detail, 'connection refused');
  // times come from the agent's clock, corrected: they are recent and not in the future
  for (const c of [echoUp, webUp, deadDown]) {
    assert.ok(c.since.getTime() <= Date.now() + 50 && c.since.getTime() > Date.now() - 30_000, `since ${c.since.toISOString()}`);
  }

  status = 500;
  const webDown = await until('web down', () => seen('web', 'down', 'up'));
  assert.equal(webDown.detail, 'HTTP 500 (expected 200)');
  await waitForLog(agent, (l) => l.msg === 'target down' && l.tunnel === 'web', 5_000, "the agent's own log line");
  status = 200;
  await until('web back up', () => seen('web', 'up', 'down'));

  // Polls kept running all along (every 250 ms), yet each transition was reported once.
  await sleep(1_000);
  assert.deepEqual(
    changes.map((c) => `${c.tunnel}:${c.previous}->${c.state}`).sort(),
    ['dead:unknown->down', 'echo:unknown->up', 'web:down->up', 'web:unknown->up', 'web:up->down'],
  );
  assert.equal(poller?.targets().find((t) => t.tunnel === 'dead')?.state, 'down');
  await agent.stop();
});

/** An HTTP/2 server over plain TCP that answers every stream with `answer`; counts the asks. */
async function h2Server(answer: (stream: http2.ServerHttp2Stream) => void): Promise<{ session(): http2.ClientHttp2Session; asked(): number }> {
  let asked = 0;
  const server = http2.createServer();
  server.on('stream', (stream) => {
    asked += 1;
    answer(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  return {
    session: () => {
      const session = http2.connect(`http://127.0.0.1:${port}`, { settings: h2Settings() });
      session.on('error', () => undefined);
      cleanup.add(() => session.destroy());
      return session;
    },
    asked: () => asked,
  };
}

test('a poller seeded with the last known states reports only what differs; an agent without /v1/health is left alone', async () => {
  const reporting = await h2Server((stream) => {
    const now = new Date().toISOString();
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(
      JSON.stringify({
        version: 1,
        agent: 'box',
        now,
        targets: [
          { tunnel: 'same', check: 'tcp', state: 'up', since: now, checkedAt: now, detail: 'connected in 1 ms' },
          { tunnel: 'flipped', check: 'tcp', state: 'down', since: now, checkedAt: now, detail: 'connection refused' },
          { tunnel: 'fresh', check: 'tcp', state: 'unknown', since: null, checkedAt: null, detail: 'not checked yet' },
        ],
      }),
    );
  });
  const session = reporting.session();
  const changes: TargetHealthChange[] = [];
  const poller = new HealthPoller(session, 'box', 100, (c) => changes.push(c), {
    initial: new Map([
      ['same', 'up'],
      ['flipped', 'up'],
    ]),
  });
  await until('three reports', () => (reporting.asked() >= 3 ? true : undefined));
  assert.deepEqual(
    changes.map((c) => [c.tunnel, c.previous, c.state, c.detail]),
    [['flipped', 'up', 'down', 'connection refused']],
  );
  // a closed session stops the poller by itself
  session.destroy();
  await sleep(150);
  const asked = reporting.asked();
  await sleep(400);
  assert.equal(reporting.asked(), asked, 'no polls on a closed session');
  poller.stop();

  // An agent from before health reporting answers every unknown request with 400.
  const old = await h2Server((stream) => stream.respond({ ':status': 400, 'warpstone-reason': 'unknown request' }, { endStream: true }));
  const oldPoller = new HealthPoller(old.session(), 'old', 100, () => assert.fail('no change expected from an agent that does not report'));
  cleanup.add(() => oldPoller.stop());
  await until('the first ask', () => (old.asked() >= 1 ? true : undefined));
  await sleep(600);
  assert.equal(old.asked(), 1, 'asked once, then left alone');
});
