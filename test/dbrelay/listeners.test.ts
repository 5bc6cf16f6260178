// The database relay's listeners with real sockets and real identity sources, and a test-only
// line session (line-session.ts) in place of the MySQL/PostgreSQL sessions: IDENT answered by
// the project's identd for a client running as a throw-away UNIX user, SO_PEERCRED on a UNIX
// socket, per-user sockets (0600, owned by their user), client certificates from the project's
// CA on a TLS listener, and a tunnel through a real relay; plus the limits and the socket files.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, freePort, makeHome, startWarpstone, tempDir, type Home } from '../helpers/harness.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Identd } from '../../src/identity/identd.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { issueCertificate } from '../../src/pki/ca.ts';
import { loadCa } from '../../src/cli/shared.ts';
import { runRevoke } from '../../src/cli/revoke.ts';
import { parseDbRelayConfig } from '../../src/dbrelay/config.ts';
import { DbRelay } from '../../src/dbrelay/server.ts';
import type { DbSessionHandler } from '../../src/dbrelay/types.ts';
import { createUnixUser, isRoot, runAs, type UnixUser } from './accounts.ts';
import { NOGROUP_GID } from '../identity/helpers.ts';
import { lineSession, sameNamePolicy, type SeenSession } from './line-session.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const needsRoot = isRoot ? false : 'needs root (creates UNIX users and runs clients as them)';

// The client as another UNIX user: sends `USER <name>`, and when allowed, a line that the echo
// upstream must send back; prints everything it receives.
const CLIENT = `
const net = require('node:net');
const [kind, a, b, user] = process.argv.slice(1);
const s = kind === 'unix' ? net.connect(a) : net.connect({ host: a, port: Number(b) });
let out = '';
let sent = false;
s.on('connect', () => s.write('USER ' + user + '\\n'));
s.on('data', (d) => {
  out += d;
  process.stdout.write(d);
  if (!sent && /^ALLOW .*\\n/.test(out)) { sent = true; s.write('echo-me\\n'); }
  if (out.includes('echo-me\\n')) s.end();
});
s.on('error', (e) => { console.error('client error: ' + e.code); process.exit(3); });
s.on('close', () => process.exit(0));
`;

function clientAs(user: UnixUser | 'root', target: { path: string } | { port: number }, dbUser: string): ReturnType<typeof runAs> {
  const args = 'path' in target ? ['unix', target.path, '-', dbUser] : ['tcp', '127.0.0.1', String(target.port), dbUser];
  return runAs(user, process.execPath, ['-e', CLIENT, ...args]);
}

interface Started {
  relay: DbRelay;
  seen: SeenSession[];
  audit: string;
  dir: string;
}

/** A directory other users can traverse (sockets inside it are reachable by mode alone). */
function openDir(): string {
  const dir = tempDir(cleanup, 'ws-dbrelay-');
  chmodSync(dir, 0o755);
  return dir;
}

async function startRelay(yaml: (dir: string, audit: string) => string, handler?: DbSessionHandler): Promise<Started> {
  const dir = openDir();
  const audit = join(dir, 'audit.jsonl');
  const file = join(dir, 'dbrelay.yaml');
  const text = yaml(dir, audit);
  writeFileSync(file, text);
  const config = parseDbRelayConfig(text, file);
  const seen: SeenSession[] = [];
  const session = handler ?? lineSession(seen);
  const relay = new DbRelay({ config, handlers: { mysql: session, postgres: session }, createPolicy: () => sameNamePolicy, log: silentLogger() });
  await relay.start();
  cleanup.add(() => relay.stop());
  return { relay, seen, audit, dir };
}

function auditLines(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function startIdentd(): Promise<number> {
  const identd = new Identd({ listen: [{ host: '127.0.0.1', port: 0 }], log: silentLogger() });
  await identd.start();
  cleanup.add(() => identd.stop());
  return identd.addresses[0]?.port as number;
}

let echoPort = 0;
async function echo(): Promise<number> {
  if (echoPort === 0) echoPort = await echoServer(cleanup);
  return echoPort;
}

test('tcp: the identity comes from IDENT, answered by the identd for a client running as a fresh UNIX user', { skip: needsRoot }, async () => {
  const alice = createUnixUser(cleanup, 'li');
  const identPort = await startIdentd();
  const upstream = await echo();
  const { relay, seen, audit } = await startRelay(
    (_dir, auditFile) => `
audit: ${auditFile}
listeners:
  - name: dev
    kind: tcp
    listen: 127.0.0.1:0
    ident: { port: ${identPort}, timeout: 2s }
    upstream: mysql://127.0.0.1:${upstream}
`,
  );
  const port = relay.listeners[0]?.bound[0]?.port as number;
  const ok = await clientAs(alice, { port }, alice.name);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, `ALLOW ${alice.name} match\necho-me\n`);
  const denied = await clientAs(alice, { port }, 'root');
  assert.equal(denied.stdout, `DENY ${alice.name} mismatch: ${alice.name} may not log in as root\n`);

  assert.equal(seen[0]?.identity.source, 'ident');
  assert.match(seen[0]?.identity.detail ?? '', /^ident: USERID from 127\.0\.0\.1:\d+ \(UNIX\)$/);
  assert.match(seen[0]?.source ?? '', /^127\.0\.0\.1:\d+$/);
  assert.equal(seen[0]?.tlsMode, 'refuse');
  const lines = auditLines(audit);
  assert.equal(lines.length, 2);
  assert.deepEqual(
    lines.map((l) => [l.listener, l.identity, l.identitySource, l.dbUser, l.decision, l.reason]),
    [
      ['dev', alice.name, 'ident', alice.name, 'allow', 'match'],
      ['dev', alice.name, 'ident', 'root', 'deny', 'mismatch'],
    ],
  );
});

test('tcp: no identd, or an identd that will not say, means no identity, and the reason travels with it', { skip: needsRoot }, async () => {
  const upstream = await echo();
  const nothing = await freePort();
  // an identd on another host that hides its users (RFC 1413 HIDDEN-USER)
  const hiding = net.createServer((s) => s.once('data', (d: Buffer) => s.end(`${d.toString().trim()} : ERROR : HIDDEN-USER\r\n`)));
  await new Promise<void>((r) => hiding.listen(0, '127.0.0.1', () => r()));
  cleanup.add(() => hiding.close());
  const hidingPort = (hiding.address() as net.AddressInfo).port;
  const { relay, seen } = await startRelay(
    () => `
listeners:
  - { name: absent, kind: tcp, listen: 127.0.0.1:0, ident: { port: ${nothing}, timeout: 1s }, upstream: mysql://127.0.0.1:${upstream} }
  - { name: hidden, kind: tcp, listen: 127.0.0.1:0, ident: { port: ${hidingPort} }, upstream: mysql://127.0.0.1:${upstream} }
`,
  );
  const absent = await clientAs('root', { port: relay.listeners[0]?.bound[0]?.port as number }, 'root');
  assert.match(absent.stdout, /^DENY - no-identity: no identity: ident: no answer \(identd at 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
  const hidden = await clientAs('root', { port: relay.listeners[1]?.bound[0]?.port as number }, 'root');
  assert.equal(hidden.stdout, 'DENY - no-identity: no identity: ident: HIDDEN-USER\n');
  assert.deepEqual(
    seen.map((s) => [s.listener, s.identity.name, s.identity.source]),
    [
      ['absent', undefined, 'ident'],
      ['hidden', undefined, 'ident'],
    ],
  );
});

test('unix: the identity is the peer uid from the kernel (SO_PEERCRED); the socket is born with its mode', { skip: needsRoot }, async () => {
  const bob = createUnixUser(cleanup, 'lu');
  const upstream = await echo();
  const { seen, dir } = await startRelay(
    (d) => `
listeners:
  - name: local
    kind: unix
    path: ${join(d, 'db.sock')}
    mode: "0666"
    group: nogroup
    upstream: mysql://127.0.0.1:${upstream}
`,
  );
  const path = join(dir, 'db.sock');
  assert.equal(lstatSync(path).mode & 0o777, 0o666);
  assert.equal(lstatSync(path).gid, NOGROUP_GID, 'group: gives the socket to that group');
  const ok = await clientAs(bob, { path }, bob.name);
  assert.equal(ok.stdout, `ALLOW ${bob.name} match\necho-me\n`, ok.stderr);
  const root = await clientAs('root', { path }, bob.name);
  assert.equal(root.stdout, `DENY root mismatch: root may not log in as ${bob.name}\n`);
  assert.equal(seen[0]?.identity.source, 'unix-peer');
  assert.match(seen[0]?.identity.detail ?? '', new RegExp(`^uid ${bob.uid}, pid \\d+$`));
  assert.equal(seen[0]?.source, `unix:${path}`);
});

test('per-user: each socket is 0600 and owned by its user, who is the identity; others cannot connect', { skip: needsRoot }, async () => {
  const carol = createUnixUser(cleanup, 'pc');
  const dave = createUnixUser(cleanup, 'pd');
  const upstream = await echo();
  const { relay, seen, dir } = await startRelay(
    (d) => `
listeners:
  - name: homes
    kind: per-user
    pattern: ${d}/{user}.sock
    users: [${carol.name}, ${dave.name}]
    upstream: mysql://127.0.0.1:${upstream}
`,
  );
  for (const u of [carol, dave]) {
    const st = lstatSync(join(dir, `${u.name}.sock`));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, u.uid);
  }
  const own = await clientAs(carol, { path: join(dir, `${carol.name}.sock`) }, carol.name);
  assert.equal(own.stdout, `ALLOW ${carol.name} match\necho-me\n`, own.stderr);
  const other = await clientAs(dave, { path: join(dir, `${carol.name}.sock`) }, carol.name);
  assert.equal(other.code, 3);
  assert.match(other.stderr, /client error: EACCES/);
  const mine = await clientAs(dave, { path: join(dir, `${dave.name}.sock`) }, carol.name);
  assert.equal(mine.stdout, `DENY ${dave.name} mismatch: ${dave.name} may not log in as ${carol.name}\n`);
  assert.deepEqual(
    seen.map((s) => [s.identity.name, s.identity.source, s.identity.detail]),
    [
      [carol.name, 'unix-socket-owner', `owner of ${dir}/${carol.name}.sock`],
      [dave.name, 'unix-socket-owner', `owner of ${dir}/${dave.name}.sock`],
    ],
  );
  await relay.stop();
  assert.ok(!existsSync(join(dir, `${carol.name}.sock`)), 'socket files are removed on stop');
});

/** A TLS client with an identity file (or none), that sends `USER name` and reads the answer. */
function tlsClient(port: number, home: Home, identityFile: string | undefined, dbUser: string): Promise<string> {
  const identity = identityFile ? readIdentityFile(identityFile) : undefined;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: home.caPem,
      ...(identity ? { key: identity.keyPem, cert: identity.certPem } : {}),
    });
    let out = '';
    socket.on('secureConnect', () => socket.write(`USER ${dbUser}\n`));
    socket.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('ALLOW') && !out.includes('echo-me')) socket.write('echo-me\n');
      if (out.includes('echo-me\n')) socket.end();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(out));
  });
}

test('tls: the identity is the CN of a client certificate from the home CA; agents, strangers and the certificate-less get none', async () => {
  const home = await makeHome(cleanup);
  const alice = await home.issue('user', 'alice');
  const agent = await home.issue('agent', 'box');
  const upstream = await echo();
  const { relay, seen } = await startRelay(
    () => `
home: ${home.dir}
listeners:
  - { name: certs, kind: tls, listen: 127.0.0.1:0, upstream: postgres://127.0.0.1:${upstream} }
`,
  );
  const port = relay.listeners[0]?.bound[0]?.port as number;
  assert.equal(await tlsClient(port, home, alice, 'alice'), 'ALLOW alice match\necho-me\n');
  assert.equal(await tlsClient(port, home, alice, 'bob'), 'DENY alice mismatch: alice may not log in as bob\n');
  assert.match(await tlsClient(port, home, agent, 'box'), /^DENY - no-identity: no identity: tls: certificate of 'box' \(serial [0-9A-F]+\) has role 'agent', not 'user'\n$/);
  assert.equal(await tlsClient(port, home, undefined, 'alice'), 'DENY - no-identity: no identity: tls: no client certificate was presented\n');
  const other = await makeHome(cleanup);
  const stranger = await other.issue('user', 'alice');
  const foreign = await tlsClient(port, home, stranger, 'alice');
  assert.match(foreign, /^DENY - no-identity: no identity: tls: certificate of 'alice' \(serial [0-9A-F]+\) not verified: /);
  assert.equal(seen[0]?.identity.source, 'certificate');

  // The home's store is consulted: a certificate signed by the CA but never recorded, and a
  // revoked one, identify nobody.
  const ca = loadCa(home.dir);
  const unrecorded = await issueCertificate(ca, { name: 'mallory', role: 'user', days: 1 });
  const unrecordedFile = join(home.dir, 'mallory.pem');
  writeFileSync(unrecordedFile, unrecorded.keyPem + unrecorded.certPem + ca.certPem, { mode: 0o600 });
  assert.match(await tlsClient(port, home, unrecordedFile, 'mallory'), /^DENY - no-identity: no identity: tls: certificate of 'mallory' \(serial [0-9A-F]+\) is not recorded in the warpstone store\n$/);
  await runRevoke(home.dir, 'alice');
  assert.match(await tlsClient(port, home, alice, 'alice'), /^DENY - no-identity: no identity: tls: certificate of 'alice' \(serial [0-9A-F]+\) was revoked on \d{4}-/);
});

test('tunnel: a stream through a real relay carries the warpstone user as the identity', async () => {
  const home = await makeHome(cleanup);
  const agentFile = await home.issue('agent', 'dbbox');
  const aliceFile = await home.issue('user', 'alice');
  await home.grant('alice', 'db');
  const relayPort = await freePort();
  const relayProc = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${relayPort}`], home.env);
  await relayProc.waitFor(/relay listening/);
  const upstream = await echo();
  const registered: string[] = [];
  const dir = openDir();
  const text = `
listeners:
  - { name: remote, kind: tunnel, identity: ${agentFile}, relay: 127.0.0.1:${relayPort}, tunnel: db, upstream: mysql://127.0.0.1:${upstream} }
`;
  const config = parseDbRelayConfig(text, join(dir, 'dbrelay.yaml'));
  const seen: SeenSession[] = [];
  const session = lineSession(seen);
  let announce: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (announce = resolve));
  const relay = new DbRelay({
    config,
    handlers: { mysql: session, postgres: session },
    createPolicy: () => sameNamePolicy,
    log: silentLogger(),
    onTunnelsRegistered: (tunnels) => {
      registered.push(...tunnels);
      announce();
    },
  });
  await relay.start();
  cleanup.add(() => relay.stop());
  await ready;
  assert.deepEqual(registered, ['db']);
  const connect = startWarpstone(cleanup, ['connect', 'db', '--identity', aliceFile, '--relay', `127.0.0.1:${relayPort}`, '--listen', '127.0.0.1:0'], home.env);
  const line = await connect.waitFor(/listening on [^\s]+:\d+/);
  const port = Number(line.split(':').pop());
  const ok = await clientAs('root', { port }, 'alice');
  assert.equal(ok.stdout, 'ALLOW alice match\necho-me\n', ok.stderr);
  const denied = await clientAs('root', { port }, 'root');
  assert.equal(denied.stdout, 'DENY alice mismatch: alice may not log in as root\n');
  assert.equal(seen[0]?.identity.source, 'tunnel');
  assert.equal(seen[0]?.identity.detail, 'warpstone user via tunnel db');
  assert.match(seen[0]?.source ?? '', /^127\.0\.0\.1:\d+$/);
});

test('max_connections: a client beyond the limit is closed at once; the others go on', async () => {
  const upstream = await echo();
  const { relay } = await startRelay(
    (d) => `
max_connections: 1
listeners:
  - { name: small, kind: unix, path: ${join(d, 'db.sock')}, mode: "0600", upstream: mysql://127.0.0.1:${upstream} }
`,
  );
  const path = join(relay.listeners[0]?.addresses[0]?.slice('unix:'.length) ?? '');
  const first = net.connect(path);
  await new Promise((r) => first.once('connect', r));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(relay.listeners[0]?.sessions(), 1);
  const second = net.connect(path);
  const closed = await new Promise<string>((resolve) => {
    let got = '';
    second.on('data', (d: Buffer) => (got += d.toString()));
    second.on('error', () => undefined);
    second.on('close', () => resolve(got));
  });
  assert.equal(closed, '', 'refused without a word');
  first.write('USER root\n');
  const answer = await new Promise<string>((resolve) => first.once('data', (d: Buffer) => resolve(d.toString())));
  assert.equal(answer, 'ALLOW root match\n');
  first.destroy();
});

test('an unreachable database: the session gets a message fit for the client, the address stays in the log', async () => {
  const closedPort = await freePort();
  const { relay } = await startRelay(
    (d) => `
timeouts: { connect: 2s }
listeners:
  - { name: nodb, kind: unix, path: ${join(d, 'db.sock')}, upstream: mysql://127.0.0.1:${closedPort} }
`,
  );
  const path = relay.listeners[0]?.addresses[0]?.slice('unix:'.length) as string;
  const out = await clientAs('root', { path }, 'root');
  assert.equal(out.stdout, 'ERROR the database is not reachable (ECONNREFUSED)\n');
});

test('socket files: a leftover socket is replaced, a live one or a regular file is refused', async () => {
  const dir = openDir();
  const upstream = await echo();
  const leftover = join(dir, 'left.sock');
  // python binds and exits without unlinking: a socket file nobody listens on
  const py = spawnSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(leftover)})`]);
  assert.equal(py.status, 0, String(py.stderr));
  assert.ok(lstatSync(leftover).isSocket());
  const config = (path: string): ReturnType<typeof parseDbRelayConfig> =>
    parseDbRelayConfig(`listeners:\n  - { name: s, kind: unix, path: ${path}, upstream: mysql://127.0.0.1:${upstream} }\n`, join(dir, 'c.yaml'));
  const session = lineSession();
  const make = (path: string): DbRelay => new DbRelay({ config: config(path), handlers: { mysql: session, postgres: session }, createPolicy: () => sameNamePolicy, log: silentLogger() });
  const first = make(leftover);
  await first.start();
  cleanup.add(() => first.stop());
  await assert.rejects(make(leftover).start(), /s': .*left\.sock is in use by another process/);
  const regular = join(dir, 'file');
  writeFileSync(regular, 'keep me');
  await assert.rejects(make(regular).start(), /exists and is not a socket; refusing to replace it/);
  assert.equal(readFileSync(regular, 'utf8'), 'keep me');
  await assert.rejects(make(join(dir, 'nope', 'x.sock')).start(), /nope\/x\.sock: the directory .*nope does not exist/);
});
