// Alerts end to end on loopback with the real SQLite store: events on a RelayEvents bus become
// outbox rows and reach a real HTTP receiver and a real command hook; bursts fold, repeats are
// dropped; a failing receiver gets retries until it answers 2xx; undelivered rows survive a
// restart of the alerter on the same store file; nothing is ever dropped silently.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { readFileSync, writeFileSync, chmodSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, tempDir, freePort } from '../helpers/harness.ts';
import { sleep } from '../helpers/tls-clients.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/store.ts';
import type { AlertRecord } from '../../src/store/ops-store.ts';
import { RelayEvents } from '../../src/ops/events.ts';
import { Alerter, retryDelay, type AlerterOptions } from '../../src/ops/alerts.ts';
import { CommandDestination, WebhookDestination, parseDestinations, type AlertDestination } from '../../src/ops/alert-destinations.ts';
import { ALERT_KINDS, alertEnvironment, type AlertBody } from '../../src/ops/alert-messages.ts';
import { silentLogger } from '../../src/common/log.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const dir = tempDir(cleanup, 'ws-alerts-');
let storeCount = 0;

async function freshStore(path = join(dir, `store-${++storeCount}.sqlite`)): Promise<{ store: Store; path: string }> {
  const store = await openStore(path, { create: true });
  cleanup.add(() => store.close());
  return { store, path };
}

interface Received {
  body: AlertBody;
  headers: http.IncomingHttpHeaders;
}

/** A webhook receiver; `answer` picks the status of each POST (default 200). */
async function receiver(answer: (n: number) => number = () => 200, port = 0): Promise<{ url: string; got: Received[]; close(): Promise<void> }> {
  const got: Received[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const status = answer(n++);
      if (status >= 200 && status < 300) got.push({ body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as AlertBody, headers: req.headers });
      res.statusCode = status;
      res.end(status >= 300 ? 'receiver is having a bad day' : 'ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  cleanup.add(close);
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hook?token=s3cret`, got, close };
}

function alerter(store: Store, destinations: AlertDestination[], events = new RelayEvents(), extra: Partial<AlerterOptions> = {}): { alerter: Alerter; events: RelayEvents } {
  const a = new Alerter({ events, store, destinations, log: silentLogger(), coalesceMs: 150, lostGraceMs: 300, pollMs: 100, retryInitialMs: 200, retryMaxMs: 1_000, ...extra });
  cleanup.add(() => a.stop());
  return { alerter: a, events };
}

async function until<T>(what: string, read: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const now = (): Date => new Date();

test('retry delays double from the first one up to the cap, each drawn from [d/2, d]', () => {
  assert.equal(retryDelay(0, 2_000, 3_600_000, () => 0), 1_000);
  assert.equal(retryDelay(0, 2_000, 3_600_000, () => 1), 2_000);
  assert.equal(retryDelay(3, 2_000, 3_600_000, () => 1), 16_000);
  assert.equal(retryDelay(30, 2_000, 3_600_000, () => 1), 3_600_000);
  assert.equal(retryDelay(30, 2_000, 3_600_000, () => 0), 1_800_000);
});

test('destinations: bad flags are usage errors that name the value', () => {
  assert.throws(() => parseDestinations(['not a url'], []), /--alert-webhook 'not a url' is not a URL/);
  assert.throws(() => parseDestinations(['ftp://x/'], []), /'ftp:' URLs are not supported/);
  assert.throws(() => parseDestinations([], [join(dir, 'missing-hook')]), /--alert-command '.*missing-hook' cannot be run/);
  const notExecutable = join(dir, 'plain.txt');
  writeFileSync(notExecutable, 'x');
  assert.throws(() => parseDestinations([], [notExecutable]), /cannot be run/);
  assert.throws(() => parseDestinations(['http://127.0.0.1:1/a', 'http://127.0.0.1:1/a'], []), /given twice/);
  const hook = new WebhookDestination('https://user:pw@hooks.example.org:8443/path?token=abc');
  assert.equal(hook.label, 'webhook https://hooks.example.org:8443', 'no credentials, path or query in logs');
  assert.equal(hook.id, 'webhook:https://user:pw@hooks.example.org:8443/path?token=abc');
});

test('a webhook receives each kind of alert, once, within seconds; the outbox marks them delivered', async () => {
  const { store } = await freshStore();
  const hook = await receiver();
  const { alerter: a, events } = alerter(store, [new WebhookDestination(hook.url)]);
  await a.start();
  const t = now();
  events.emit('agent-lost', { time: t, agent: 'box', address: '198.51.100.4:50122', reason: 'ping timeout' });
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'web', state: 'down', detail: 'HTTP 500 (expected 200)' });
  events.emit('address-changed', { time: t, agent: 'box', from: '198.51.100.4', to: '203.0.113.9' });
  events.emit('ban-issued', { time: t, address: '192.0.2.66/32', until: new Date(t.getTime() + 600_000), failures: 5, offence: 1, reason: '5 failures within 10 min' });
  events.emit('credits-exhausted', { time: t, scope: 'tunnel', name: 'web', baselineBytesPerSecond: 1_000_000 });
  await until('five alerts', () => (hook.got.length >= 5 ? true : undefined));
  events.emit('target-health', { time: now(), agent: 'box', tunnel: 'web', state: 'up', detail: 'HTTP 200' });
  await until('six alerts', () => (hook.got.length >= 6 ? true : undefined));
  assert.ok(Date.now() - t.getTime() < 10_000, 'all delivered well within 60 s');
  assert.deepEqual(hook.got.map((g) => g.body.kind).sort(), [...ALERT_KINDS].sort());
  const byKind = new Map(hook.got.map((g) => [g.body.kind, g]));
  const lost = byKind.get('agent-lost');
  assert.ok(lost);
  assert.equal(lost.body.version, 1);
  assert.equal(lost.body.count, 1);
  assert.equal(lost.body.time, t.toISOString());
  assert.deepEqual(lost.body.details, { agent: 'box', address: '198.51.100.4:50122', reason: 'ping timeout' });
  assert.match(lost.body.summary, /agent 'box' lost \(ping timeout\)/);
  assert.equal(lost.headers['warpstone-alert-id'], lost.body.id);
  assert.equal(lost.headers['warpstone-alert-kind'], 'agent-lost');
  assert.equal(lost.headers['content-type'], 'application/json');
  assert.match(byKind.get('target-down')?.body.summary ?? '', /tunnel 'web' on agent 'box' is down: HTTP 500/);
  assert.match(byKind.get('target-up')?.body.summary ?? '', /back up/);
  assert.deepEqual(byKind.get('address-changed')?.body.details, { agent: 'box', from: '198.51.100.4', to: '203.0.113.9' });
  assert.equal(byKind.get('ban-issued')?.body.details.address, '192.0.2.66/32');
  assert.equal(byKind.get('credits-exhausted')?.body.details.baselineBytesPerSecond, 1_000_000);
  assert.equal(new Set(hook.got.map((g) => g.body.id)).size, 6);
  const rows = await store.listAlerts();
  assert.equal(rows.length, 6);
  assert.ok(rows.every((r) => r.deliveredAt !== null && r.attempts === 1 && r.lastError === null));
  assert.equal((await store.listAlerts({ undeliveredOnly: true })).length, 0);
  await sleep(400);
  assert.equal(hook.got.length, 6, 'nothing delivered twice');
});

test('bursts fold into one alert, repeats and blips are dropped', async () => {
  const { store } = await freshStore();
  // the store knows web was up before this relay started: "up" again is no news
  await store.putTargetHealth({ agent: 'box', tunnel: 'web', state: 'up', detail: 'HTTP 200', since: now(), checkedAt: now() });
  const hook = await receiver();
  const { alerter: a, events } = alerter(store, [new WebhookDestination(hook.url)]);
  await a.start();
  const t = now();
  // a line changing address five times in a burst: one alert, first "from", last "to"
  const hops = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6'];
  for (let i = 0; i < 5; i++) events.emit('address-changed', { time: new Date(t.getTime() + i), agent: 'box', from: hops[i] as string, to: hops[i + 1] as string });
  // a reconnect from the same host with another port is not a change
  events.emit('address-changed', { time: t, agent: 'other', from: '10.9.9.9:1000', to: '10.9.9.9:2000' });
  // lost, and back within the grace period: a blip
  events.emit('agent-lost', { time: t, agent: 'blippy', address: '10.0.0.7:1', reason: 'ping timeout' });
  events.emit('agent-connected', { time: t, agent: 'blippy', address: '10.0.0.7:2' });
  // the relay's own shutdown, and a stale session replaced by the same agent: not lost
  events.emit('agent-lost', { time: t, agent: 'box', address: '10.0.0.6:1', reason: 'relay shutting down' });
  events.emit('agent-lost', { time: t, agent: 'box', address: '10.0.0.6:1', reason: 'replaced by a newer session of the same agent' });
  // first sight of a target that is up, and of the known-up web reported up: no news
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'ssh', state: 'up', detail: 'connected' });
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'web', state: 'up', detail: 'HTTP 200' });
  // a target that goes down and back within the burst: net state unchanged, nothing to say
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'web', state: 'down', detail: 'refused' });
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'web', state: 'up', detail: 'HTTP 200' });
  // first sight of a target that is down: news
  events.emit('target-health', { time: t, agent: 'box', tunnel: 'db', state: 'down', detail: 'connection refused' });
  // credits exhausted twice before being restored: one alert; again after a restore: another
  events.emit('credits-exhausted', { time: t, scope: 'user', name: 'alice', baselineBytesPerSecond: 100 });
  events.emit('credits-exhausted', { time: t, scope: 'user', name: 'alice', baselineBytesPerSecond: 100 });
  // three bans in an attack: one alert listing them
  for (const ip of ['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32']) events.emit('ban-issued', { time: t, address: ip, until: new Date(t.getTime() + 60_000), failures: 5, offence: 1, reason: 'guessing' });
  await until('four alerts', () => (hook.got.length >= 4 ? true : undefined));
  events.emit('credits-restored', { time: now(), scope: 'user', name: 'alice' });
  events.emit('credits-exhausted', { time: now(), scope: 'user', name: 'alice', baselineBytesPerSecond: 100 });
  await until('the second credits alert', () => (hook.got.length >= 5 ? true : undefined));
  await sleep(600); // longer than the grace and fold windows: anything else would have arrived
  const kinds = hook.got.map((g) => g.body.kind).sort();
  assert.deepEqual(kinds, ['address-changed', 'ban-issued', 'credits-exhausted', 'credits-exhausted', 'target-down']);
  const address = hook.got.find((g) => g.body.kind === 'address-changed')?.body;
  assert.equal(address?.count, 5);
  assert.deepEqual(address?.details, { agent: 'box', from: '10.0.0.1', to: '10.0.0.6' });
  assert.match(address?.summary ?? '', /changed address 5 times, from 10\.0\.0\.1 to 10\.0\.0\.6/);
  const bans = hook.got.find((g) => g.body.kind === 'ban-issued')?.body;
  assert.equal(bans?.count, 3);
  assert.deepEqual(bans?.details, { addresses: ['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32'], bans: 3 });
  assert.equal(hook.got.find((g) => g.body.kind === 'target-down')?.body.details.tunnel, 'db');
});

test('a failing receiver (500, 500, then 200) gets retries of the same alert until it takes it', async () => {
  const { store } = await freshStore();
  const hook = await receiver((n) => (n < 2 ? 500 : 200));
  const { alerter: a, events } = alerter(store, [new WebhookDestination(hook.url)]);
  await a.start();
  events.emit('agent-lost', { time: now(), agent: 'box', address: '10.0.0.1:1', reason: 'ping timeout' });
  // after the first failure the row carries the error and a later attempt time
  const failed = await until('a failed attempt', async () => (await store.listAlerts()).find((r) => r.attempts >= 1 && r.deliveredAt === null));
  assert.match(failed.lastError ?? '', /answered HTTP 500: receiver is having a bad day/);
  assert.ok(failed.nextAttemptAt.getTime() > failed.createdAt.getTime());
  const delivered = await until('delivery', async () => (await store.listAlerts()).find((r) => r.deliveredAt !== null));
  assert.equal(delivered.attempts, 3);
  assert.equal(delivered.lastError, null);
  assert.equal(hook.got.length, 1);
  assert.equal(hook.got[0]?.body.id, (JSON.parse(delivered.payload) as AlertBody).id);
});

test('a command hook gets the JSON on stdin and WARPSTONE_ALERT_* variables; failures and hangs are retried', async () => {
  const { store } = await freshStore();
  const out = tempDir(cleanup, 'ws-hook-out-');
  const hook = join(dir, 'hook.sh');
  writeFileSync(hook, `#!/bin/sh\ncat > "${out}/$WARPSTONE_ALERT_ID.json"\nenv | grep '^WARPSTONE_' | sort > "${out}/$WARPSTONE_ALERT_ID.env"\n`);
  chmodSync(hook, 0o755);
  const failing = join(dir, 'failing.sh');
  writeFileSync(failing, '#!/bin/sh\ncat >/dev/null\necho "mail server unreachable" >&2\nexit 3\n');
  chmodSync(failing, 0o755);
  const hanging = join(dir, 'hanging.sh');
  writeFileSync(hanging, '#!/bin/sh\nexec sleep 30\n');
  chmodSync(hanging, 0o755);
  const command = new CommandDestination(hook);
  const { alerter: a, events } = alerter(store, [command, new CommandDestination(failing), new CommandDestination(hanging, 300)]);
  await a.start();
  events.emit('target-health', { time: now(), agent: 'box', tunnel: 'web', state: 'down', detail: 'HTTP 500 (expected 200)' });
  // exit 0 (the row marked delivered) comes after the hook has written both files
  await until('the hook delivered', async () => (await store.listAlerts()).find((r) => r.destination === command.id && r.deliveredAt !== null));
  const written = readdirSync(out).filter((f) => f.endsWith('.env'));
  assert.equal(written.length, 1);
  const id = (written[0] as string).replace(/\.env$/, '');
  assert.ok(existsSync(join(out, `${id}.json`)));
  const body = JSON.parse(readFileSync(join(out, `${id}.json`), 'utf8')) as AlertBody;
  assert.equal(body.id, id);
  assert.equal(body.kind, 'target-down');
  assert.deepEqual(body.details, { agent: 'box', tunnel: 'web', state: 'down', detail: 'HTTP 500 (expected 200)' });
  const env = readFileSync(join(out, `${id}.env`), 'utf8');
  assert.match(env, /^WARPSTONE_ALERT_KIND=target-down$/m);
  assert.match(env, new RegExp(`^WARPSTONE_ALERT_ID=${id}$`, 'm'));
  assert.match(env, /^WARPSTONE_ALERT_TUNNEL=web$/m);
  assert.match(env, /^WARPSTONE_ALERT_AGENT=box$/m);
  assert.doesNotMatch(env, /WARPSTONE_HOME|WARPSTONE_LOG_LEVEL/, "the relay's own environment does not leak into hooks");
  const rows = await until('the failing hooks to have failed', async () => {
    const all = await store.listAlerts();
    const bad = all.filter((r) => r.destination !== command.id);
    return bad.length === 2 && bad.every((r) => r.attempts >= 1) ? all : undefined;
  });
  const byDestination = new Map(rows.map((r) => [r.destination.replace(/^command:.*\//, ''), r]));
  assert.ok(byDestination.get('hook.sh')?.deliveredAt);
  assert.equal(byDestination.get('failing.sh')?.deliveredAt, null);
  assert.match(byDestination.get('failing.sh')?.lastError ?? '', /exited with 3: mail server unreachable/);
  assert.equal(byDestination.get('hanging.sh')?.deliveredAt, null);
  assert.match(byDestination.get('hanging.sh')?.lastError ?? '', /did not finish within 0.3 s; killed/);
  assert.deepEqual(alertEnvironment({ ...body, details: { baselineBytesPerSecond: 5, 'bad key': 'x' } }).WARPSTONE_ALERT_BASELINE_BYTES_PER_SECOND, '5');
});

test('undelivered alerts survive a restart of the alerter on the same store file, and go out after it', async () => {
  const { store, path } = await freshStore();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/hook`;
  const first = alerter(store, [new WebhookDestination(url)]);
  await first.alerter.start();
  first.events.emit('agent-lost', { time: now(), agent: 'box', address: '10.0.0.1:1', reason: 'ping timeout' });
  first.events.emit('ban-issued', { time: now(), address: '192.0.2.9/32', until: new Date(Date.now() + 60_000), failures: 3, offence: 2, reason: 'unknown CA' });
  const failed = await until('two refused attempts', async () => {
    const rows = await store.listAlerts({ undeliveredOnly: true });
    return rows.length === 2 && rows.every((r) => r.attempts >= 1) ? rows : undefined;
  });
  assert.ok(failed.every((r) => /connection refused/.test(r.lastError ?? '')));
  await first.alerter.stop();
  await store.close();

  const reopened = await openStore(path);
  cleanup.add(() => reopened.close());
  const kept = await reopened.listAlerts({ undeliveredOnly: true });
  assert.deepEqual(kept.map((r) => r.id).sort(), failed.map((r) => r.id).sort());
  const hook = await receiver(() => 200, port);
  const second = alerter(reopened, [new WebhookDestination(url)]);
  await second.alerter.start();
  await until('both delivered after the restart', () => (hook.got.length >= 2 ? true : undefined));
  assert.deepEqual(hook.got.map((g) => g.body.id).sort(), kept.map((r) => (JSON.parse(r.payload) as AlertBody).id).sort());
  await until('marked delivered', async () => ((await reopened.listAlerts({ undeliveredOnly: true })).length === 0 ? true : undefined));
});

test('nothing is dropped silently: old alerts are given up but kept, unknown destinations are kept, a store error is retried', async () => {
  const { store } = await freshStore();
  const port = await freePort(); // nobody listens
  const url = `http://127.0.0.1:${port}/hook`;
  // an alert older than the maximum age is given up after its next failure, and stays in the outbox
  const { alerter: a, events } = alerter(store, [new WebhookDestination(url)], new RelayEvents(), { maxAgeMs: 0 });
  await a.start();
  events.emit('agent-lost', { time: now(), agent: 'box', address: '10.0.0.1:1', reason: 'ping timeout' });
  const given = await until('given up', async () => (await store.listAlerts()).find((r) => /^given up/.test(r.lastError ?? '')));
  assert.equal(given.deliveredAt, null);
  assert.equal(given.nextAttemptAt.getUTCFullYear(), 9999);
  assert.equal((await store.listAlerts({ undeliveredOnly: true })).length, 1);
  await a.stop();

  // rows for a destination this relay no longer has are kept and looked at later, not sent elsewhere
  const elsewhere = await receiver();
  await store.addAlerts([{ createdAt: now(), kind: 'agent-lost', payload: '{"version":1}', destination: 'webhook:http://127.0.0.1:1/removed', nextAttemptAt: now() }]);
  const b = alerter(store, [new WebhookDestination(elsewhere.url)]);
  await b.alerter.start();
  const orphan = await until('the orphan row looked at', async () => (await store.listAlerts()).find((r: AlertRecord) => r.destination.endsWith('/removed') && r.attempts === 1));
  assert.equal(orphan.deliveredAt, null);
  assert.equal(orphan.lastError, 'destination no longer configured');
  assert.ok(orphan.nextAttemptAt.getTime() > Date.now() + 30 * 60_000);
  assert.equal(elsewhere.got.length, 0);
  await b.alerter.stop();

  // the outbox write fails once (a locked database, say): the alert waits in memory and is written on the next poll
  let failures = 1;
  const flaky = Object.create(store) as Store;
  flaky.addAlerts = async (rows) => {
    if (failures-- > 0) throw new Error('database is locked');
    return store.addAlerts(rows);
  };
  const c = alerter(flaky, [new WebhookDestination(elsewhere.url)]);
  await c.alerter.start();
  c.events.emit('credits-exhausted', { time: now(), scope: 'tunnel', name: 'web', baselineBytesPerSecond: 10 });
  await until('delivered despite the failed write', () => (elsewhere.got.length === 1 ? true : undefined));
  assert.equal(failures, -1, 'the first write failed, the second went through');
});
