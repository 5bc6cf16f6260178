// `warpstone demo` is the README's main job: it must work with no arguments and exit 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runWarpstone } from '../helpers/harness.ts';

test('warpstone demo runs the whole path and stops cleanly', async () => {
  const r = await runWarpstone(['demo'], { ...process.env, WARPSTONE_FROM_SOURCE: '1' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\$ warpstone relay --listen 127\.0\.0\.1:\d+ &/);
  assert.match(r.stdout, /round trip byte-exact: yes/);
  const sent = /sent\s+(\d+) bytes, sha256 ([0-9a-f]+)/.exec(r.stdout);
  const got = /received\s+(\d+) bytes, sha256 ([0-9a-f]+)/.exec(r.stdout);
  assert.ok(sent && got);
  assert.equal(sent[1], got[1]);
  assert.equal(sent[2], got[2]);
  assert.match(r.stdout, /echo\s+online\s+homebox/);
  for (const name of ['connect', 'agent', 'relay']) assert.match(r.stdout, new RegExp(`${name} stopped \\(exit 0\\)`));
});
