// Prometheus metrics: after feeding the event bus and setting the view, the exposition text has
// the right series and values; identities never become labels; label sets stay bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RelayEvents } from '../../src/ops/events.ts';
import { FAILURE_REASONS, OpsMetrics } from '../../src/ops/metrics.ts';
import { MemoryOpsStore } from './memory-ops-store.ts';
import { TestView } from './helpers.ts';

/** The value of one series, e.g. value(text, 'warpstone_bans_active'), or undefined. */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (line.slice(0, space) === series) return Number(line.slice(space + 1));
  }
  return undefined;
}

function setup(options: ConstructorParameters<typeof OpsMetrics>[1] = {}): { events: RelayEvents; view: TestView; store: MemoryOpsStore; metrics: OpsMetrics } {
  const store = new MemoryOpsStore();
  const view = new TestView(store);
  const events = new RelayEvents();
  const metrics = new OpsMetrics(view, { processMetrics: false, ...options });
  metrics.attach(events);
  return { events, view, store, metrics };
}

test('counters follow the event bus: bytes, streams, refusals, failures, handshakes, bans', async () => {
  const { events, metrics } = setup();
  const time = new Date();
  events.emit('bytes', { tunnel: 'web', identity: 'alice', up: 100, down: 1000 });
  events.emit('bytes', { tunnel: 'web', identity: 'bob', up: 50, down: 0 });
  events.emit('bytes', { tunnel: 'db', identity: 'alice', up: 7, down: 9 });
  events.emit('stream-open', { time, id: 1, identity: 'alice', source: '1.2.3.4:5', tunnel: 'web', agent: 'box' });
  events.emit('stream-open', { time, id: 2, identity: 'bob', source: '1.2.3.4:6', tunnel: 'web', agent: 'box' });
  events.emit('stream-close', { time, id: 1, identity: 'alice', source: '1.2.3.4:5', tunnel: 'web', agent: 'box', bytesIn: 1, bytesOut: 2, durationMs: 5, reason: 'done' });
  events.emit('stream-refused', { time, identity: 'eve', source: '6.6.6.6:1', tunnel: 'web', status: 403, reason: 'not-granted', message: 'no grant' });
  events.emit('failure', { time, source: '6.6.6.6', reason: 'tls-unknown-ca', detail: 'foreign CA' });
  events.emit('failure', { time, source: '6.6.6.6', reason: 'tls-unknown-ca', detail: 'foreign CA' });
  events.emit('failure', { time, source: '6.6.6.6', reason: 'unknown-tunnel', tunnel: 'nope', detail: 'x' });
  // a reason outside the known set (a newer relay) is counted, under a fixed label
  events.emit('failure', { time, source: '6.6.6.6', reason: 'something-new' as never, detail: 'x' });
  events.emit('handshake-ok', { time, source: '1.2.3.4:5', identity: 'alice', role: 'user', resumed: false });
  events.emit('handshake-ok', { time, source: '1.2.3.4:7', identity: 'box', role: 'agent', resumed: true });
  events.emit('banned-drop', { time, source: '6.6.6.6' });
  events.emit('banned-drop', { time, source: '6.6.6.6' });
  events.emit('ban-issued', { time, address: '6.6.6.6/32', until: new Date(Date.now() + 60_000), failures: 5, offence: 1, reason: 'x' });
  events.emit('ban-lifted', { time, address: '6.6.6.6/32', by: 'admin' });
  events.emit('agent-connected', { time, agent: 'box', address: '10.0.0.1:5' });
  events.emit('address-changed', { time, agent: 'box', from: '10.0.0.1', to: '10.0.0.2' });
  events.emit('agent-lost', { time, agent: 'box', address: '10.0.0.2:5', reason: 'ping timeout' });
  events.emit('credits-exhausted', { time, scope: 'tunnel', name: 'web', baselineBytesPerSecond: 1000 });

  const text = await metrics.render();
  assert.equal(value(text, 'warpstone_tunnel_bytes_total{tunnel="web",direction="in"}'), 150);
  assert.equal(value(text, 'warpstone_tunnel_bytes_total{tunnel="web",direction="out"}'), 1000);
  assert.equal(value(text, 'warpstone_tunnel_bytes_total{tunnel="db",direction="in"}'), 7);
  assert.equal(value(text, 'warpstone_tunnel_bytes_total{tunnel="db",direction="out"}'), 9);
  assert.equal(value(text, 'warpstone_streams_opened_total{tunnel="web"}'), 2);
  assert.equal(value(text, 'warpstone_streams_closed_total{tunnel="web"}'), 1);
  assert.equal(value(text, 'warpstone_streams_refused_total{reason="not-granted"}'), 1);
  assert.equal(value(text, 'warpstone_failures_total{reason="tls-unknown-ca"}'), 2);
  assert.equal(value(text, 'warpstone_failures_total{reason="unknown-tunnel"}'), 1);
  assert.equal(value(text, 'warpstone_failures_total{reason="other"}'), 1);
  assert.equal(value(text, 'warpstone_handshakes_total{result="ok",role="user"}'), 1);
  assert.equal(value(text, 'warpstone_handshakes_total{result="ok",role="agent"}'), 1);
  assert.equal(value(text, 'warpstone_handshakes_total{result="refused",role="unknown"}'), 2);
  assert.equal(value(text, 'warpstone_banned_drops_total'), 2);
  assert.equal(value(text, 'warpstone_bans_issued_total'), 1);
  assert.equal(value(text, 'warpstone_bans_lifted_total{by="admin"}'), 1);
  assert.equal(value(text, 'warpstone_agent_connects_total{agent="box"}'), 1);
  assert.equal(value(text, 'warpstone_agent_losses_total{agent="box"}'), 1);
  assert.equal(value(text, 'warpstone_agent_address_changes_total{agent="box"}'), 1);
  assert.equal(value(text, 'warpstone_shaping_credits_exhausted_total{scope="tunnel"}'), 1);
  // every known reason exists from the start, so a rate() over it works before the first failure
  for (const reason of FAILURE_REASONS) assert.notEqual(value(text, `warpstone_failures_total{reason="${reason}"}`), undefined, reason);
  // identities are never labels
  for (const who of ['alice', 'bob', 'eve']) assert.ok(!text.includes(`"${who}"`), `identity ${who} appears as a label value`);

  metrics.detach();
  events.emit('bytes', { tunnel: 'web', identity: 'alice', up: 1, down: 1 });
  assert.equal(value(await metrics.render(), 'warpstone_tunnel_bytes_total{tunnel="web",direction="in"}'), 150, 'detached: nothing counted');
});

test('gauges come from the view and the store at scrape time', async () => {
  const { events, view, store, metrics } = setup();
  const now = new Date();
  view.current.agents = [{ name: 'box', address: '10.0.0.1:5', connectedSince: now.toISOString(), tunnels: ['web'], streams: 2 }];
  view.current.tunnels = [
    { name: 'web', agent: 'box', port: 80, online: true, lastSeen: now.toISOString() },
    { name: 'old', agent: 'gone', port: 22, online: false, lastSeen: now.toISOString() },
  ];
  const stream = { agent: 'box', tunnel: 'web', source: '1.2.3.4:5', via: 'h2', openedAt: now.toISOString(), bytesIn: 1, bytesOut: 2 };
  view.current.streams = [
    { ...stream, id: 1, user: 'alice' },
    { ...stream, id: 2, user: 'bob' },
  ];
  await store.putBan({ prefix: '6.6.6.6/32', bannedAt: now, until: new Date(now.getTime() + 60_000), offence: 1, failures: 5, reason: 'x', by: 'auto' });
  await store.putBan({ prefix: '7.7.7.7/32', bannedAt: new Date(now.getTime() - 120_000), until: new Date(now.getTime() - 60_000), offence: 1, failures: 5, reason: 'x', by: 'auto' });
  await store.putTargetHealth({ agent: 'box', tunnel: 'web', state: 'up', detail: 'tcp ok', since: now, checkedAt: new Date(now.getTime() - 10_000) });
  await store.putTargetHealth({ agent: 'box', tunnel: 'db', state: 'down', detail: 'refused', since: now, checkedAt: now });
  // the bus reports web going down after the store's record: the newer state wins
  events.emit('target-health', { time: new Date(now.getTime() - 1000), agent: 'box', tunnel: 'web', state: 'down', detail: 'refused' });
  view.buckets = [
    { scope: 'tunnel', name: 'web', credits: 5000, creditCap: 10_000, rateBytesPerSecond: 1234, state: 'burst' },
    { scope: 'user', name: 'alice', credits: 0, creditCap: 100, rateBytesPerSecond: 10, state: 'baseline' },
  ];

  let text = await metrics.render();
  assert.equal(value(text, 'warpstone_agents_online'), 1);
  assert.equal(value(text, 'warpstone_tunnel_online{tunnel="web"}'), 1);
  assert.equal(value(text, 'warpstone_tunnel_online{tunnel="old"}'), 0);
  assert.equal(value(text, 'warpstone_streams_open{tunnel="web"}'), 2);
  assert.equal(value(text, 'warpstone_streams_open{tunnel="old"}'), 0);
  assert.equal(value(text, 'warpstone_bans_active'), 1, 'the expired ban is not active');
  assert.equal(value(text, 'warpstone_target_up{tunnel="web"}'), 0);
  assert.equal(value(text, 'warpstone_target_up{tunnel="db"}'), 0);
  assert.equal(value(text, 'warpstone_shaping_credits_bytes{scope="tunnel",name="web"}'), 5000);
  assert.equal(value(text, 'warpstone_shaping_credit_cap_bytes{scope="tunnel",name="web"}'), 10_000);
  assert.equal(value(text, 'warpstone_shaping_rate_bytes_per_second{scope="tunnel",name="web"}'), 1234);
  assert.equal(value(text, 'warpstone_shaping_credits_bytes{scope="user",name="alice"}'), 0);

  // the store says web is up again, newer than the bus: 1; a tunnel that went away disappears
  await store.putTargetHealth({ agent: 'box', tunnel: 'web', state: 'up', detail: 'ok', since: now, checkedAt: new Date(now.getTime() + 1000) });
  view.current.tunnels = view.current.tunnels.filter((t) => t.name === 'web');
  view.current.streams = [];
  text = await metrics.render();
  assert.equal(value(text, 'warpstone_target_up{tunnel="web"}'), 1);
  assert.equal(value(text, 'warpstone_tunnel_online{tunnel="old"}'), undefined);
  assert.equal(value(text, 'warpstone_streams_open{tunnel="web"}'), 0);
});

test('a source that cannot be read keeps its last values and is counted', async () => {
  const { view, store, metrics } = setup();
  view.current.agents = [{ name: 'box', address: 'a', connectedSince: new Date().toISOString(), tunnels: [], streams: 0 }];
  assert.equal(value(await metrics.render(), 'warpstone_agents_online'), 1);
  view.statusFailure = new Error('relay busy');
  store.failing = new Error('database is locked');
  const text = await metrics.render();
  assert.equal(value(text, 'warpstone_agents_online'), 1);
  assert.equal(value(text, 'warpstone_metrics_source_errors_total{source="status"}'), 1);
  assert.equal(value(text, 'warpstone_metrics_source_errors_total{source="bans"}'), 1);
  assert.equal(value(text, 'warpstone_metrics_source_errors_total{source="health"}'), 1);
});

test('tunnel and bucket labels are capped; the rest add up under _other', async () => {
  const { events, view, metrics } = setup({ maxTunnels: 3, maxBuckets: 1 });
  for (let i = 0; i < 10; i++) events.emit('bytes', { tunnel: `t${i}`, identity: 'alice', up: 1, down: 0 });
  view.buckets = [
    { scope: 'user', name: 'u1', credits: 1, creditCap: 10, rateBytesPerSecond: 1, state: 'burst' },
    { scope: 'user', name: 'u2', credits: 2, creditCap: 10, rateBytesPerSecond: 1, state: 'burst' },
    { scope: 'user', name: 'u3', credits: 3, creditCap: 10, rateBytesPerSecond: 1, state: 'burst' },
  ];
  const text = await metrics.render();
  const tunnels = new Set([...text.matchAll(/warpstone_tunnel_bytes_total\{tunnel="([^"]+)"/g)].map((m) => m[1]));
  assert.deepEqual([...tunnels].sort(), ['_other', 't0', 't1', 't2']);
  assert.equal(value(text, 'warpstone_tunnel_bytes_total{tunnel="_other",direction="in"}'), 7);
  assert.equal(value(text, 'warpstone_shaping_credits_bytes{scope="user",name="u1"}'), 1);
  assert.equal(value(text, 'warpstone_shaping_credits_bytes{scope="user",name="_other"}'), 5);
});

test('process metrics are in the same registry, and two instances do not share counters', async () => {
  const a = setup({ processMetrics: true });
  const b = setup({ processMetrics: true });
  a.events.emit('banned-drop', { time: new Date(), source: 'x' });
  const textA = await a.metrics.render();
  const textB = await b.metrics.render();
  assert.match(textA, /^process_cpu_user_seconds_total \d/m);
  assert.match(textA, /^nodejs_heap_size_used_bytes \d/m);
  assert.equal(value(textA, 'warpstone_banned_drops_total'), 1);
  assert.equal(value(textB, 'warpstone_banned_drops_total'), 0);
  assert.match(a.metrics.contentType, /^text\/plain; version=0\.0\.4/);
});
