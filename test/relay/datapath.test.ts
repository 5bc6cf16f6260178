// The data path through real processes: warpstone connect -> relay -> agent -> service.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { Cleanup, startCluster, startConnect, exchange, sha256, type Cluster } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

let cluster: Cluster;
let port: number;

test('setup: relay, agent and connect', async () => {
  cluster = await startCluster(cleanup);
  ({ port } = await startConnect(cleanup, cluster, 'echo'));
  assert.ok(port > 0);
});

test('64 MiB each way arrive byte-exact (SHA-256)', async () => {
  const payload = randomBytes(64 * 1024 * 1024);
  const echoed = await exchange(port, payload);
  assert.equal(echoed.length, payload.length);
  assert.equal(sha256(echoed), sha256(payload));
});

test('half-close: a client that shuts down writing still receives the reply', async () => {
  // A service that answers only after the client's end-of-stream: proves FIN travels to the
  // service and the reply travels back on the still-open direction.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => socket.end(`got ${Buffer.concat(chunks).length} bytes then EOF`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => server.close());
  const servicePort = (server.address() as net.AddressInfo).port;
  const { home } = cluster;
  const agentFile = await home.issue('agent', 'halfbox');
  await home.grant('alice', 'half');
  const { startWarpstone } = await import('../helpers/harness.ts');
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', `127.0.0.1:${cluster.relayPort}`, '--expose', `half=127.0.0.1:${servicePort}`], home.env);
  await agent.waitFor(/tunnel registered/);
  const { port: halfPort } = await startConnect(cleanup, cluster, 'half');
  const reply = await exchange(halfPort, Buffer.from('x'.repeat(1000)));
  assert.equal(reply.toString(), 'got 1000 bytes then EOF');
});

test('200 concurrent streams over one agent link, each byte-exact', async () => {
  const payloads = Array.from({ length: 200 }, (_, i) => randomBytes(16 * 1024 + i * 97));
  const results = await Promise.all(payloads.map((p) => exchange(port, p)));
  for (let i = 0; i < payloads.length; i++) {
    assert.equal(sha256(results[i] as Buffer), sha256(payloads[i] as Buffer), `stream ${i} differs`);
  }
});
