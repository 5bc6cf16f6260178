// The database relay end to end with real parts: throw-away UNIX users and matching MariaDB and
// PostgreSQL users, the real `mariadb` and `psql` clients run as those UNIX users, the mysql2 and
// pg drivers, `warpstone identd` answering IDENT, the kernel's peer credentials, per-user
// sockets, client certificates from the project's CA (through socat as the TLS wrapper), and a
// tunnel through a real warpstone relay. The relay runs in this process with the real sessions
// and policy (the command itself, with privilege dropping, is tested in cli.test.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { Cleanup, freePort, makeHome, startProgram, startWarpstone, tempDir, type Home } from '../helpers/harness.ts';
import { createLogger, silentLogger, type Logger } from '../../src/common/log.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { parseDbRelayConfig } from '../../src/dbrelay/config.ts';
import { DbRelay } from '../../src/dbrelay/server.ts';
import { createPolicy } from '../../src/dbrelay/policy.ts';
import { serveMysql } from '../../src/dbrelay/mysql-session.ts';
import { servePostgres } from '../../src/dbrelay/postgres-session.ts';
import type { DbSessionHandler } from '../../src/dbrelay/types.ts';
import { createMariadbUser, createPostgresUser, createUnixUser, isRoot, runAs, type Ran, type UnixUser } from './accounts.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const skip = isRoot ? false : 'needs root (creates UNIX and database users, runs clients as them)';

let alice: UnixUser;
let bob: UnixUser;
let home: Home;
let dir: string;
let identdPort: number;
const PASSWORD = { alice: `a-${randomBytes(4).toString('hex')}`, bob: `b-${randomBytes(4).toString('hex')}` };
const NOSUCH = `ws_nosuch_${randomBytes(3).toString('hex')}`;
const sessions = { mysql: serveMysql, postgres: servePostgres };

before(async () => {
  if (!isRoot) return;
  alice = createUnixUser(cleanup, 'ea');
  bob = createUnixUser(cleanup, 'eb');
  createMariadbUser(cleanup, alice.name, PASSWORD.alice);
  createMariadbUser(cleanup, bob.name, PASSWORD.bob);
  createPostgresUser(cleanup, alice.name, PASSWORD.alice);
  createPostgresUser(cleanup, bob.name, PASSWORD.bob);
  dir = tempDir(cleanup, 'ws-dbrelay-e2e-');
  chmodSync(dir, 0o755); // the test users reach their sockets inside
  home = await makeHome(cleanup);
  identdPort = await freePort();
  const identd = startWarpstone(cleanup, ['identd', '--listen', `127.0.0.1:${identdPort}`], home.env);
  await identd.waitFor(/identd listening/);
});

let sharedRelayPort: number | undefined;
/** The one warpstone relay of this file (a home serves one relay at a time). */
async function warpstoneRelay(): Promise<number> {
  if (sharedRelayPort !== undefined) return sharedRelayPort;
  const port = await freePort();
  const proc = startWarpstone(cleanup, ['relay', '--listen', `127.0.0.1:${port}`], home.env);
  await proc.waitFor(/relay listening/);
  sharedRelayPort = port;
  return port;
}

/** WS_DBRELAY_TEST_LOG=1 shows the relay's log on stderr when a test needs explaining. */
const testLog = (): Logger => (process.env.WS_DBRELAY_TEST_LOG ? createLogger({ level: 'debug', name: 'dbrelay-e2e' }) : silentLogger());

/** Starts a DbRelay in this process with the real policy and the given sessions. */
async function startDbRelay(yaml: string, handlers: Record<'mysql' | 'postgres', DbSessionHandler>, onTunnels?: (t: string[]) => void): Promise<DbRelay> {
  const file = join(dir, `dbrelay-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(file, yaml);
  const relay = new DbRelay({ config: parseDbRelayConfig(yaml, file), handlers, createPolicy, log: testLog(), ...(onTunnels ? { onTunnelsRegistered: onTunnels } : {}) });
  await relay.start();
  cleanup.add(() => relay.stop());
  return relay;
}

function portOf(relay: DbRelay, name: string): number {
  const port = relay.listeners.find((l) => l.name === name)?.bound[0]?.port;
  assert.ok(port, `listener ${name} has a port`);
  return port;
}

type Where = { port: number } | { socket: string };

/** The real `mariadb` client as `user`: SELECT the user the database sees. */
function mariadb(user: UnixUser | 'root', where: Where, dbUser: string, password: string): Promise<Ran> {
  const to = 'port' in where ? ['--protocol=TCP', '-h', '127.0.0.1', '-P', String(where.port)] : ['--protocol=SOCKET', '-S', where.socket];
  return runAs(user, 'mariadb', ['--no-defaults', ...to, '-u', dbUser, `-p${password}`, '-N', '-B', '-e', 'SELECT 1, CURRENT_USER()']);
}

function auditOf(path: string): Array<Record<string, unknown>> {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const deniedBy = (identity: string, how: string, dbUser: string): RegExp =>
  new RegExp(`^ERROR 1045 \\(28000\\)(?: at line \\d+)?: warpstone dbrelay: identity '${identity}' \\(${how}[^)]*\\)?.* may not log in as database user '${dbUser}'`);

test('MariaDB through IDENT (warpstone identd): own user works, another user with its password is denied, strict vs log-and-allow for unknown users', { skip }, async () => {
  const audit = join(dir, 'ident-audit.jsonl');
  const relay = await startDbRelay(
    `
audit: ${audit}
known_users_query: { url: "mysql://root@127.0.0.1:3306", every: 60s }
listeners:
  - { name: ident, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:3306" }
  - { name: ident-strict, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:3306", strict: true }
`,
    sessions,
  );
  const port = portOf(relay, 'ident');
  const strictPort = portOf(relay, 'ident-strict');

  const own = await mariadb(alice, { port }, alice.name, PASSWORD.alice);
  assert.equal(own.code, 0, own.stderr);
  assert.equal(own.stdout, `1\t${alice.name}@127.0.0.1\n`);

  const borrowed = await mariadb(alice, { port }, bob.name, PASSWORD.bob);
  assert.equal(borrowed.code, 1);
  assert.match(borrowed.stderr, deniedBy(alice.name, 'IDENT', bob.name));

  // A DB user the database does not have: let through (the database refuses it), unless strict.
  const unknown = await mariadb(alice, { port }, NOSUCH, 'x');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, new RegExp(`^ERROR (1045|1698) \\(28000\\): Access denied for user '${NOSUCH}'@'127\\.0\\.0\\.1'`), 'the database itself refused');
  const unknownStrict = await mariadb(alice, { port: strictPort }, NOSUCH, 'x');
  assert.equal(unknownStrict.code, 1);
  assert.match(unknownStrict.stderr, new RegExp(`ERROR 1045 \\(28000\\): warpstone dbrelay: database user '${NOSUCH}' does not exist in the database; .* refused because the listener is strict`));

  const lines = auditOf(audit);
  assert.deepEqual(
    lines.map((l) => [l.listener, l.identity, l.identitySource, l.dbUser, l.decision, l.reason]),
    [
      ['ident', alice.name, 'ident', alice.name, 'allow', 'match'],
      ['ident', alice.name, 'ident', bob.name, 'deny', 'mismatch'],
      ['ident', alice.name, 'ident', NOSUCH, 'allow', 'unknown-db-user'],
      ['ident-strict', alice.name, 'ident', NOSUCH, 'deny', 'unknown-db-user'],
    ],
  );
  for (const l of lines) {
    assert.match(String(l.source), /^127\.0\.0\.1:\d+$/);
    assert.equal(l.protocol, 'mysql');
    assert.ok(!Number.isNaN(Date.parse(String(l.time))));
    assert.match(String(l.identityDetail), /^ident: USERID from 127\.0\.0\.1:\d+ \(UNIX\)$/);
  }
});

test('MariaDB through a UNIX socket (peer credentials) and through per-user sockets', { skip }, async () => {
  const audit = join(dir, 'unix-audit.jsonl');
  const perUserDir = join(dir, 'homes');
  mkdirSync(perUserDir, { mode: 0o755 });
  const relay = await startDbRelay(
    `
audit: ${audit}
listeners:
  - { name: peer, kind: unix, path: ${join(dir, 'peer.sock')}, mode: "0666", upstream: "mysql://127.0.0.1:3306" }
  - name: homes
    kind: per-user
    pattern: ${perUserDir}/{user}.sock
    users: [${alice.name}, ${bob.name}]
    upstream: mysql://127.0.0.1:3306
`,
    sessions,
  );
  assert.equal(relay.listeners.length, 2);
  const peer = { socket: join(dir, 'peer.sock') };
  const ownPeer = await mariadb(bob, peer, bob.name, PASSWORD.bob);
  assert.equal(ownPeer.stdout, `1\t${bob.name}@127.0.0.1\n`, ownPeer.stderr);
  const borrowedPeer = await mariadb(bob, peer, alice.name, PASSWORD.alice);
  assert.match(borrowedPeer.stderr, deniedBy(bob.name, 'UNIX peer credentials', alice.name));

  const aliceSocket = { socket: join(perUserDir, `${alice.name}.sock`) };
  const ownSocket = await mariadb(alice, aliceSocket, alice.name, PASSWORD.alice);
  assert.equal(ownSocket.stdout, `1\t${alice.name}@127.0.0.1\n`, ownSocket.stderr);
  const notHers = await mariadb(bob, aliceSocket, bob.name, PASSWORD.bob);
  assert.notEqual(notHers.code, 0);
  assert.match(notHers.stderr, /Can't connect to local server through socket .*\(13\)/, 'the socket is 0600: bob cannot even connect');
  const borrowedSocket = await mariadb(alice, aliceSocket, bob.name, PASSWORD.bob);
  assert.match(borrowedSocket.stderr, deniedBy(alice.name, 'per-user socket', bob.name));

  assert.deepEqual(
    auditOf(audit).map((l) => [l.listener, l.source, l.identity, l.identitySource, l.dbUser, l.decision]),
    [
      ['peer', `unix:${peer.socket}`, bob.name, 'unix-peer', bob.name, 'allow'],
      ['peer', `unix:${peer.socket}`, bob.name, 'unix-peer', alice.name, 'deny'],
      ['homes', `unix:${aliceSocket.socket}`, alice.name, 'unix-socket-owner', alice.name, 'allow'],
      ['homes', `unix:${aliceSocket.socket}`, alice.name, 'unix-socket-owner', bob.name, 'deny'],
    ],
  );
});

/** socat as the client's TLS wrapper: plain TCP on a local port, TLS with `identityFile` to `tlsPort`. */
async function socatWrapper(identityFile: string, tlsPort: number): Promise<number> {
  const port = await freePort();
  // socat wants the key and certificate in one file, and the CA on its own
  const pem = join(dir, `socat-${randomBytes(3).toString('hex')}.pem`);
  const identity = readIdentityFile(identityFile);
  writeFileSync(pem, identity.keyPem + identity.certPem, { mode: 0o600 });
  const ca = join(dir, 'ca-for-socat.pem');
  writeFileSync(ca, home.caPem);
  startProgram(cleanup, 'socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `OPENSSL:127.0.0.1:${tlsPort},cert=${pem},cafile=${ca},verify=1`]);
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) return port;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('socat did not start listening');
}

test('MariaDB through a TLS listener: the CN of a client certificate from the project CA is the identity; mysql2 with a TLS stream too', { skip }, async () => {
  const aliceCert = await home.issue('user', alice.name);
  const relay = await startDbRelay(
    `
home: ${home.dir}
listeners:
  - { name: certs, kind: tls, listen: "127.0.0.1:0", upstream: "mysql://127.0.0.1:3306" }
`,
    sessions,
  );
  const tlsPort = portOf(relay, 'certs');
  const wrapped = await socatWrapper(aliceCert, tlsPort);
  // the UNIX user running the client does not matter here: the certificate does
  const own = await mariadb(bob, { port: wrapped }, alice.name, PASSWORD.alice);
  assert.equal(own.stdout, `1\t${alice.name}@127.0.0.1\n`, own.stderr);
  const borrowed = await mariadb(alice, { port: wrapped }, bob.name, PASSWORD.bob);
  assert.match(borrowed.stderr, deniedBy(alice.name, 'client certificate', bob.name));

  // mysql2 over a TLS stream it did not open itself
  const identity = readIdentityFile(aliceCert);
  const stream = (): tls.TLSSocket => tls.connect({ host: '127.0.0.1', port: tlsPort, key: identity.keyPem, cert: identity.certPem, ca: home.caPem });
  const connection = await mysql.createConnection({ stream, user: alice.name, password: PASSWORD.alice });
  const [rows] = await connection.query<mysql.RowDataPacket[]>('SELECT CURRENT_USER() AS who');
  assert.equal(rows[0]?.who, `${alice.name}@127.0.0.1`);
  await connection.end();
  await assert.rejects(mysql.createConnection({ stream, user: bob.name, password: PASSWORD.bob }), (err: Error & { code?: string; errno?: number }) => {
    assert.equal(err.errno, 1045);
    assert.match(err.message, new RegExp(`warpstone dbrelay: identity '${alice.name}' .* may not log in as database user '${bob.name}'`));
    return true;
  });
});

test('MariaDB through a warpstone tunnel: a real relay, the dbrelay as its agent, warpstone connect as the user', { skip }, async () => {
  const agentFile = await home.issue('agent', `dbbox-${randomBytes(2).toString('hex')}`);
  const aliceUser = await home.issue('user', `${alice.name}.t`);
  const tunnel = `db-${randomBytes(2).toString('hex')}`;
  await home.grant(`${alice.name}.t`, tunnel);
  const relayPort = await warpstoneRelay();
  let registered!: () => void;
  const ready = new Promise<void>((r) => (registered = r));
  await startDbRelay(
    `
mapping:
  ${alice.name}.t: [${alice.name}]
listeners:
  - { name: remote, kind: tunnel, identity: ${agentFile}, relay: "127.0.0.1:${relayPort}", tunnel: ${tunnel}, upstream: "mysql://127.0.0.1:3306" }
`,
    sessions,
    () => registered(),
  );
  await ready;
  const connect = startWarpstone(cleanup, ['connect', tunnel, '--identity', aliceUser, '--relay', `127.0.0.1:${relayPort}`, '--listen', '127.0.0.1:0'], home.env);
  const line = await connect.waitFor(/listening on [^\s]+:\d+/);
  const port = Number(line.split(':').pop());
  const own = await mariadb(bob, { port }, alice.name, PASSWORD.alice);
  assert.equal(own.stdout, `1\t${alice.name}@127.0.0.1\n`, own.stderr);
  const borrowed = await mariadb(alice, { port }, bob.name, PASSWORD.bob);
  assert.match(borrowed.stderr, deniedBy(`${alice.name}.t`, 'warpstone tunnel', bob.name));
});

test('mysql2 through an IDENT listener: root is root, and a borrowed user is ER_ACCESS_DENIED_ERROR with our message', { skip }, async () => {
  const relay = await startDbRelay(
    `
listeners:
  - { name: drivers, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:3306" }
`,
    sessions,
  );
  const port = portOf(relay, 'drivers');
  const root = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root' });
  const [rows] = await root.query<mysql.RowDataPacket[]>('SELECT 1 AS one');
  assert.equal(rows[0]?.one, 1);
  await root.end();
  await assert.rejects(mysql.createConnection({ host: '127.0.0.1', port, user: alice.name, password: PASSWORD.alice }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'ER_ACCESS_DENIED_ERROR');
    assert.match(err.message, new RegExp(`^warpstone dbrelay: identity 'root' \\(IDENT, .*\\) may not log in as database user '${alice.name}'`));
    return true;
  });
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/** The real `psql` as `user`: the user the database sees. `where` is host+port (TCP) or the socket directory+port. */
function psql(user: UnixUser | 'root', where: { host: string; port: number }, dbUser: string, extra = 'sslmode=disable'): Promise<Ran> {
  return runAs(user, 'psql', ['-X', '-w', '-q', '-t', '-A', `host=${where.host} port=${where.port} user=${dbUser} dbname=postgres ${extra}`, '-c', 'SELECT current_user'], {
    env: { PGPASSWORD: '', PGCONNECT_TIMEOUT: '10' },
  });
}

const pgDenied = (identity: string, how: string, dbUser: string): RegExp =>
  new RegExp(`FATAL:  warpstone dbrelay: identity '${identity.replace(/\./g, '\\.')}' \\(${how}[^\\n]*may not log in as database user '${dbUser}'`);

test('psql through IDENT, a UNIX socket (peer credentials) and per-user sockets; strict vs log-and-allow for unknown roles', { skip }, async () => {
  const audit = join(dir, 'pg-audit.jsonl');
  const peerDir = join(dir, 'pg-peer');
  mkdirSync(peerDir, { mode: 0o755 });
  for (const u of [alice, bob]) mkdirSync(join(dir, `pg-${u.name}`), { mode: 0o755 });
  const relay = await startDbRelay(
    `
audit: ${audit}
known_users_query: { url: "postgres://postgres@127.0.0.1:5432/postgres", every: 60s }
listeners:
  - { name: pg-ident, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres://127.0.0.1:5432" }
  - { name: pg-strict, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres://127.0.0.1:5432", strict: true }
  - { name: pg-peer, kind: unix, path: ${peerDir}/.s.PGSQL.6543, mode: "0666", upstream: "postgres://127.0.0.1:5432" }
  - name: pg-homes
    kind: per-user
    pattern: ${dir}/pg-{user}/.s.PGSQL.6543
    users: [${alice.name}, ${bob.name}]
    upstream: postgres://127.0.0.1:5432
`,
    sessions,
  );
  const tcp = { host: '127.0.0.1', port: portOf(relay, 'pg-ident') };
  const own = await psql(alice, tcp, alice.name);
  assert.equal(own.stdout, `${alice.name}\n`, own.stderr);
  const borrowed = await psql(alice, tcp, bob.name);
  assert.equal(borrowed.code, 2);
  assert.match(borrowed.stderr, pgDenied(alice.name, 'IDENT', bob.name));

  const unknown = await psql(alice, tcp, NOSUCH);
  assert.match(unknown.stderr, new RegExp(`FATAL:  role "${NOSUCH}" does not exist`), 'let through; the database refused it');
  const unknownStrict = await psql(alice, { host: '127.0.0.1', port: portOf(relay, 'pg-strict') }, NOSUCH);
  assert.match(unknownStrict.stderr, new RegExp(`FATAL:  warpstone dbrelay: database user '${NOSUCH}' does not exist in the database; .* refused because the listener is strict`));

  const peer = { host: peerDir, port: 6543 };
  const ownPeer = await psql(bob, peer, bob.name);
  assert.equal(ownPeer.stdout, `${bob.name}\n`, ownPeer.stderr);
  assert.match((await psql(bob, peer, alice.name)).stderr, pgDenied(bob.name, 'UNIX peer credentials', alice.name));

  const aliceHome = { host: join(dir, `pg-${alice.name}`), port: 6543 };
  const ownSocket = await psql(alice, aliceHome, alice.name);
  assert.equal(ownSocket.stdout, `${alice.name}\n`, ownSocket.stderr);
  const notHers = await psql(bob, aliceHome, bob.name);
  assert.match(notHers.stderr, /Permission denied/);

  assert.deepEqual(
    auditOf(audit).map((l) => [l.listener, l.protocol, l.identity, l.dbUser, l.decision, l.reason]),
    [
      ['pg-ident', 'postgres', alice.name, alice.name, 'allow', 'match'],
      ['pg-ident', 'postgres', alice.name, bob.name, 'deny', 'mismatch'],
      ['pg-ident', 'postgres', alice.name, NOSUCH, 'allow', 'unknown-db-user'],
      ['pg-strict', 'postgres', alice.name, NOSUCH, 'deny', 'unknown-db-user'],
      ['pg-peer', 'postgres', bob.name, bob.name, 'allow', 'match'],
      ['pg-peer', 'postgres', bob.name, alice.name, 'deny', 'mismatch'],
      ['pg-homes', 'postgres', alice.name, alice.name, 'allow', 'match'],
    ],
  );
});

test('psql through a TLS listener (certificate identity, socat as the wrapper) and through a warpstone tunnel', { skip }, async () => {
  const bobCert = await home.issue('user', `${bob.name}.pg`);
  const agentFile = await home.issue('agent', `pgbox-${randomBytes(2).toString('hex')}`);
  const tunnel = `pg-${randomBytes(2).toString('hex')}`;
  await home.grant(`${bob.name}.pg`, tunnel);
  const relayPort = await warpstoneRelay();
  let registered!: () => void;
  const ready = new Promise<void>((r) => (registered = r));
  const relay = await startDbRelay(
    `
home: ${home.dir}
mapping:
  ${bob.name}.pg: [${bob.name}]
listeners:
  - { name: pg-certs, kind: tls, listen: "127.0.0.1:0", upstream: "postgres://127.0.0.1:5432" }
  - { name: pg-remote, kind: tunnel, identity: ${agentFile}, relay: "127.0.0.1:${relayPort}", tunnel: ${tunnel}, upstream: "postgres://127.0.0.1:5432" }
`,
    sessions,
    () => registered(),
  );
  const wrapped = await socatWrapper(bobCert, portOf(relay, 'pg-certs'));
  const viaTls = await psql(alice, { host: '127.0.0.1', port: wrapped }, bob.name);
  assert.equal(viaTls.stdout, `${bob.name}\n`, viaTls.stderr);
  assert.match((await psql(bob, { host: '127.0.0.1', port: wrapped }, alice.name)).stderr, pgDenied(`${bob.name}.pg`, 'client certificate', alice.name));

  await ready;
  const bobUser = join(home.dir, `${bob.name}.pg.pem`);
  const connect = startWarpstone(cleanup, ['connect', tunnel, '--identity', bobUser, '--relay', `127.0.0.1:${relayPort}`, '--listen', '127.0.0.1:0'], home.env);
  const line = await connect.waitFor(/listening on [^\s]+:\d+/);
  const port = Number(line.split(':').pop());
  const viaTunnel = await psql(alice, { host: '127.0.0.1', port }, bob.name);
  assert.equal(viaTunnel.stdout, `${bob.name}\n`, viaTunnel.stderr);
  assert.match((await psql(alice, { host: '127.0.0.1', port }, alice.name)).stderr, pgDenied(`${bob.name}.pg`, 'warpstone tunnel', alice.name));
});

test('TLS asked for inside the protocol: refused by default, terminated at the relay with client_tls: terminate (psql and mariadb)', { skip }, async () => {
  const relay = await startDbRelay(
    `
listeners:
  - { name: pg-refuse, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres://127.0.0.1:5432" }
  - name: pg-terminate
    kind: tcp
    listen: "127.0.0.1:0"
    ident: { port: ${identdPort} }
    upstream: postgres://127.0.0.1:5432
    client_tls: terminate
    client_tls_cert: ${join(home.dir, 'relay.pem')}
  - name: my-terminate
    kind: tcp
    listen: "127.0.0.1:0"
    ident: { port: ${identdPort} }
    upstream: mysql://127.0.0.1:3306
    client_tls: terminate
    client_tls_cert: ${join(home.dir, 'relay.pem')}
`,
    sessions,
  );
  const required = await psql(alice, { host: '127.0.0.1', port: portOf(relay, 'pg-refuse') }, alice.name, 'sslmode=require');
  assert.notEqual(required.code, 0);
  assert.match(required.stderr, /server does not support SSL, but SSL was required/);
  const terminated = await psql(alice, { host: '127.0.0.1', port: portOf(relay, 'pg-terminate') }, alice.name, 'sslmode=require');
  assert.equal(terminated.stdout, `${alice.name}\n`, terminated.stderr);
  const deniedInside = await psql(alice, { host: '127.0.0.1', port: portOf(relay, 'pg-terminate') }, bob.name, 'sslmode=require');
  assert.match(deniedInside.stderr, pgDenied(alice.name, 'IDENT', bob.name));
  const mariadbTls = await runAs(alice, 'mariadb', [
    '--no-defaults',
    '--protocol=TCP',
    '-h',
    '127.0.0.1',
    '-P',
    String(portOf(relay, 'my-terminate')),
    '--ssl',
    '-u',
    alice.name,
    `-p${PASSWORD.alice}`,
    '-N',
    '-B',
    '-e',
    "SELECT CURRENT_USER(), VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
  ]);
  assert.equal(mariadbTls.code, 0, mariadbTls.stderr);
  assert.match(mariadbTls.stdout, new RegExp(`^${alice.name}@127\\.0\\.0\\.1\\t[01]\\n$`));
});

test('the pg driver through a UNIX-socket listener: root is root, a borrowed role is refused with SQLSTATE 28000 and our message', { skip }, async () => {
  const socketDir = join(dir, 'pg-driver');
  mkdirSync(socketDir, { mode: 0o755 });
  await startDbRelay(`listeners:\n  - { name: pg-driver, kind: unix, path: ${socketDir}/.s.PGSQL.6544, upstream: "postgres://127.0.0.1:5432" }\n`, sessions);
  const root = new pg.Client({ host: socketDir, port: 6544, user: 'root', database: 'postgres' });
  await root.connect();
  const result = await root.query<{ who: string }>('SELECT current_user AS who');
  assert.equal(result.rows[0]?.who, 'root');
  await root.end();
  const borrowed = new pg.Client({ host: socketDir, port: 6544, user: alice.name, database: 'postgres' });
  await assert.rejects(borrowed.connect(), (err: Error & { code?: string; severity?: string }) => {
    assert.equal(err.code, '28000');
    assert.equal(err.severity, 'FATAL');
    assert.match(err.message, new RegExp(`^warpstone dbrelay: identity 'root' \\(UNIX peer credentials, uid 0, pid \\d+\\) may not log in as database user '${alice.name}'`));
    return true;
  });
});

test('a UNIX-socket upstream works once explicitly allowed (PostgreSQL over its socket)', { skip }, async () => {
  const relay = await startDbRelay(
    `
allow_unix_upstream: true
listeners:
  - { name: pg-via-socket, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres+unix:///var/run/postgresql/.s.PGSQL.5432" }
`,
    sessions,
  );
  const port = portOf(relay, 'pg-via-socket');
  const own = await runAs(alice, 'psql', ['-X', '-w', '-q', '-t', '-A', `host=127.0.0.1 port=${port} user=${alice.name} dbname=postgres sslmode=disable`, '-c', "SELECT current_user || ' ' || coalesce(inet_client_addr()::text, 'socket')"]);
  assert.equal(own.stdout, `${alice.name} socket\n`, own.stderr);
});
