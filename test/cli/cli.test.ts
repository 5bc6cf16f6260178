// The command line as a user meets it: real `warpstone` processes, exit codes and messages.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { Cleanup, tempDir, runWarpstone } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const base = { ...process.env, WARPSTONE_FROM_SOURCE: '1' };

test('init creates the home, refuses to overwrite the CA', async () => {
  const home = join(tempDir(cleanup), 'h');
  const env = { ...base, WARPSTONE_HOME: home };
  const first = await runWarpstone(['init', '--relay-host', 'relay.example.org', '--relay-host', '203.0.113.7'], env);
  assert.equal(first.code, 0, first.stderr);
  for (const f of ['ca.pem', 'ca.key', 'relay.pem', 'store.sqlite']) assert.ok(existsSync(join(home, f)), f);
  assert.equal(statSync(join(home, 'ca.key')).mode & 0o777, 0o600);
  assert.equal(statSync(home).mode & 0o777, 0o700);
  const relayCert = new X509Certificate(readFileSync(join(home, 'relay.pem'), 'utf8').split(/(?=-----BEGIN CERTIFICATE)/)[1] as string);
  for (const san of ['DNS:relay.example.org', 'IP Address:203.0.113.7', 'DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1']) {
    assert.ok(relayCert.subjectAltName?.includes(san), `${san} in ${relayCert.subjectAltName}`);
  }
  const caBefore = readFileSync(join(home, 'ca.pem'), 'utf8');
  const second = await runWarpstone(['init'], env);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /already has a CA .*refusing to overwrite/);
  assert.equal(readFileSync(join(home, 'ca.pem'), 'utf8'), caBefore);
});

test('--home wins over $WARPSTONE_HOME', async () => {
  const dir = tempDir(cleanup);
  const r = await runWarpstone(['init', '--home', join(dir, 'explicit')], { ...base, WARPSTONE_HOME: join(dir, 'env') });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(existsSync(join(dir, 'explicit', 'ca.pem')));
  assert.ok(!existsSync(join(dir, 'env')));
});

test('issue writes a 0600 identity file (key, cert, CA) and validates names', async () => {
  const home = join(tempDir(cleanup), 'h');
  const env = { ...base, WARPSTONE_HOME: home };
  assert.equal((await runWarpstone(['init'], env)).code, 0);
  const out = join(home, 'alice.pem');
  const r = await runWarpstone(['issue', 'user', 'alice', '--out', out, '--days', '10'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /issued user 'alice' \(serial [0-9A-F]+, valid until/);
  assert.equal(statSync(out).mode & 0o777, 0o600);
  const text = readFileSync(out, 'utf8');
  assert.deepEqual(
    [...text.matchAll(/-----BEGIN ([A-Z ]+)-----/g)].map((m) => m[1]),
    ['PRIVATE KEY', 'CERTIFICATE', 'CERTIFICATE'],
  );
  const cert = new X509Certificate(text.split(/(?=-----BEGIN CERTIFICATE)/)[1] as string);
  assert.match(cert.subject, /CN=alice/);
  const days = (new Date(cert.validTo).getTime() - Date.now()) / 86_400_000;
  assert.ok(days > 9.9 && days <= 10.01, `validity ${days} days`);

  const again = await runWarpstone(['issue', 'user', 'alice', '--out', out], env);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists; remove it or pass --force/);

  const spaced = await runWarpstone(['issue', 'user', 'bob smith', '--out', join(home, 'b.pem')], env);
  assert.equal(spaced.code, 2);
  assert.match(spaced.stderr, /user name "bob smith" contains whitespace/);
  const ctl = await runWarpstone(['issue', 'agent', 'bo\u0001x', '--out', join(home, 'c.pem')], env);
  assert.equal(ctl.code, 2);
  assert.match(ctl.stderr, /control character \(U\+0001\)/);
  const kind = await runWarpstone(['issue', 'admin', 'x', '--out', join(home, 'd.pem')], env);
  assert.equal(kind.code, 2);
  assert.match(kind.stderr, /must be 'user' or 'agent'/);
  const clash = await runWarpstone(['issue', 'agent', 'alice', '--out', join(home, 'e.pem')], env);
  assert.equal(clash.code, 2);
  assert.match(clash.stderr, /already the name of a user/);
});

test('grant, ungrant, revoke and list', async () => {
  const home = join(tempDir(cleanup), 'h');
  const env = { ...base, WARPSTONE_HOME: home };
  await runWarpstone(['init'], env);
  await runWarpstone(['issue', 'user', 'alice', '--out', join(home, 'a.pem')], env);
  await runWarpstone(['issue', 'agent', 'box', '--out', join(home, 'b.pem')], env);
  const g = await runWarpstone(['grant', 'alice', 'web'], env);
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stdout, /granted: alice -> web/);
  const nobody = await runWarpstone(['grant', 'nobody', 'web'], env);
  assert.equal(nobody.code, 2);
  assert.match(nobody.stderr, /no identity named 'nobody'/);
  const agentGrant = await runWarpstone(['grant', 'box', 'web'], env);
  assert.equal(agentGrant.code, 2);
  assert.match(agentGrant.stderr, /is an agent, not a user/);
  let list = await runWarpstone(['list'], env);
  assert.match(list.stdout, /alice -> web/);
  assert.equal((await runWarpstone(['ungrant', 'alice', 'web'], env)).code, 0);
  const rv = await runWarpstone(['revoke', 'alice'], env);
  assert.equal(rv.code, 0, rv.stderr);
  assert.match(rv.stdout, /revoked 1 certificate\(s\) of 'alice'/);
  list = await runWarpstone(['list'], env);
  assert.match(list.stdout, /user\s+alice\s+REVOKED/);
  assert.doesNotMatch(list.stdout, /alice -> web/);
  const unknown = await runWarpstone(['revoke', 'ghost'], env);
  assert.equal(unknown.code, 2);
});

test('commands without a home say to run init', async () => {
  const env = { ...base, WARPSTONE_HOME: join(tempDir(cleanup), 'none') };
  const r = await runWarpstone(['issue', 'user', 'alice', '--out', '/tmp/x.pem'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /run 'warpstone init' first/);
});

test('agent and connect refuse bad flags with usage errors', async () => {
  const r = await runWarpstone(['agent', '--relay', 'h:1', '--expose', 'web=h:1'], base);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--identity FILE is required/);
  const c = await runWarpstone(['connect', 'web', '--identity', '/nonexistent.pem', '--relay', 'h:1'], base);
  assert.equal(c.code, 2);
  assert.match(c.stderr, /exactly one of --listen/);
  const missing = await runWarpstone(['connect', 'web', '--identity', '/nonexistent.pem', '--relay', 'h:1', '--stdio'], base);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /identity file \/nonexistent.pem cannot be read/);
});
