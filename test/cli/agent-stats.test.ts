// `warpstone agent stats NAME` end to end: a real relay and a real agent process whose link goes
// through a small NAT on loopback. The NAT forwards the agent's connection to the relay from a
// chosen source address (127.0.0.2, 127.0.0.3, ...); "rebinding" it drops the mapping, as a
// flaky line does, and the agent reconnects from the new address. The relay records each link
// in agent_sightings; the statistics must come out as the test drove them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, makeHome, freePort, startWarpstone, runWarpstone, echoServer } from '../helpers/harness.ts';
import { waitForCount, sleep } from '../helpers/tls-clients.ts';
import { withStore } from '../../src/cli/shared.ts';
import { parseSince, formatDuration, runAgentStats } from '../../src/cli/agent.ts';
import type { SightingRecord } from '../../src/store/ops-store.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

/** Forwards each accepted connection to the relay from `source`; `rebind` drops them all. */
class LoopbackNat {
  source = '127.0.0.2';
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private readonly server: net.Server;

  constructor(private readonly relayPort: number) {
    this.server = net.createServer((inside) => {
      const outside = net.connect({ host: '127.0.0.1', port: this.relayPort, localAddress: this.source });
      const pair: [net.Socket, net.Socket] = [inside, outside];
      this.pairs.add(pair);
      const drop = (): void => {
        inside.destroy();
        outside.destroy();
        this.pairs.delete(pair);
      };
      for (const s of pair) {
        s.on('error', drop);
        s.on('close', drop);
      }
      inside.pipe(outside);
      outside.pipe(inside);
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as net.AddressInfo).port)));
  }

  /** The mapping is lost: both sides see a reset; the next connection leaves from `source`. */
  rebind(source: string): void {
    this.source = source;
    for (const [inside, outside] of this.pairs) {
      inside.resetAndDestroy();
      outside.resetAndDestroy();
    }
    this.pairs.clear();
  }

  close(): void {
    this.rebind(this.source);
    this.server.close();
  }
}

test('since: durations back from now and ISO dates; nonsense is a usage error', () => {
  const now = new Date('2026-11-23T12:00:00Z');
  assert.equal(parseSince('7d', now).toISOString(), '2026-11-16T12:00:00.000Z');
  assert.equal(parseSince('90m', now).toISOString(), '2026-11-23T10:30:00.000Z');
  assert.equal(parseSince('2w', now).toISOString(), '2026-11-09T12:00:00.000Z');
  assert.equal(parseSince('2026-11-20', now).toISOString(), '2026-11-20T00:00:00.000Z');
  assert.throws(() => parseSince('last week', now), /duration back from now/);
  assert.throws(() => parseSince('2027-01-01', now), /in the future/);
  assert.equal(formatDuration(850), '850ms');
  assert.equal(formatDuration(12_340), '12.3s');
  assert.equal(formatDuration(245_000), '4m 05s');
  assert.equal(formatDuration(3 * 3_600_000 + 7 * 60_000), '3h 07m');
  assert.equal(formatDuration(2 * 86_400_000 + 4 * 3_600_000), '2d 04h');
});

test('an agent behind a NAT that changes its address: agent stats counts the changes and the lengths', async (t) => {
  const home = await makeHome(cleanup);
  const agentFile = await home.issue('agent', 'box');
  const relayPort = await freePort();
  const relay = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${relayPort}`], home.env);
  await relay.waitFor(/relay listening/);
  const nat = new LoopbackNat(relayPort);
  const natPort = await nat.listen();
  cleanup.add(() => nat.close());
  const service = await echoServer(cleanup);
  const startedAt = Date.now();
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', `127.0.0.1:${natPort}`, '--expose', `echo=127.0.0.1:${service}`], home.env);

  // 127.0.0.2, again 127.0.0.2 (a reconnect, not a change), 127.0.0.3, 127.0.0.4, back to 127.0.0.2
  const plan = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.2'];
  const registeredAt: number[] = [];
  let links = 0;
  const nextLink = async (): Promise<void> => {
    links += 1;
    await waitForCount(agent, /tunnel registered/, links, 15_000);
    registeredAt.push(Date.now());
  };
  await nextLink();
  await sleep(300);
  nat.rebind('127.0.0.2');
  await nextLink();
  for (const source of plan.slice(1)) {
    await sleep(300);
    nat.rebind(source);
    await nextLink();
  }
  // the relay records a sighting right after the registration the agent logs; give it a moment
  await sleep(300);

  // the JSON in-process (the same function the command runs), the table through the real command
  const stats = JSON.parse(await runAgentStats(home.dir, 'box', '1h', true)) as {
    changes: number;
    spans: Array<{ address: string; from: string; to: string; lastedMs: number; open: boolean; connections: number }>;
    lasted: { count: number; meanMs: number; stdMs: number; medianMs: number; shortestMs: number; longestMs: number };
    current: { address: string; connected: boolean };
    connections: number;
    disconnects: number;
    connectedMs: number;
    observedMs: number;
  };
  assert.deepEqual(
    stats.spans.map((s) => [s.address, s.connections, s.open]),
    [
      ['127.0.0.2', 2, false],
      ['127.0.0.3', 1, false],
      ['127.0.0.4', 1, false],
      ['127.0.0.2', 1, true],
    ],
  );
  assert.equal(stats.changes, 3);
  assert.deepEqual(stats.current, { ...stats.current, address: '127.0.0.2', connected: true });
  assert.equal(stats.connections, 5);
  assert.equal(stats.disconnects, 4);
  assert.ok(stats.observedMs < 60_000 && stats.connectedMs < stats.observedMs, 'the uptime is measured from the first connection, not the start of the hour');

  // The lengths against the relay's own rows: each address lasted from its first connection to
  // the next address's first connection.
  const rows: SightingRecord[] = await withStore(home.dir, (store) => store.listSightings('box'));
  assert.equal(rows.length, 5);
  assert.deepEqual(rows.map((s) => s.address.split(':')[0]), ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.2']);
  assert.equal(new Set(rows.map((s) => s.address)).size, 5, 'every link has its own source port');
  const starts = rows.map((s) => s.connectedAt.getTime());
  const lasted = [starts[2]! - starts[0]!, starts[3]! - starts[2]!, starts[4]! - starts[3]!];
  const mean = (lasted[0]! + lasted[1]! + lasted[2]!) / 3;
  const std = Math.sqrt(lasted.reduce((a, v) => a + (v - mean) ** 2, 0) / 2);
  const sorted = [...lasted].sort((a, b) => a - b);
  assert.deepEqual(stats.spans.slice(0, 3).map((s) => s.lastedMs), lasted);
  assert.equal(stats.lasted.count, 3);
  assert.ok(Math.abs(stats.lasted.meanMs - mean) < 1e-6);
  assert.ok(Math.abs(stats.lasted.stdMs - std) < 1e-6);
  assert.equal(stats.lasted.medianMs, sorted[1]);
  assert.equal(stats.lasted.shortestMs, sorted[0]);
  assert.equal(stats.lasted.longestMs, sorted[2]);
  // ...and against the test's own clock: each address was held at least the 300 ms the test
  // waited, and no longer than the time between the registrations around it (plus slack for
  // the relay writing its row after the agent logged).
  const held = [registeredAt[2]! - registeredAt[0]!, registeredAt[3]! - registeredAt[2]!, registeredAt[4]! - registeredAt[3]!];
  lasted.forEach((ms, i) => {
    assert.ok(ms >= 300, `address ${i} lasted ${ms} ms`);
    assert.ok(ms <= held[i]! + 1_000, `address ${i} lasted ${ms} ms, the test saw ${held[i]} ms`);
  });
  assert.ok(starts[0]! >= startedAt - 1_000);

  const text = await runWarpstone(['agent', 'stats', 'box', '--since', '1h'], home.env);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^agent box: address history from /);
  assert.match(text.stdout, /current address {2}127\.0\.0\.2, connected since /);
  assert.match(text.stdout, /address changes {2}3\n/);
  assert.match(text.stdout, /127\.0\.0\.3 .* 1 /);
  assert.match(text.stdout, /links {12}5 begun, 4 ended/);

  assert.match(text.stdout, /connected {8}\d+\.\d% of the time since its first connection/);
  t.diagnostic('warpstone agent stats box --since 1h');
  for (const line of text.stdout.trimEnd().split('\n')) t.diagnostic(line);

  await assert.rejects(runAgentStats(home.dir, 'nobody', '7d', false), (err: Error & { code?: string }) => err.code === 'WS_NO_SUCH_IDENTITY' && /no agent named 'nobody'/.test(err.message));
  await assert.rejects(runAgentStats(home.dir, 'box', 'soon', false), /--since 'soon'/);
  await agent.stop();
  await relay.stop();
});
