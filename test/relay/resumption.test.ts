// Resumed TLS sessions skip OpenSSL's chain checks, so the relay must check every connection,
// resumed or not, against the store. A session ticket obtained before a revocation must not
// open anything after it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { Cleanup, startCluster, type Cluster } from '../helpers/harness.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { runRevoke } from '../../src/cli/revoke.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Attempt {
  reused: boolean;
  reply: string;
  session: Buffer | undefined;
}

/** Text-mode CONNECT; returns what the relay answered and the TLS session for resumption. */
function attempt(cluster: Cluster, identityPath: string, session?: Buffer): Promise<Attempt> {
  const id = readIdentityFile(identityPath);
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    const socket = tls.connect({
      host: '127.0.0.1',
      port: cluster.relayPort,
      key: id.keyPem,
      cert: id.certPem,
      ca: id.caPem,
      ...(session ? { session } : {}),
    });
    socket.on('session', (s: Buffer) => (ticket = s));
    let reply = '';
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1');
      if (reply.includes('ping')) socket.end();
    });
    let reused = false;
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused();
      socket.write('CONNECT echo HTTP/1.1\r\n\r\nping');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve({ reused, reply, session: ticket }));
  });
}

test('a resumed session works while valid and is refused once revoked', async () => {
  const cluster = await startCluster(cleanup);
  const first = await attempt(cluster, cluster.userIdentity);
  assert.match(first.reply, /^HTTP\/1\.1 200 OK\r\n\r\nping/);
  assert.ok(first.session, 'the relay issued a session ticket');

  const resumed = await attempt(cluster, cluster.userIdentity, first.session);
  assert.equal(resumed.reused, true, 'the second connection resumed the TLS session');
  assert.match(resumed.reply, /^HTTP\/1\.1 200 OK/, 'a valid resumed session is served');

  await runRevoke(cluster.home.dir, 'alice');
  await new Promise((r) => setTimeout(r, 1500));
  const afterRevoke = await attempt(cluster, cluster.userIdentity, resumed.session ?? first.session);
  assert.equal(afterRevoke.reused, true, 'the client did resume');
  assert.match(afterRevoke.reply, /^HTTP\/1\.1 403 certificate of 'alice' .*revoked/);
  assert.doesNotMatch(afterRevoke.reply, /ping/);
  assert.match(cluster.relay.output(), /"code":"WS_REVOKED"/);
});
