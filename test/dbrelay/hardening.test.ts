// Security review fixes of the database relay that are not about reading the DB user:
//  - per-user sockets only under directories only root can change (config error otherwise,
//    naming file, line and field), /run/warpstone created when missing, and a stale-socket
//    cleanup that never removes a socket belonging to someone else;
//  - IDENT believed only from `ident_from` (default loopback): a client elsewhere whose identd
//    claims `root` gets no identity, and its identd is not even asked.
// Real sockets, a real identd stand-in that lies, the test-only line session (line-session.ts).
// Owns: test/dbrelay/hardening.test.ts. Must not: touch anything outside its temp dirs and the
// sockets it creates (it removes /run/warpstone only if it created it).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, tempDir } from '../helpers/harness.ts';
import { silentLogger } from '../../src/common/log.ts';
import { ConfigError } from '../../src/common/errors.ts';
import { PER_USER_SOCKET_DIR, parseDbRelayConfig, perUserSocketDirectoryProblem } from '../../src/dbrelay/config.ts';
import { describeDbRelayConfig } from '../../src/cli/dbrelay.ts';
import { DbRelay } from '../../src/dbrelay/server.ts';
import { createUnixUser, isRoot } from './accounts.ts';
import { lineSession, sameNamePolicy, type SeenSession } from './line-session.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const needsRoot = isRoot ? false : 'needs root (creates UNIX users and root-owned sockets)';

function configError(text: string, file: string): ConfigError {
  try {
    parseDbRelayConfig(text, file);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  return assert.fail('expected a ConfigError');
}

async function startRelay(text: string, dir: string, seen: SeenSession[]): Promise<DbRelay> {
  const file = join(dir, 'dbrelay.yaml');
  writeFileSync(file, text);
  const relay = new DbRelay({ config: parseDbRelayConfig(text, file), handlers: { mysql: lineSession(seen), postgres: lineSession(seen) }, createPolicy: () => sameNamePolicy, log: silentLogger() });
  await relay.start();
  cleanup.add(() => relay.stop());
  return relay;
}

// ---------------------------------------------------------------------------------------------
// Per-user socket directories

test('per-user sockets under a directory a user owns are a config error naming file, line and field', { skip: needsRoot }, () => {
  const alice = createUnixUser(cleanup, 'hd');
  const dir = tempDir(cleanup, 'ws-dbrelay-dirs-');
  chmodSync(dir, 0o755);
  const home = join(dir, 'home', alice.name);
  mkdirSync(home, { recursive: true, mode: 0o755 });
  chownSync(home, alice.uid, alice.gid);
  const file = join(dir, 'dbrelay.yaml');
  const text = `listeners:
  - name: homes
    kind: per-user
    pattern: ${dir}/home/{user}/db.sock
    users: [${alice.name}]
    upstream: mysql://127.0.0.1:3306
`;
  const err = configError(text, file);
  assert.equal(err.file, file);
  assert.equal(err.line, 4);
  assert.equal(err.field, 'listeners.0.pattern');
  assert.match(err.message, new RegExp(`${home} is owned by uid ${alice.uid}, not root`));
  assert.match(err.message, /swap in a symlink/);
  assert.match(err.message, /pattern: \/run\/warpstone\/\{user\}\.sock \(the relay creates \/run\/warpstone, 0755 root, if missing\)/);

  // sockets: [...] points at the entry's path field
  const listed = configError(`listeners:\n  - name: homes\n    kind: per-user\n    sockets:\n      - { user: ${alice.name}, path: ${home}/db.sock }\n    upstream: mysql://127.0.0.1:3306\n`, file);
  assert.equal(listed.line, 5);
  assert.equal(listed.field, 'listeners.0.sockets.0.path');

  // a directory higher up counts as much as the parent
  const deeper = join(home, 'sockets');
  mkdirSync(deeper, { mode: 0o755 });
  assert.match(perUserSocketDirectoryProblem(join(deeper, 'db.sock')) ?? '', new RegExp(`${home} is owned by uid ${alice.uid}`));
});

test('per-user socket directories: group/other-writable without sticky refused, sticky and root-only accepted, symlinks followed', { skip: needsRoot }, () => {
  const alice = createUnixUser(cleanup, 'hs');
  const dir = tempDir(cleanup, 'ws-dbrelay-dirs-');
  chmodSync(dir, 0o755);
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  assert.match(perUserSocketDirectoryProblem(join(open, 'a.sock')) ?? '', /open is writable by its group \(mode 0777\) without the sticky bit/);
  const groupOnly = join(dir, 'group');
  mkdirSync(groupOnly);
  chmodSync(groupOnly, 0o770);
  assert.match(perUserSocketDirectoryProblem(join(groupOnly, 'a.sock')) ?? '', /writable by its group \(mode 0770\)/);
  const sticky = join(dir, 'sticky');
  mkdirSync(sticky);
  chmodSync(sticky, 0o1777);
  assert.equal(perUserSocketDirectoryProblem(join(sticky, 'a.sock')), undefined, 'sticky, like /tmp');
  const safe = join(dir, 'safe');
  mkdirSync(safe, { mode: 0o755 });
  assert.equal(perUserSocketDirectoryProblem(join(safe, 'a.sock')), undefined);
  assert.equal(perUserSocketDirectoryProblem(join(safe, 'missing', 'a.sock')), undefined, 'a missing directory under a safe one can only be made by root');
  // a root-owned symlink that leads into a user's directory: the real path is checked too
  const users = join(dir, 'users');
  mkdirSync(users, { mode: 0o755 });
  chownSync(users, alice.uid, alice.gid);
  const link = join(safe, 'link');
  symlinkSync(users, link);
  assert.match(perUserSocketDirectoryProblem(join(link, 'a.sock')) ?? '', new RegExp(`${users} is owned by uid ${alice.uid}, not root \\(on the real path of ${link}\\)`));
});

test('per-user sockets in /run/warpstone: the directory is made (0755 root) when missing; a socket of someone else in the way is never removed', { skip: needsRoot }, async () => {
  const alice = createUnixUser(cleanup, 'hr');
  const bob = createUnixUser(cleanup, 'hb');
  const upstream = await echoServer(cleanup);
  const createdRunDir = !existsSync(PER_USER_SOCKET_DIR);
  if (createdRunDir) cleanup.add(() => existsSync(PER_USER_SOCKET_DIR) && rmdirSync(PER_USER_SOCKET_DIR));
  const dir = tempDir(cleanup, 'ws-dbrelay-run-');
  const socket = join(PER_USER_SOCKET_DIR, `${alice.name}.sock`);
  const text = `listeners:\n  - { name: homes, kind: per-user, pattern: "${PER_USER_SOCKET_DIR}/{user}.sock", users: [${alice.name}], upstream: "mysql://127.0.0.1:${upstream}" }\n`;
  const seen: SeenSession[] = [];
  const relay = await startRelay(text, dir, seen);
  const st = lstatSync(PER_USER_SOCKET_DIR);
  assert.equal(st.uid, 0);
  assert.equal(st.mode & 0o7777, 0o755);
  assert.ok(lstatSync(socket).isSocket());
  assert.equal(lstatSync(socket).uid, alice.uid);
  await relay.stop();
  assert.ok(!existsSync(socket), 'removed at stop');

  // a socket of bob's at alice's path (live here; the owner check comes first): not root's, not
  // alice's → left alone, and the listener does not start
  const planted = net.createServer();
  await new Promise<void>((r) => planted.listen(socket, () => r()));
  cleanup.add(() => new Promise<void>((r) => planted.close(() => r())));
  chownSync(socket, bob.uid, bob.gid);
  const again = new DbRelay({ config: parseDbRelayConfig(text, join(dir, 'dbrelay.yaml')), handlers: { mysql: lineSession(seen), postgres: lineSession(seen) }, createPolicy: () => sameNamePolicy, log: silentLogger() });
  await assert.rejects(again.start(), new RegExp(`${socket} is a socket owned by uid ${bob.uid}, neither root nor the socket's intended owner; refusing to remove it`));
  await again.stop().catch(() => undefined);
  assert.ok(lstatSync(socket).isSocket(), 'bob\'s socket is still there');
  assert.equal(lstatSync(socket).uid, bob.uid);
});

// ---------------------------------------------------------------------------------------------
// IDENT only from ident_from

/** An identd that claims every connection belongs to root, counting the questions it gets. */
async function lyingIdentd(): Promise<{ port: number; asked: () => number }> {
  let asked = 0;
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (d: Buffer) => {
      asked++;
      s.end(`${d.toString().trim()} : USERID : UNIX : root\r\n`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as net.AddressInfo).port, asked: () => asked };
}

/** Connects (from `localAddress` if given), sends `USER root` and returns the relay's first line. */
function loginAsRoot(host: string, port: number, localAddress?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, ...(localAddress ? { localAddress } : {}) });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer; got ${JSON.stringify(got)}`));
    }, 10_000);
    s.on('connect', () => s.write('USER root\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      const eol = got.indexOf('\n');
      if (eol >= 0) {
        clearTimeout(timer);
        s.destroy();
        resolve(got.slice(0, eol));
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** A non-loopback IPv4 address of this host, if it has one. */
function externalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

test('ident_from: a client outside the list gets no identity and its identd is not asked; loopback is the default', async () => {
  const identd = await lyingIdentd();
  const upstream = await echoServer(cleanup);
  const dir = tempDir(cleanup, 'ws-dbrelay-ident-');
  const external = externalIPv4();
  const seen: SeenSession[] = [];
  const relay = await startRelay(
    `listeners:
  - { name: narrow, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identd.port} }, ident_from: [192.0.2.128/25, "fd00:1::/64"], upstream: "mysql://127.0.0.1:${upstream}" }
  - { name: loopback, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identd.port} }, upstream: "mysql://127.0.0.1:${upstream}" }
${external ? `  - { name: wide, kind: tcp, listen: "${external}:0", ident: { port: ${identd.port} }, upstream: "mysql://127.0.0.1:${upstream}" }\n` : ''}`,
    dir,
    seen,
  );
  const portOf = (name: string): number => relay.listeners.find((l) => l.name === name)?.bound[0]?.port as number;

  const narrow = await loginAsRoot('127.0.0.1', portOf('narrow'));
  assert.equal(narrow, 'DENY - no-identity: no identity: ident: source not in ident_from');
  assert.equal(identd.asked(), 0, 'the identd of a source outside ident_from is not asked');
  assert.equal(seen[0]?.identity.detail, 'ident: source not in ident_from');

  // default: loopback is believed (existing loopback setups keep working)
  assert.equal(await loginAsRoot('127.0.0.1', portOf('loopback')), 'ALLOW root match');
  assert.equal(identd.asked(), 1);

  if (external) {
    // the default refuses a host that is not loopback: its identd claiming root is not believed
    assert.equal(await loginAsRoot(external, portOf('wide'), external), 'DENY - no-identity: no identity: ident: source not in ident_from');
    assert.equal(identd.asked(), 1);
  }
});

test('ident_from in the config: default, parsing errors at their line, not with identity: certificate; dbrelay check prints it', () => {
  const dir = tempDir(cleanup, 'ws-dbrelay-identcfg-');
  const file = join(dir, 'dbrelay.yaml');
  const config = parseDbRelayConfig(
    `listeners:
  - { name: a, kind: tcp, listen: "127.0.0.1:3307", upstream: "mysql://127.0.0.1:3306" }
  - name: b
    kind: tcp
    listen: 0.0.0.0:3308
    ident_from: [10.1.2.0/24, 192.0.2.7, "2001:db8::/48"]
    upstream: mysql://127.0.0.1:3306
`,
    file,
  );
  const [a, b] = config.listeners;
  assert.ok(a?.kind === 'tcp' && a.identity === 'ident' && b?.kind === 'tcp' && b.identity === 'ident');
  assert.deepEqual(a.identFrom.toStrings(), ['127.0.0.0/8', '::1/128']);
  assert.deepEqual(b.identFrom.toStrings(), ['10.1.2.0/24', '192.0.2.7/32', '2001:db8::/48']);
  const described = describeDbRelayConfig(config).split('\n');
  assert.ok(described.includes('  IDENT believed only from (ident_from): 127.0.0.0/8, ::1/128; clients from elsewhere have no identity and are refused'), described.join('\n'));
  assert.ok(described.includes('  IDENT believed only from (ident_from): 10.1.2.0/24, 192.0.2.7/32, 2001:db8::/48; clients from elsewhere have no identity and are refused'));

  const bad = configError(`listeners:\n  - name: b\n    kind: tcp\n    listen: 0.0.0.0:3308\n    ident_from:\n      - 10.1.2.0/24\n      - not-an-address\n    upstream: mysql://127.0.0.1:3306\n`, file);
  assert.equal(bad.line, 7);
  assert.equal(bad.field, 'listeners.0.ident_from.1');
  const cert = configError(`home: ${dir}\nlisteners:\n  - name: b\n    kind: tcp\n    identity: certificate\n    listen: 0.0.0.0:3308\n    ident_from: [10.0.0.0/8]\n    upstream: mysql://127.0.0.1:3306\n`, file);
  assert.equal(cert.field, 'listeners.0.ident_from');
  assert.match(cert.message, /only used with identity: ident/);
});
