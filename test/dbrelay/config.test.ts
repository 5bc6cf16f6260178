// dbrelay.yaml: every listener kind with its defaults, policy inheritance, and errors that name
// the file, the line and the field (including the refusal of UNIX-socket upstreams).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, makeHome, tempDir } from '../helpers/harness.ts';
import { loadDbRelayConfig, parseDbRelayConfig, parseDuration, type ListenerConfig } from '../../src/dbrelay/config.ts';
import { ConfigError } from '../../src/common/errors.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const dir = tempDir(cleanup, 'ws-dbrelay-config-');

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Asserts that loading `text` fails with `<file>:<line>: <field>: ...` matching `problem`. */
function assertConfigError(text: string, line: number, field: string | undefined, problem: RegExp): void {
  const path = file(`bad-${Math.random().toString(36).slice(2)}.yaml`, text);
  assert.throws(
    () => loadDbRelayConfig(path),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `not a ConfigError: ${String(err)}`);
      assert.equal(err.code, 'WS_CONFIG');
      const prefix = `${path}:${line}: ${field === undefined ? '' : `${field}: `}`;
      assert.ok(err.message.startsWith(prefix), `expected '${prefix}...', got '${err.message}'`);
      assert.match(err.message.slice(prefix.length), problem);
      return true;
    },
  );
}

test('durations: ms, s, m, h and bare numbers of seconds', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('10s'), 10_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration(1.5), 1500);
  assert.equal(parseDuration('3'), 3000);
});

test('every listener kind, with defaults and inherited policy', async () => {
  const home = await makeHome(cleanup);
  const agent = await home.issue('agent', 'dbbox');
  const path = file(
    'all.yaml',
    `# a comment
home: ${home.dir}
strict: true
mapping:
  alice: [alice, alice_ro]
  deploy: app
known_users: [alice, alice_ro, app, bob]
timeouts: { handshake: 5s, idle: 1h }
audit: audit.jsonl
listeners:
  - name: dev
    kind: tcp
    listen: 127.0.0.1:3307
    upstream: mysql://127.0.0.1:3306
  - name: certs
    kind: tls
    listen: "[::1]:5433"
    upstream: postgres://127.0.0.1
    strict: false
  - name: local
    kind: unix
    path: /run/dbrelay-test/mysql.sock
    upstream: mariadb://db.internal:3307
    mapping: { bob: [bob] }
    known_users_query: { url: "postgres://postgres@127.0.0.1:5432/postgres", every: 30s }
  - name: homes
    kind: per-user
    sockets:
      - { user: root, path: /root/db.sock }
    upstream: postgresql://[::1]:5432
    timeouts: { connect: 2s }
  - name: remote
    kind: tunnel
    identity: ${agent}
    relay: 127.0.0.1:7443
    tunnel: db
    upstream: mysql://127.0.0.1:3306
    max_connections: 20
`,
  );
  const config = loadDbRelayConfig(path);
  assert.equal(config.user, undefined);
  const byName = new Map<string, ListenerConfig>(config.listeners.map((l) => [l.name, l]));
  const dev = byName.get('dev');
  assert.ok(dev?.kind === 'tcp' && dev.identity === 'ident');
  assert.deepEqual(dev.listen, { host: '127.0.0.1', port: 3307 });
  assert.deepEqual(dev.ident, { port: 113, timeoutMs: 3000 });
  assert.deepEqual(dev.upstream, { protocol: 'mysql', transport: 'tcp', address: { host: '127.0.0.1', port: 3306 }, url: 'mysql://127.0.0.1:3306' });
  assert.equal(dev.policy.strict, true);
  assert.deepEqual([...dev.policy.mapping], [
    ['alice', ['alice', 'alice_ro']],
    ['deploy', ['app']],
  ]);
  assert.deepEqual(dev.policy.knownUsers, { kind: 'list', users: ['alice', 'alice_ro', 'app', 'bob'] });
  assert.deepEqual(dev.policy.clientTls, { mode: 'refuse' });
  assert.equal(dev.policy.handshakeTimeoutMs, 5000);
  assert.equal(dev.policy.idleTimeoutMs, 3_600_000);
  assert.equal(dev.policy.connectTimeoutMs, 10_000);
  assert.equal(dev.policy.maxConnections, 512);
  assert.equal(dev.policy.audit, join(dir, 'audit.jsonl'), 'relative to the config file');

  const certs = byName.get('certs');
  assert.ok(certs?.kind === 'tls');
  assert.deepEqual(certs.listen, { host: '::1', port: 5433 });
  assert.equal(certs.upstream.url, 'postgres://127.0.0.1:5432');
  assert.equal(certs.policy.strict, false, 'the listener overrides the top level');
  assert.equal(certs.requiredOu, 'user', "the home's CA also signs agents: only users are people");
  assert.equal(certs.files.ca, join(home.dir, 'ca.pem'));
  assert.equal(certs.files.cert, join(home.dir, 'relay.pem'));
  assert.equal((certs.cert.match(/BEGIN CERTIFICATE/g) ?? []).length, 1, 'the leaf only, not the CA that relay.pem carries');
  assert.equal(certs.revocationStore, join(home.dir, 'store.sqlite'), "the home's store is consulted for revocations");

  const local = byName.get('local');
  assert.ok(local?.kind === 'unix');
  assert.equal(local.mode, 0o660);
  assert.deepEqual([...local.policy.mapping], [['bob', ['bob']]], 'a listener mapping replaces the top-level one');
  assert.equal(local.upstream.url, 'mysql://db.internal:3307');
  assert.ok(local.policy.knownUsers.kind === 'query');
  assert.equal(local.policy.knownUsers.everyMs, 30_000);
  assert.equal(local.policy.knownUsers.display, 'postgres://postgres@127.0.0.1:5432/postgres');
  assert.equal(local.policy.knownUsers.database, 'postgres');

  const homes = byName.get('homes');
  assert.ok(homes?.kind === 'per-user');
  assert.deepEqual(homes.sockets, [{ user: 'root', uid: 0, gid: 0, path: '/root/db.sock' }]);
  assert.equal(homes.upstream.url, 'postgres://[::1]:5432');
  assert.equal(homes.policy.connectTimeoutMs, 2000);
  assert.equal(homes.policy.handshakeTimeoutMs, 5000, 'timeouts merge key by key');

  const remote = byName.get('remote');
  assert.ok(remote?.kind === 'tunnel');
  assert.equal(remote.identity.name, 'dbbox');
  assert.deepEqual(remote.relay, { host: '127.0.0.1', port: 7443 });
  assert.equal(remote.tunnel, 'db');
  assert.equal(remote.policy.maxConnections, 20);
});

test('per-user sockets from a pattern; user: is looked up', () => {
  const config = parseDbRelayConfig(
    `user: nobody
listeners:
  - { name: h, kind: per-user, pattern: "/srv/db/{user}/mysql.sock", users: [root, nobody], upstream: "mysql://127.0.0.1:3306" }
`,
    join(dir, 'pattern.yaml'),
  );
  assert.equal(config.user?.name, 'nobody');
  assert.equal(config.user?.uid, 65534);
  const l = config.listeners[0];
  assert.ok(l?.kind === 'per-user');
  assert.deepEqual(
    l.sockets.map((s) => [s.user, s.path]),
    [
      ['root', '/srv/db/root/mysql.sock'],
      ['nobody', '/srv/db/nobody/mysql.sock'],
    ],
  );
});

test('a UNIX-socket upstream is refused unless allowed, and the error says why', () => {
  assertConfigError(
    `listeners:
  - name: local
    kind: tcp
    listen: 127.0.0.1:3307
    upstream: mysql+unix:///run/mysqld/mysqld.sock
`,
    5,
    'listeners.0.upstream',
    /refused unless allow_unix_upstream: true .*unix_socket.*PostgreSQL's peer authentication.*as root/,
  );
  const allowed = parseDbRelayConfig(
    `allow_unix_upstream: true
listeners:
  - { name: local, kind: tcp, listen: 127.0.0.1:3307, upstream: "postgres+unix:///var/run/postgresql/.s.PGSQL.5432" }
`,
    join(dir, 'unix-ok.yaml'),
  );
  assert.deepEqual(allowed.listeners[0]?.upstream, {
    protocol: 'postgres',
    transport: 'unix',
    path: '/var/run/postgresql/.s.PGSQL.5432',
    url: 'postgres+unix:///var/run/postgresql/.s.PGSQL.5432',
  });
});

test('errors name the file, the line and the field', async () => {
  const l = 'listeners:\n  - name: dev\n    kind: tcp\n    listen: 127.0.0.1:3307\n    upstream: mysql://127.0.0.1:3306\n';
  assertConfigError(`strict: true\nstrictt: false\n${l}`, 2, 'strictt', /unknown setting 'strictt'/);
  assertConfigError(`${l}    idnet: { port: 1 }\n`, 6, 'listeners.0.idnet', /unknown setting 'idnet'/);
  assertConfigError(l.replace('kind: tcp', 'kind: udp'), 3, 'listeners.0.kind', /tcp.*tls.*unix.*per-user.*tunnel/);
  assertConfigError(l.replace('127.0.0.1:3307', '127.0.0.1'), 4, 'listeners.0.listen', /has no port/);
  assertConfigError(l.replace('mysql://127.0.0.1:3306', 'redis://127.0.0.1:6379'), 5, 'listeners.0.upstream', /unknown scheme 'redis:'/);
  assertConfigError(l.replace('mysql://127.0.0.1:3306', 'mysql://root:pw@127.0.0.1:3306'), 5, 'listeners.0.upstream', /no user or password/);
  assertConfigError(`timeouts:\n  idle: soon\n${l}`, 2, 'timeouts.idle', /duration like 500ms/);
  assertConfigError(`strict: yes please\n${l}`, 1, 'strict', /expected boolean/);
  assertConfigError(`mapping:\n  alice: []\n${l}`, 2, 'mapping.alice', /./);
  assertConfigError(`client_tls: terminate\n${l}`, 1, 'client_tls', /needs client_tls_cert/);
  assertConfigError(`known_users: [a]\nknown_users_query: { url: "mysql://root@127.0.0.1" }\n${l}`, 2, 'known_users_query', /not both/);
  assertConfigError(`known_users_query: { url: "mysql://127.0.0.1" }\n${l}`, 1, 'known_users_query.url', /names no user/);
  assertConfigError(`known_users_query: { url: "mysql://root@127.0.0.1", every: 10ms }\n${l}`, 1, 'known_users_query.every', /at most once a second/);
  assertConfigError(`${l}${l.replace('listeners:\n', '')}`, 6, 'listeners.1.name', /'dev' is used twice/);
  assertConfigError(`${l}${l.replace('listeners:\n', '').replace('dev', 'dev2')}`, 6, 'listeners.1', /uses 127\.0\.0\.1:3307, as listener 'dev' does/);
  assertConfigError(`user: no_such_user_here\n${l}`, 1, 'user', /no such user 'no_such_user_here'/);
  assertConfigError(
    'listeners:\n  - name: h\n    kind: per-user\n    pattern: /srv/db.sock\n    users: [root]\n    upstream: mysql://127.0.0.1:3306\n',
    4,
    'listeners.0.pattern',
    /must contain '\{user\}'/,
  );
  assertConfigError(
    'listeners:\n  - name: h\n    kind: per-user\n    users: [root, not_a_user_here]\n    pattern: /srv/{user}.sock\n    upstream: mysql://127.0.0.1:3306\n',
    4,
    'listeners.0.users.1',
    /no such user 'not_a_user_here'/,
  );
  assertConfigError('listeners:\n  - name: u\n    kind: unix\n    path: relative.sock\n    upstream: mysql://127.0.0.1:3306\n', 4, 'listeners.0.path', /absolute path/);
  assertConfigError('listeners:\n  - name: u\n    kind: unix\n    path: /run/x.sock\n    group: no_such_group_here\n    upstream: mysql://127.0.0.1:3306\n', 5, 'listeners.0.group', /no such group 'no_such_group_here'/);
  assertConfigError('listeners:\n  - name: t\n    kind: tls\n    listen: 127.0.0.1:1\n    cert: /nonexistent/cert.pem\n    upstream: mysql://127.0.0.1:3306\n', 5, 'listeners.0.cert', /cannot be read/);
  const home = await makeHome(cleanup);
  const user = await home.issue('user', 'alice');
  assertConfigError(
    `listeners:\n  - name: t\n    kind: tunnel\n    relay: 127.0.0.1:7443\n    tunnel: db\n    identity: ${user}\n    upstream: mysql://127.0.0.1:3306\n`,
    6,
    'listeners.0.identity',
    /holds a user certificate; a tunnel listener dials the relay as an agent/,
  );
  assertConfigError('listeners:\n  - name: t\n    kind: tunnel\n    relay: 127.0.0.1:7443\n    tunnel: "d b"\n    identity: x\n    upstream: mysql://127.0.0.1:3306\n', 5, 'listeners.0.tunnel', /whitespace/);
  assertConfigError('listeners: []\n', 1, 'listeners', /at least one listener/);
  assertConfigError('listeners:\n  - name: a\n    kind: tcp\n    listen: "1.2.3.4:1"\n', 2, 'listeners.0.upstream', /^missing: this setting is required/);
  assertConfigError('listeners:\n  - name: a\n    kind: tcp\n    listen: "1.2.3.4:1"\n    upstrem: "mysql://h:1"\n', 5, 'listeners.0.upstrem', /^unknown setting 'upstrem'$/);
  assertConfigError(`listeners:\n  - { name: a, kind: tcp, listen: "1.2.3.4:1", upstream: [x] }\n`, 2, 'listeners.0.upstream', /expected string/);

  const broken = file('broken.yaml', 'listeners: [\n  - name: x\n');
  assert.throws(() => loadDbRelayConfig(broken), (err: Error) => err.message.startsWith(`${broken}:`) && /not valid YAML/.test(err.message));
  assert.throws(() => loadDbRelayConfig(join(dir, 'missing.yaml')), /missing\.yaml: cannot be read/);
});

test('client_tls: terminate reads the certificate and key, and checks that they belong together', async () => {
  const home = await makeHome(cleanup);
  const relayPem = join(home.dir, 'relay.pem');
  const config = parseDbRelayConfig(
    `client_tls: terminate\nclient_tls_cert: ${relayPem}\nlisteners:\n  - { name: a, kind: tcp, listen: "127.0.0.1:1", upstream: "mysql://127.0.0.1:3306" }\n`,
    join(dir, 'terminate.yaml'),
  );
  const tlsConfig = config.listeners[0]?.policy.clientTls;
  assert.ok(tlsConfig?.mode === 'terminate');
  assert.match(tlsConfig.key, /PRIVATE KEY/);
  const other = await makeHome(cleanup);
  assertConfigError(
    `client_tls: terminate\nclient_tls_cert: ${relayPem}\nclient_tls_key: ${join(other.dir, 'ca.key')}\nlisteners:\n  - { name: a, kind: tcp, listen: "127.0.0.1:1", upstream: "mysql://127.0.0.1:3306" }\n`,
    2,
    'client_tls_cert',
    /cannot be used together/,
  );
});
