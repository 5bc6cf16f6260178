// The admin listener over TLS with the relay's own CA and certificate: an admin client
// certificate (OU=admin, known to the store, not revoked) is a credential; a user certificate,
// an unknown or revoked admin certificate, or one from another CA is not, and falls back to
// the token rules. The certificates are real, issued by the project's CA on a real home.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { AdminHttp } from '../../src/ops/admin-http.ts';
import { ADMIN_ROLE, adminCertificateCheck } from '../../src/ops/admin-cert.ts';
import { RelayEvents } from '../../src/ops/events.ts';
import { mintAdminToken } from '../../src/ops/admin-token.ts';
import { issueCertificate, type Role } from '../../src/pki/ca.ts';
import { splitPem } from '../../src/pki/pem.ts';
import { loadCa } from '../../src/cli/shared.ts';
import { openStore } from '../../src/store/open.ts';
import { homePaths } from '../../src/common/home.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Cleanup, makeHome, type Home } from '../helpers/harness.ts';
import { TestView, request } from './helpers.ts';
import type { Store } from '../../src/store/store.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

/** An admin certificate: the pki has no "admin" role yet (proposed), so the role is cast here. */
async function issueAdmin(home: Home, store: Store, name: string, record = true): Promise<{ key: string; cert: string }> {
  const issued = await issueCertificate(loadCa(home.dir), { name, role: ADMIN_ROLE as Role, days: 1 });
  if (record) await store.addCertificate({ serial: issued.serial, name, role: ADMIN_ROLE, notBefore: issued.notBefore, notAfter: issued.notAfter, issuedAt: new Date() });
  return { key: issued.keyPem, cert: issued.certPem };
}

function pemParts(file: string): { key: string; cert: string } {
  const blocks = splitPem(readFileSync(file, 'utf8'));
  return { key: blocks.find((b) => b.label.endsWith('PRIVATE KEY'))?.text ?? '', cert: blocks.find((b) => b.label === 'CERTIFICATE')?.text ?? '' };
}

test('over TLS, an admin certificate is a credential; other certificates are not', async () => {
  const home = await makeHome(cleanup);
  const paths = homePaths(home.dir);
  const store = await openStore(paths.store);
  cleanup.add(() => store.close());
  const relay = pemParts(paths.relayIdentity);
  const admin = new AdminHttp({
    view: new TestView(store),
    events: new RelayEvents(),
    log: silentLogger(),
    listen: { host: '127.0.0.1', port: 0 },
    trusted: [], // nobody gets in for free: only certificates and tokens
    tls: { ...relay, ca: home.caPem, clientCertificate: adminCertificateCheck(store) },
    metrics: { processMetrics: false },
  });
  await admin.start();
  cleanup.add(() => admin.stop());
  const port = admin.address().port;
  const get = (client: { key: string; cert: string } | undefined, headers: Record<string, string> = {}): Promise<number> =>
    request(port, { path: '/api/status', host: 'localhost', headers, tls: { ca: home.caPem, ...(client ?? {}) } }).then((r) => r.status);

  const ops = await issueAdmin(home, store, 'ops');
  assert.equal(await get(ops), 200, 'admin certificate');
  const page = await request(port, { path: '/', host: 'localhost', tls: { ca: home.caPem, ...ops } });
  assert.match(page.body, /admin certificate &#39;ops&#39;/);

  assert.equal(await get(undefined), 401, 'no certificate, no token');
  assert.equal(await get(pemParts(await home.issue('user', 'alice'))), 401, 'a user certificate is not an admin one');
  assert.equal(await get(await issueAdmin(home, store, 'stranger', false)), 401, 'an admin certificate the store does not know');

  const foreignHome = await makeHome(cleanup);
  const foreignStore = await openStore(homePaths(foreignHome.dir).store);
  cleanup.add(() => foreignStore.close());
  const foreign = await issueAdmin(foreignHome, foreignStore, 'ops');
  assert.equal(await get(foreign), 401, 'an admin certificate from another CA');

  const token = await mintAdminToken(store, 'fallback');
  assert.equal(await get(pemParts(await home.issue('user', 'bob')), { authorization: `Bearer ${token.token}` }), 200, 'a token works alongside any certificate');

  const temp = await issueAdmin(home, store, 'temp');
  assert.equal(await get(temp), 200);
  await store.revokeName('temp');
  assert.equal(await get(temp), 401, 'a revoked admin certificate (a new connection is checked again)');

  // the session cookie over TLS is __Host- prefixed and Secure
  const login = await request(port, {
    method: 'POST',
    path: '/login',
    host: 'localhost',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `token=${token.token}`,
    tls: { ca: home.caPem },
  });
  assert.equal(login.status, 303);
  assert.match(String(login.headers['set-cookie']), /^__Host-ws_admin=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/);
});
