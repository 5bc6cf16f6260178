// The peer-credentials addon (native/peercred) through src/identity/peercred.ts: the kernel's
// uid/gid/pid of a UNIX-socket peer started as nobody, refusal for non-UNIX sockets, and the
// clear error when the addon is missing or broken.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, tempDir } from '../helpers/harness.ts';
import {
  DEFAULT_ADDON_PATH,
  PeerCredentialsError,
  PeerCredentialsUnavailable,
  loadPeercredAddon,
  peerOf,
  peercredAddon,
  userName,
} from '../../src/identity/peercred.ts';
import { NOBODY, NOGROUP_GID, accepting, needsRoot, nobodyClient } from './helpers.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

before(() => {
  assert.ok(existsSync(DEFAULT_ADDON_PATH), `the peercred addon is not built (${DEFAULT_ADDON_PATH}); run 'npm run build:native' first`);
});

function socketDir(): string {
  const dir = tempDir(cleanup, 'ws-peercred-');
  chmodSync(dir, 0o711); // nobody may reach the socket inside, not list the directory
  return dir;
}

test('a UNIX-socket peer running as nobody: uid, gid, pid and user name from the kernel', { skip: needsRoot }, async () => {
  const path = join(socketDir(), 'db.sock');
  const listener = await accepting(cleanup, { path });
  chmodSync(path, 0o666);
  const client = await nobodyClient(cleanup, { path });
  const socket = await listener.next();
  const peer = peerOf(socket);
  assert.deepEqual(peer, { pid: client.proc.child.pid, uid: NOBODY.uid, gid: NOGROUP_GID, user: 'nobody' });
});

test('a peer in this process is this process', async () => {
  const path = join(socketDir(), 'self.sock');
  const listener = await accepting(cleanup, { path });
  const client = net.connect(path);
  cleanup.add(() => client.destroy());
  const socket = await listener.next();
  const peer = peerOf(socket);
  assert.equal(peer.pid, process.pid);
  assert.equal(peer.uid, process.getuid?.());
  assert.equal(peer.gid, process.getgid?.());
  assert.equal(peer.user, userName(peer.uid));
  // the client side sees the listener, which is also this process
  assert.equal(peerOf(client).pid, process.pid);
});

test('a TCP socket has no peer credentials (Linux would otherwise claim uid 65534)', async () => {
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = net.connect({ host: '127.0.0.1', port: listener.port });
  cleanup.add(() => client.destroy());
  const socket = await listener.next();
  assert.throws(
    () => peerOf(socket),
    (err: unknown) => err instanceof PeerCredentialsError && err.code === 'WS_PEERCRED_NOT_UNIX' && /not a UNIX-domain stream socket/.test(err.message),
  );
});

test('a closed socket has no descriptor: a typed error, not a crash', async () => {
  const path = join(socketDir(), 'closed.sock');
  const listener = await accepting(cleanup, { path });
  const client = net.connect(path);
  const socket = await listener.next();
  client.destroy();
  socket.destroy();
  assert.throws(() => peerOf(socket), (err: unknown) => err instanceof PeerCredentialsError && err.code === 'WS_PEERCRED_NO_FD' && /already closed/.test(err.message));
});

test('the addon checks its argument', () => {
  const addon = peercredAddon();
  for (const bad of [-1, 1.5, Number.NaN, 'x', undefined]) {
    assert.throws(() => addon.peerCredentials(bad as unknown as number), (err: unknown) => (err as { code?: string }).code === 'WS_PEERCRED_BAD_FD');
  }
  assert.throws(() => addon.peerCredentials(0x7ffffff0), (err: unknown) => (err as { code?: string; errno?: number }).code === 'WS_PEERCRED_FAILED' && (err as { errno?: number }).errno === 9);
});

test('a missing addon is a clear WS_PEERCRED_UNAVAILABLE that says how to build it', () => {
  const path = join(tempDir(cleanup), 'nowhere', 'peercred.node');
  assert.throws(
    () => loadPeercredAddon(path),
    (err: unknown) =>
      err instanceof PeerCredentialsUnavailable &&
      err.code === 'WS_PEERCRED_UNAVAILABLE' &&
      err.path === path &&
      err.message.includes(path) &&
      err.message.includes('it has not been built') &&
      err.message.includes("'npm run build:native'"),
  );
});

test('a broken addon file is WS_PEERCRED_UNAVAILABLE with the loader reason', () => {
  const path = join(tempDir(cleanup), 'peercred.node');
  writeFileSync(path, 'this is not a shared object');
  assert.throws(
    () => loadPeercredAddon(path),
    (err: unknown) => err instanceof PeerCredentialsUnavailable && /loading failed: .*(invalid ELF header|file too short)/.test(err.message) && err.message.includes('npm run build:native'),
  );
  // a JavaScript file that loads but is not the addon
  const js = join(tempDir(cleanup), 'fake.js');
  writeFileSync(js, 'module.exports = { hello: 1 };');
  assert.throws(() => loadPeercredAddon(js), (err: unknown) => err instanceof PeerCredentialsUnavailable && /does not export peerCredentials/.test(err.message));
});

test('userName: getent passwd by uid, undefined for an unknown uid', { skip: needsRoot }, () => {
  assert.equal(userName(0), 'root');
  assert.equal(userName(NOBODY.uid), 'nobody');
  assert.equal(userName(3_999_999_999), undefined);
  assert.equal(userName(-1), undefined);
  assert.equal(userName(0), 'root'); // cached
});
