// One home, one relay: a second relay on the same home refuses to start instead of stealing
// the first one's admin socket; a socket left by a dead relay is cleaned up.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Cleanup, makeHome, freePort, startWarpstone, runWarpstone } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('a second relay on the same home is refused; a stale socket is replaced', async () => {
  const home = await makeHome(cleanup);
  const first = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${await freePort()}`], home.env);
  await first.waitFor(/relay listening/);
  const second = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${await freePort()}`], home.env);
  assert.equal(await second.exited, 1);
  assert.match(second.output(), new RegExp(`another relay \\(pid ${first.child.pid}\\) is already running with this home`));
  const status = await runWarpstone(['status', '--json'], home.env);
  assert.equal(JSON.parse(status.stdout).relay.pid, first.child.pid, 'the first relay still owns the admin socket');

  first.child.kill('SIGKILL');
  await first.exited;
  const third = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${await freePort()}`], home.env);
  await third.waitFor(/relay listening/);
  const again = await runWarpstone(['status', '--json'], home.env);
  assert.equal(JSON.parse(again.stdout).relay.pid, third.child.pid);
});

test('a port in use is a one-line error', async () => {
  const home = await makeHome(cleanup);
  const other = await makeHome(cleanup);
  const port = await freePort();
  const first = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${port}`], home.env);
  await first.waitFor(/relay listening/);
  const r = await runWarpstone(['relay', '--listen', `127.0.0.1:${port}`], other.env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
});

test('--idle-timeout must be a number of seconds', async () => {
  const home = await makeHome(cleanup);
  const r = await runWarpstone(['relay', '--listen', '127.0.0.1:0', '--idle-timeout', 'abc'], home.env);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--idle-timeout: 'abc' should be a number of seconds/);
});
