// End-to-end backpressure: a client that stops reading must stop the service's writes after a
// bounded amount (the flow-control windows and socket buffers along the path), not make the
// relay or the agent buffer everything the service has to send.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, startCluster, startConnect, startWarpstone } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

const TOTAL = 512 * 1024 * 1024;
// Windows along the path: 4 MiB per stream per HTTP/2 leg (two legs), plus kernel socket
// buffers on four TCP legs and the 16 KiB stream high-water marks: far below 64 MiB.
const BOUND = 64 * 1024 * 1024;

test('a client that does not read stalls the service after a bounded amount', async (t) => {
  const cluster = await startCluster(cleanup);
  let written = 0;
  let stalled: () => void;
  const stalledNow = new Promise<void>((resolve) => (stalled = resolve));
  const chunk = Buffer.alloc(1024 * 1024, 0x61);
  // The service writes as fast as the path accepts and notes when write() has to wait. The agent
  // also connects here on its own (its TCP health check, which closes at once): each connection
  // counts for itself, and the one that stalls while open is the stream through the tunnel.
  const service = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let mine = 0;
    let idleTicks = 0;
    const pump = (): void => {
      while (mine < TOTAL) {
        mine += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
    // Stalled = no progress for a while although data remains to be sent.
    let last = -1;
    const timer = setInterval(() => {
      idleTicks = mine === last ? idleTicks + 1 : 0;
      last = mine;
      if (idleTicks >= 10 && mine < TOTAL) {
        clearInterval(timer);
        written = mine;
        stalled();
      }
    }, 100);
    socket.once('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => service.close());
  const port = (service.address() as net.AddressInfo).port;
  const agentFile = await cluster.home.issue('agent', 'firehose-box');
  await cluster.home.grant('alice', 'firehose');
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', `127.0.0.1:${cluster.relayPort}`, '--expose', `firehose=127.0.0.1:${port}`], cluster.home.env);
  await agent.waitFor(/tunnel registered/);
  const { port: local } = await startConnect(cleanup, cluster, 'firehose');

  // Connect and never read.
  const client = net.connect({ port: local, host: '127.0.0.1' });
  client.pause();
  cleanup.add(() => client.destroy());
  await stalledNow;
  t.diagnostic(`the service stalled after ${written} bytes`);
  assert.ok(written < BOUND, `the service wrote ${written} bytes to a client that reads nothing; expected fewer than ${BOUND}`);
  assert.ok(written >= 4 * 1024 * 1024, `the stream window should let at least 4 MiB through, got ${written}`);

  // Reading again lets everything through: nothing was dropped.
  let received = 0;
  const allRead = new Promise<void>((resolve) => {
    client.on('data', (d: Buffer) => {
      received += d.length;
      if (received >= TOTAL) resolve();
    });
  });
  client.resume();
  await allRead;
  assert.equal(received, TOTAL);
});
