// The relay's event bus, observed in-process on a real relay (real TLS, a real agent process, a
// real HTTP/2 client): handshake-ok, stream-open and stream-close with bytes, the once-a-second
// byte tally, agent-connected with the previous sighting, address-changed, agent-lost with its
// reason, and failure/stream-refused for a stream the user may not open.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cleanup, makeHome, startWarpstone, echoServer, freePort } from '../helpers/harness.ts';
import { relayClient, echoOnce, h2OpenError, sleep } from '../helpers/tls-clients.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Relay } from '../../src/relay/relay.ts';
import { RelayEvents, type RelayEventMap, type RelayEventName } from '../../src/ops/events.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('what the relay tells its subscribers about handshakes, streams, bytes and agents', async () => {
  const home = await makeHome(cleanup);
  const alice = readIdentityFile(await home.issue('user', 'alice'));
  await home.grant('alice', 'echo');
  const store = await openSqliteStore(join(home.dir, 'store.sqlite'));
  cleanup.add(() => store.close());
  // the agent was last seen elsewhere: its next connection is an address change
  const earlier = await store.recordAgentConnected('box', '192.0.2.10:40000');
  await store.recordAgentDisconnected(earlier, 'ping timeout');

  const events = new RelayEvents();
  const seen: Array<{ name: RelayEventName; payload: unknown }> = [];
  const names: RelayEventName[] = ['failure', 'handshake-ok', 'stream-open', 'stream-refused', 'stream-close', 'bytes', 'agent-connected', 'agent-lost', 'address-changed'];
  for (const name of names) events.on(name, (payload) => seen.push({ name, payload }));
  const of = <K extends RelayEventName>(name: K): Array<RelayEventMap[K]> => seen.filter((e) => e.name === name).map((e) => e.payload as RelayEventMap[K]);
  const waitFor = async (what: string, check: () => boolean): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(seen.map((e) => e.name))}`);
      await sleep(50);
    }
  };

  const port = await freePort();
  const relay = new Relay({ home: home.dir, listen: [{ host: '127.0.0.1', port }], store, log: silentLogger(), adminSocket: false, events });
  assert.equal(relay.events, events, 'the bus passed in is the one exposed');
  assert.equal(relay.listening(), false);
  await relay.start();
  cleanup.add(() => relay.stop());
  // the read-only view the operations side uses (OpsView)
  assert.equal(relay.listening(), true);
  assert.equal(relay.store, store);
  await relay.storeReachable();

  const service = await echoServer(cleanup);
  const agent = startWarpstone(cleanup, ['agent', '--identity', await home.issue('agent', 'box'), '--relay', `127.0.0.1:${port}`, '--expose', `echo=127.0.0.1:${service}`], home.env);
  await agent.waitFor(/tunnel registered/);
  await waitFor('agent-connected', () => of('agent-connected').length === 1);
  const connected = of('agent-connected')[0];
  assert.equal(connected?.agent, 'box');
  assert.match(connected?.address ?? '', /^127\.0\.0\.1:\d+$/);
  assert.equal(connected?.previousAddress, '192.0.2.10:40000');
  assert.deepEqual(of('address-changed').map((e) => [e.agent, e.from, e.to]), [['box', '192.0.2.10', '127.0.0.1']]);
  assert.deepEqual(of('handshake-ok').map((e) => [e.identity, e.role, e.resumed]), [['box', 'agent', false]]);

  // one stream with 200 KiB each way
  const client = relayClient(alice, port);
  cleanup.add(() => client.close());
  const stream = await client.open('echo');
  const payload = randomBytes(200 * 1024);
  const back = await echoOnce(stream, payload);
  assert.equal(back.length, payload.length);
  stream.end();
  await waitFor('stream-close', () => of('stream-close').length === 1);
  const open = of('stream-open')[0];
  assert.deepEqual([open?.identity, open?.tunnel, open?.agent, open?.target], ['alice', 'echo', 'box', `echo:${service}`]);
  const close = of('stream-close')[0];
  assert.deepEqual([close?.id, close?.identity, close?.tunnel, close?.bytesIn, close?.bytesOut, close?.reason], [open?.id, 'alice', 'echo', payload.length, payload.length, 'closed']);
  assert.ok((close?.durationMs ?? -1) >= 0);
  assert.deepEqual(of('handshake-ok').map((e) => e.identity), ['box', 'alice']);

  // the byte tally: every byte is counted once, in ticks of about a second
  await waitFor('the byte tally', () => of('bytes').reduce((n, e) => n + e.up, 0) >= payload.length);
  await sleep(1_200);
  const ticks = of('bytes');
  assert.ok(ticks.every((e) => e.tunnel === 'echo' && e.identity === 'alice' && (e.up > 0 || e.down > 0)), 'only tunnels that moved bytes');
  assert.equal(ticks.reduce((n, e) => n + e.up, 0), payload.length);
  assert.equal(ticks.reduce((n, e) => n + e.down, 0), payload.length);

  // a stream alice may not open: refused, and a failure that counts towards a ban
  const refused = await h2OpenError(alice, port, 'private');
  assert.equal(refused.status, 403);
  await waitFor('stream-refused', () => of('stream-refused').length === 1);
  assert.deepEqual(
    of('stream-refused').map((e) => [e.identity, e.tunnel, e.status, e.reason]),
    [['alice', 'private', 403, 'not-granted']],
  );
  assert.deepEqual(
    of('failure').map((e) => [e.identity, e.tunnel, e.reason]),
    [['alice', 'private', 'not-granted']],
  );

  // the agent goes away: agent-lost with why, and the sighting keeps the reason
  assert.equal(await agent.stop('SIGTERM'), 0);
  await waitFor('agent-lost', () => of('agent-lost').length === 1);
  assert.deepEqual(of('agent-lost').map((e) => [e.agent, e.reason]), [['box', 'agent closed the connection']]);
  const deadline = Date.now() + 5_000;
  let last = await store.lastSighting('box');
  while (last?.disconnectedAt === null && Date.now() < deadline) {
    await sleep(50);
    last = await store.lastSighting('box');
  }
  assert.equal(last?.reason, 'agent closed the connection');
  await relay.stop();
  assert.equal(relay.listening(), false, 'not ready once shutdown began');
});
