// Alerts through the real processes: `warpstone relay --alert-webhook URL` and a `warpstone
// agent` (dialling from 127.0.0.5, --source-address) whose YAML config checks an HTTP target.
// The target answers 500 from the start, so the agent's first check reports it down, the
// relay's health poll picks that up, records it, and the webhook gets "target-down". (Every
// other kind is covered on the event bus in alerts.test.ts; an agent-lost here would add the
// 10 s grace period to the test.) Needs HealthPoller wired into AgentHub and the Alerter into
// `warpstone relay`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, makeHome, freePort, startWarpstone } from '../helpers/harness.ts';
import { waitForLog, sleep } from '../helpers/tls-clients.ts';
import { withStore } from '../../src/cli/shared.ts';
import type { AlertBody } from '../../src/ops/alert-messages.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('relay + agent: a target that is down reaches the webhook within seconds, recorded in the store', async () => {
  const home = await makeHome(cleanup);
  const identity = await home.issue('agent', 'box');
  const got: AlertBody[] = [];
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as AlertBody);
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    receiver.closeAllConnections();
    receiver.close();
  });
  const web = http.createServer((_req, res) => {
    res.statusCode = 500;
    res.end();
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    web.closeAllConnections();
    web.close();
  });
  const relayPort = await freePort();
  const hook = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}/alerts`;
  const relay = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${relayPort}`, '--alert-webhook', hook], home.env);
  await relay.waitFor(/relay listening/);
  const config = join(home.dir, 'agent.yaml');
  writeFileSync(
    config,
    [
      `identity: ${identity}`,
      `relay: 127.0.0.1:${relayPort}`,
      'expose:',
      '  web:',
      `    target: 127.0.0.1:${(web.address() as net.AddressInfo).port}`,
      '    check: { every: 1s, http: { path: /healthz } }',
    ].join('\n'),
  );
  const agent = startWarpstone(cleanup, ['agent', '--config', config, '--source-address', '127.0.0.5'], home.env);
  const startedAt = Date.now();
  await waitForLog(relay, (l) => l.msg === 'target down' && l.tunnel === 'web', 15_000, "the relay's target-down line");
  const stored = await withStore(home.dir, (store) => store.listTargetHealth());
  assert.deepEqual(
    stored.map((h) => [h.agent, h.tunnel, h.state, h.detail]),
    [['box', 'web', 'down', 'HTTP 500 (expected 200)']],
  );
  const deadline = Date.now() + 15_000;
  while (got.length < 1 && Date.now() < deadline) await sleep(100);
  assert.deepEqual(got.map((a) => a.kind), ['target-down'], JSON.stringify(got));
  assert.ok(Date.now() - startedAt < 60_000, 'within the 60 s budget');
  assert.deepEqual(got[0]?.details, { agent: 'box', tunnel: 'web', state: 'down', detail: 'HTTP 500 (expected 200)' });
  assert.match(got[0]?.summary ?? '', /tunnel 'web' on agent 'box' is down/);
  const sightings = await withStore(home.dir, (store) => store.listSightings('box'));
  assert.match(sightings[0]?.address ?? '', /^127\.0\.0\.5:\d+$/, 'the agent dialled from its --source-address');
  // the outbox rows, read while the relay runs (WAL): one per alert, marked delivered
  let rows = await withStore(home.dir, (store) => store.listAlerts());
  for (let i = 0; i < 20 && rows.some((r) => r.deliveredAt === null); i++) {
    await sleep(100);
    rows = await withStore(home.dir, (store) => store.listAlerts());
  }
  assert.deepEqual(rows.map((r) => [r.kind, r.destination, r.deliveredAt !== null]), [['target-down', `webhook:${hook}`, true]]);
  await agent.stop();
  await relay.stop();
});
