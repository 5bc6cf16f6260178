// A refused connection tells the person why in their own tool: `warpstone connect` prints the
// relay's reason, an agent logs it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup, startCluster, runWarpstone, startWarpstone, makeHome } from '../helpers/harness.ts';
import { runRevoke } from '../../src/cli/revoke.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('connect --stdio prints why the relay refused', async () => {
  const cluster = await startCluster(cleanup);
  const relay = `127.0.0.1:${cluster.relayPort}`;
  const ok = await runWarpstone(['connect', 'echo', '--identity', cluster.userIdentity, '--relay', relay, '--stdio'], cluster.home.env, 'hello');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'hello');

  const unknown = await runWarpstone(['connect', 'nosuch', '--identity', cluster.userIdentity, '--relay', relay, '--stdio'], cluster.home.env, 'x');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /not granted tunnel 'nosuch'/);

  const other = await makeHome(cleanup);
  const stranger = await other.issue('user', 'mallory');
  const foreign = await runWarpstone(['connect', 'echo', '--identity', stranger, '--relay', relay, '--stdio'], cluster.home.env, 'x');
  assert.equal(foreign.code, 1);
  // The client refuses the relay first: it was issued by a CA the stranger does not trust.
  assert.match(foreign.stderr, /cannot reach relay .*certificate/);

  await runRevoke(cluster.home.dir, 'alice');
  await new Promise((r) => setTimeout(r, 1500));
  const revoked = await runWarpstone(['connect', 'echo', '--identity', cluster.userIdentity, '--relay', relay, '--stdio'], cluster.home.env, 'x');
  assert.equal(revoked.code, 1);
  assert.match(revoked.stderr, /certificate of 'alice' .*revoked/);
});

test('a revoked agent is told why and keeps retrying', async () => {
  const cluster = await startCluster(cleanup);
  await runRevoke(cluster.home.dir, 'box');
  await cluster.agent.waitFor(/"reason":"certificate of 'box' .*revoked/, 40_000);
  assert.match(cluster.agent.output(), /reconnecting to relay/);
  const extra = startWarpstone(cleanup, ['status', '--json'], cluster.home.env);
  await extra.exited;
  const status = JSON.parse(extra.output());
  assert.equal(status.tunnels[0].online, false);
});
