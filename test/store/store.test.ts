// The store on a real SQLite file: certificates, revocation, grants, revision counter.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { Cleanup, tempDir } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

test('a missing store file gives a clear error unless created', async () => {
  const dir = tempDir(cleanup);
  await assert.rejects(openSqliteStore(join(dir, 'nope.sqlite')), /run 'warpstone init' first/);
});

test('certificates, revocation, grants and the revision counter', async () => {
  const dir = tempDir(cleanup);
  const path = join(dir, 'store.sqlite');
  const store = await openSqliteStore(path, { create: true });
  cleanup.add(() => store.close());
  const now = new Date();
  const later = new Date(now.getTime() + 86_400_000);
  await store.addCertificate({ serial: 'AA01', name: 'alice', role: 'user', notBefore: now, notAfter: later, issuedAt: now });
  await store.addCertificate({ serial: 'AA02', name: 'alice', role: 'user', notBefore: now, notAfter: later, issuedAt: now });
  await store.addCertificate({ serial: 'BB01', name: 'box', role: 'agent', notBefore: now, notAfter: later, issuedAt: now });
  assert.equal(await store.roleOf('alice'), 'user');
  assert.equal(await store.roleOf('nobody'), undefined);
  assert.equal((await store.findCertificate('AA01'))?.name, 'alice');

  const r0 = await store.revision();
  assert.equal(await store.grant('alice', 'web'), true);
  assert.equal(await store.grant('alice', 'web'), false, 'a repeated grant changes nothing');
  assert.equal(await store.revision(), r0 + 1);
  let snap = await store.policySnapshot();
  assert.ok(snap.grants.get('alice')?.has('web'));

  assert.equal(await store.revokeName('alice'), 2);
  assert.equal(await store.revokeName('alice'), 0);
  snap = await store.policySnapshot();
  assert.deepEqual([...snap.revokedSerials].sort(), ['AA01', 'AA02']);
  assert.equal(snap.revision, r0 + 2);
  assert.ok((await store.findCertificate('AA01'))?.revokedAt instanceof Date);

  assert.equal(await store.ungrant('alice', 'web'), true);
  assert.equal(await store.ungrant('alice', 'web'), false);
  const ids = await store.listIdentities();
  assert.deepEqual(ids.map((i) => [i.name, i.role, i.certificates, i.revoked]), [
    ['alice', 'user', 2, true],
    ['box', 'agent', 1, false],
  ]);

  await store.recordTunnel('web', 'box', 80);
  await store.recordTunnel('web', 'box', 8080);
  const tunnels = await store.listTunnels();
  assert.deepEqual(tunnels.map((t) => [t.name, t.agent, t.port]), [['web', 'box', 8080]]);
  const id = await store.recordAgentConnected('box', '127.0.0.2:5000');
  await store.recordAgentDisconnected(id);
  assert.ok(id > 0);
});

test('a second process sees changes (WAL, same file)', async () => {
  const dir = tempDir(cleanup);
  const path = join(dir, 'store.sqlite');
  const a = await openSqliteStore(path, { create: true });
  const b = await openSqliteStore(path);
  cleanup.add(() => a.close());
  cleanup.add(() => b.close());
  const before = await b.revision();
  await a.grant('u', 't');
  assert.equal(await b.revision(), before + 1);
});
