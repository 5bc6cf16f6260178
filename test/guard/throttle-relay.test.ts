// Shaping in the relay, end to end: `warpstone limit set` in the store reaches a running relay
// (policy revision), a stream through connect -> relay -> agent runs at the burst rate while
// credits last and at the baseline after, the relay logs and emits the exhaustion, and the admin
// status shows the bucket.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { Cleanup, startCluster, startConnect, startWarpstone } from '../helpers/harness.ts';
import { runLimitSet } from '../../src/cli/limit.ts';
import { fetchStatus } from '../../src/relay/admin.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const MB = 1000 * 1000;

test('a tunnel limit set with the CLI shapes a live relay: burst, then baseline, visible in status', async (t) => {
  const cluster = await startCluster(cleanup);
  // A sink service that counts what arrives, sampled every 50 ms.
  let received = 0;
  const samples: Array<[number, number]> = [];
  const sink = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', (c: Buffer) => (received += c.length));
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => sink.close());
  const sinkPort = (sink.address() as net.AddressInfo).port;
  const agentFile = await cluster.home.issue('agent', 'sink-box');
  await cluster.home.grant('alice', 'sink');
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', `127.0.0.1:${cluster.relayPort}`, '--expose', `sink=127.0.0.1:${sinkPort}`], cluster.home.env);
  await agent.waitFor(/tunnel registered/);

  // 2 MB/s always, 6 MB/s while 4 MB of credit last (about 0.9 s).
  await runLimitSet(cluster.home.dir, 'tunnel', 'sink', { baseline: '16Mbit', max: '48Mbit', credits: '4MB' });
  await cluster.relay.waitFor(/bandwidth limits reloaded/);

  const { port } = await startConnect(cleanup, cluster, 'sink');
  const client = net.connect({ port, host: '127.0.0.1' });
  client.on('error', () => undefined);
  cleanup.add(() => client.destroy());
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const chunk = Buffer.alloc(64 * 1024, 0x42);
  let stop = false;
  const pump = (): void => {
    while (!stop && client.write(chunk));
    if (!stop) client.once('drain', pump);
  };
  const t0 = performance.now();
  const sampler = setInterval(() => samples.push([performance.now() - t0, received]), 50);
  cleanup.add(() => clearInterval(sampler));
  pump();
  await new Promise((r) => setTimeout(r, 4_000));
  stop = true;
  clearInterval(sampler);
  const at = (ms: number): number => {
    let prev: [number, number] = [0, 0];
    for (const s of samples) {
      if (s[0] >= ms) return prev[1] + ((s[1] - prev[1]) * (ms - prev[0])) / Math.max(1, s[0] - prev[0]);
      prev = s;
    }
    return prev[1];
  };
  // The first bytes need the stream to open through three processes: measure from the first byte.
  const first = samples.find((s) => s[1] > 0)?.[0] ?? 0;
  const burst = ((at(first + 700) - at(first + 100)) * 1000) / 600;
  const base = ((at(first + 3_900) - at(first + 1_900)) * 1000) / 2_000;
  t.diagnostic(`first byte after ${first.toFixed(0)} ms; burst ${(burst / MB).toFixed(2)} MB/s; baseline ${(base / MB).toFixed(2)} MB/s`);
  assert.ok(Math.abs(burst - 6 * MB) < 0.25 * 6 * MB, `burst ${burst}`);
  assert.ok(Math.abs(base - 2 * MB) < 0.25 * 2 * MB, `baseline ${base}`);
  await cluster.relay.waitFor(/credits exhausted/);

  const status = await fetchStatus(join(cluster.home.dir, 'relay.sock'));
  const bucket = status.shaping?.find((b) => b.scope === 'tunnel' && b.name === 'sink');
  assert.ok(bucket, JSON.stringify(status.shaping));
  assert.equal(bucket.exhausted, true);
  assert.equal(bucket.allowedBytesPerSecond, 2 * MB);
  assert.equal(bucket.streams, 1);
  assert.ok(bucket.totalBytes >= received, `${bucket.totalBytes} charged, ${received} received`);
  // The echo tunnel has no limit: no bucket.
  assert.equal(status.shaping?.some((b) => b.name === 'echo'), false);
});
