// A relay started as root with --user drops to that account after binding and keeps serving.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, chownSync, readdirSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Cleanup, makeHome, freePort, startWarpstone, runWarpstone } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function uidOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:')) ?? '';
  return Number(line.split(/\s+/)[1]);
}

test('relay --user drops root after binding', { skip: isRoot ? false : 'needs root to switch users' }, async () => {
  const home = await makeHome(cleanup);
  const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
  chmodSync(home.dir, 0o700);
  chownSync(home.dir, nobody, 0);
  for (const f of readdirSync(home.dir)) chownSync(join(home.dir, f), nobody, 0);
  const port = await freePort();
  const relay = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${port}`, '--user', 'nobody'], home.env);
  await relay.waitFor(/dropped privileges/);
  assert.equal(uidOf(relay.child.pid as number), nobody);
  const status = await runWarpstone(['status', '--json'], home.env);
  assert.equal(status.code, 0, status.stderr);
  assert.equal(JSON.parse(status.stdout).relay.pid, relay.child.pid);
  assert.equal(await relay.stop(), 0);
});

test('relay --user with an unknown account is a usage error', async () => {
  const home = await makeHome(cleanup);
  const port = await freePort();
  const relay = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${port}`, '--user', 'no-such-user-here'], home.env);
  assert.equal(await relay.exited, 2);
  assert.match(relay.output(), /--user: no such user 'no-such-user-here'/);
});
