// Client certificates sent inside the database protocol's own TLS upgrade (`kind: tcp` with
// `identity: certificate`), with real parts: certificates issued by a warpstone home's CA (and
// by a stranger's CA), MariaDB and PostgreSQL users made for the test, the real `mariadb
// --ssl-cert --ssl-key` and `psql sslcert= sslkey=` clients, the mysql2 and pg drivers with TLS
// options, PostgreSQL's direct TLS (ALPN "postgresql") by hand, and `warpstone revoke` through
// the home's store. Also the config: defaults, the errors that keep a listener consistent, and
// old configs meaning what they meant.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { Cleanup, makeHome, tempDir, type Home } from '../helpers/harness.ts';
import type { Logger } from '../../src/common/log.ts';
import { ConfigError } from '../../src/common/errors.ts';
import { parseDbRelayConfig } from '../../src/dbrelay/config.ts';
import { DbRelay } from '../../src/dbrelay/server.ts';
import { createPolicy } from '../../src/dbrelay/policy.ts';
import { serveMysql } from '../../src/dbrelay/mysql-session.ts';
import { servePostgres } from '../../src/dbrelay/postgres-session.ts';
import { buildStartupMessage } from '../../src/dbrelay/postgres.ts';
import { describeDbRelayConfig } from '../../src/cli/dbrelay.ts';
import { runRevoke } from '../../src/cli/revoke.ts';
import { createMariadbUser, createPostgresUser } from './accounts.ts';
import { run } from './helpers.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

const TAG = randomBytes(3).toString('hex');
const ALICE = `ws_cca_${TAG}`;
const BOB = `ws_ccb_${TAG}`;
const CAROL = `ws_ccc_${TAG}`;
const PASSWORD = `p-${randomBytes(4).toString('hex')}`;

let dir: string;
let home: Home;
let caFile: string;
const certs = { alice: '', bob: '', carol: '', foreign: '' };
let relay: DbRelay;
let audit: string;
const lines: Array<Record<string, unknown>> = [];

function capturedLog(): Logger {
  return pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        lines.push(JSON.parse(line) as Record<string, unknown>);
        if (process.env.WS_DBRELAY_TEST_LOG) process.stderr.write(line);
      },
    },
  );
}

before(async () => {
  dir = tempDir(cleanup, 'ws-dbrelay-cert-');
  home = await makeHome(cleanup);
  const stranger = await makeHome(cleanup);
  for (const name of [ALICE, BOB, CAROL]) {
    createMariadbUser(cleanup, name, PASSWORD);
    createPostgresUser(cleanup, name, PASSWORD);
  }
  certs.alice = await home.issue('user', ALICE);
  certs.bob = await home.issue('user', BOB);
  certs.carol = await home.issue('user', CAROL);
  // the same name from another CA: a stranger's certificate proves nothing here
  certs.foreign = await stranger.issue('user', ALICE);
  caFile = join(home.dir, 'ca.pem');
  audit = join(dir, 'audit.jsonl');
  const yaml = `
home: ${home.dir}
audit: ${audit}
listeners:
  - { name: my-certs, kind: tcp, identity: certificate, listen: "127.0.0.1:0", upstream: "mysql://127.0.0.1:3306" }
  - { name: pg-certs, kind: tcp, identity: certificate, listen: "127.0.0.1:0", upstream: "postgres://127.0.0.1:5432" }
`;
  const file = join(dir, 'dbrelay.yaml');
  writeFileSync(file, yaml);
  relay = new DbRelay({ config: parseDbRelayConfig(yaml, file), handlers: { mysql: serveMysql, postgres: servePostgres }, createPolicy, log: capturedLog() });
  await relay.start();
  cleanup.add(() => relay.stop());
});

function portOf(name: string): number {
  const port = relay.listeners.find((l) => l.name === name)?.bound[0]?.port;
  assert.ok(port, `listener ${name} has a port`);
  return port;
}

/** The real `mariadb` client: TLS with the relay verified against the home's CA, and `extra` (a certificate). */
function mariadb(dbUser: string, extra: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run('mariadb', [
    '--no-defaults',
    '--protocol=TCP',
    '-h',
    '127.0.0.1',
    '-P',
    String(portOf('my-certs')),
    ...extra,
    '-u',
    dbUser,
    `-p${PASSWORD}`,
    '-N',
    '-B',
    '-e',
    'SELECT CURRENT_USER()',
  ]);
}

const withCert = (file: string): string[] => ['--ssl-ca', caFile, '--ssl-verify-server-cert', '--ssl-cert', file, '--ssl-key', file];

/** The real `psql`: verify-full against the home's CA, the client certificate in `file`. */
function psql(dbUser: string, file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run('psql', ['-X', '-w', '-A', '-t', `host=127.0.0.1 port=${portOf('pg-certs')} user=${dbUser} dbname=postgres sslmode=verify-full sslrootcert=${caFile} sslcert=${file} sslkey=${file}`, '-c', 'SELECT current_user'], {
    env: { PGCONNECT_TIMEOUT: '10' },
  });
}

function auditLines(): Array<Record<string, unknown>> {
  return readFileSync(audit, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('mariadb --ssl-cert: alice\'s certificate logs in as alice; bob\'s as alice is refused with our message; no certificate, no TLS, another CA and a revoked certificate have no identity', async () => {
  const own = await mariadb(ALICE, withCert(certs.alice));
  assert.equal(own.stdout, `${ALICE}@127.0.0.1\n`, own.stderr);

  const borrowed = await mariadb(ALICE, withCert(certs.bob));
  assert.equal(borrowed.code, 1);
  assert.match(borrowed.stderr, new RegExp(`^ERROR 1045 \\(28000\\): warpstone dbrelay: identity '${BOB}' \\(client certificate, tls: certificate of '${BOB}' \\(serial [0-9A-F]+\\)\\) may not log in as database user '${ALICE}'\\n$`));

  const foreign = await mariadb(ALICE, withCert(certs.foreign));
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, new RegExp(`^ERROR 1045 \\(28000\\): warpstone dbrelay: could not tell who is connecting \\(client certificate, tls: certificate of '${ALICE}' \\(serial [0-9A-F]+\\) not verified: SELF_SIGNED_CERT_IN_CHAIN\\), so database user '${ALICE}' is refused`));
  const logged = lines.find((l) => l.listener === 'my-certs' && l.reason === 'no-identity' && String(l.msg).includes('not verified'));
  assert.ok(logged, 'a log line says why');
  assert.equal(logged.level, 40, 'at warn');

  const noCert = await mariadb(ALICE, ['--ssl-ca', caFile, '--ssl-verify-server-cert']);
  assert.match(noCert.stderr, /could not tell who is connecting \(client certificate, tls: no client certificate was presented\)/);
  const clear = await mariadb(ALICE, ['--skip-ssl']);
  assert.match(clear.stderr, /could not tell who is connecting \(client certificate, the client did not start TLS, so it sent no certificate \(mariadb: --ssl-cert and --ssl-key; psql: sslmode=require sslcert=\.\.\. sslkey=\.\.\.\)\)/);

  // `warpstone revoke` writes the home's store, which the listener reads for every certificate.
  const carolBefore = await mariadb(CAROL, withCert(certs.carol));
  assert.equal(carolBefore.stdout, `${CAROL}@127.0.0.1\n`, carolBefore.stderr);
  assert.equal(await runRevoke(home.dir, CAROL), 1);
  const revoked = await mariadb(CAROL, withCert(certs.carol));
  assert.match(revoked.stderr, new RegExp(`certificate of '${CAROL}' \\(serial [0-9A-F]+\\) was revoked on \\d{4}-`));

  const mine = auditLines().filter((l) => l.listener === 'my-certs');
  assert.deepEqual(
    mine.map((l) => [l.identity, l.identitySource, l.dbUser, l.decision, l.reason]),
    [
      [ALICE, 'certificate', ALICE, 'allow', 'match'],
      [BOB, 'certificate', ALICE, 'deny', 'mismatch'],
      [null, 'certificate', ALICE, 'deny', 'no-identity'],
      [null, 'certificate', ALICE, 'deny', 'no-identity'],
      [null, 'certificate', ALICE, 'deny', 'no-identity'],
      [CAROL, 'certificate', CAROL, 'allow', 'match'],
      [null, 'certificate', CAROL, 'deny', 'no-identity'],
    ],
  );
});

test('mysql2 with ssl { key, cert, ca }: the certificate is the identity', async () => {
  const pem = readFileSync(certs.alice, 'utf8');
  const connection = await mysql.createConnection({ host: '127.0.0.1', port: portOf('my-certs'), user: ALICE, password: PASSWORD, ssl: { key: pem, cert: pem, ca: home.caPem } });
  const [rows] = await connection.query<mysql.RowDataPacket[]>('SELECT CURRENT_USER() AS who');
  assert.equal(rows[0]?.who, `${ALICE}@127.0.0.1`);
  await connection.end();
  const bobPem = readFileSync(certs.bob, 'utf8');
  await assert.rejects(mysql.createConnection({ host: '127.0.0.1', port: portOf('my-certs'), user: ALICE, password: PASSWORD, ssl: { key: bobPem, cert: bobPem, ca: home.caPem } }), (err: Error & { errno?: number }) => {
    assert.equal(err.errno, 1045);
    assert.match(err.message, new RegExp(`^warpstone dbrelay: identity '${BOB}' \\(client certificate`));
    return true;
  });
});

test('psql sslcert=/sslkey=: alice\'s certificate logs in as alice; bob\'s as alice and a stranger CA\'s are refused with a FATAL saying why', async () => {
  const own = await psql(ALICE, certs.alice);
  assert.equal(own.stdout, `${ALICE}\n`, own.stderr);
  const borrowed = await psql(ALICE, certs.bob);
  assert.equal(borrowed.code, 2);
  assert.match(borrowed.stderr, new RegExp(`FATAL:  warpstone dbrelay: identity '${BOB}' \\(client certificate, tls: certificate of '${BOB}' \\(serial [0-9A-F]+\\)\\) may not log in as database user '${ALICE}'`));
  const foreign = await psql(ALICE, certs.foreign);
  assert.match(foreign.stderr, new RegExp(`FATAL:  warpstone dbrelay: could not tell who is connecting \\(client certificate, tls: certificate of '${escape(ALICE)}' \\(serial [0-9A-F]+\\) not verified: SELF_SIGNED_CERT_IN_CHAIN\\)`));
  assert.ok(lines.some((l) => l.listener === 'pg-certs' && l.reason === 'no-identity' && l.level === 40 && String(l.msg).includes('SELF_SIGNED_CERT_IN_CHAIN')), 'a log line says why');
});

test('the pg driver with ssl { key, cert, ca }, and PostgreSQL direct TLS (ALPN postgresql) by hand, both with the certificate as the identity', async () => {
  const pem = readFileSync(certs.alice, 'utf8');
  const client = new pg.Client({ host: '127.0.0.1', port: portOf('pg-certs'), user: ALICE, database: 'postgres', ssl: { key: pem, cert: pem, ca: home.caPem } });
  await client.connect();
  const result = await client.query<{ who: string; tls: boolean }>('SELECT current_user AS who');
  assert.equal(result.rows[0]?.who, ALICE);
  await client.end();

  // sslnegotiation=direct (PostgreSQL 17 clients): TLS first, then the StartupMessage inside.
  const first = await new Promise<Buffer>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: portOf('pg-certs'), ALPNProtocols: ['postgresql'], key: pem, cert: pem, ca: home.caPem }, () => {
      socket.write(buildStartupMessage({ user: ALICE, database: 'postgres' }));
    });
    socket.once('data', (d: Buffer) => {
      socket.destroy();
      resolve(d);
    });
    socket.once('error', reject);
  });
  assert.equal(first[0], 0x52, `the database answers with an authentication message ('R'), got ${first.subarray(0, 16).toString('hex')}`);
  const direct = auditLines().filter((l) => l.listener === 'pg-certs' && l.decision === 'allow');
  assert.ok(direct.length >= 2 && direct.every((l) => l.identity === ALICE && l.identitySource === 'certificate'));
});

// ---------------------------------------------------------------------------------------------
// Config

function configError(text: string): ConfigError {
  try {
    parseDbRelayConfig(text, '/etc/dbrelay.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail('expected a ConfigError');
}

test('config: identity: certificate implies client_tls: terminate with the home\'s relay.pem and CA; contradictions are errors at their line; old tcp listeners are IDENT', () => {
  const text = `home: ${home.dir}\nlisteners:\n  - { name: c, kind: tcp, identity: certificate, listen: "127.0.0.1:3307", upstream: "mysql://127.0.0.1:3306" }\n  - { name: i, kind: tcp, listen: "127.0.0.1:3308", upstream: "mysql://127.0.0.1:3306" }\n`;
  const config = parseDbRelayConfig(text, '/etc/dbrelay.yaml');
  const [c, i] = config.listeners;
  assert.ok(c?.kind === 'tcp' && c.identity === 'certificate');
  assert.equal(c.policy.clientTls.mode, 'terminate');
  assert.equal(c.policy.clientTls.mode === 'terminate' && c.policy.clientTls.certFile, join(home.dir, 'relay.pem'));
  assert.equal(c.policy.clientTls.mode === 'terminate' && c.policy.clientTls.cert.match(/BEGIN CERTIFICATE/g)?.length, 1, 'the leaf only');
  assert.deepEqual([c.clientCert.caFile, c.clientCert.requiredOu, c.clientCert.revocationStore], [caFile, 'user', join(home.dir, 'store.sqlite')]);
  assert.ok(i?.kind === 'tcp' && i.identity === 'ident', 'without identity: the IDENT listener it always was');
  assert.equal(i.policy.clientTls.mode, 'refuse');
  assert.match(
    describeDbRelayConfig(config),
    /listener 'c' on 127\.0\.0\.1:3307: identity from the CN of the client certificate sent inside the protocol's TLS upgrade, verified against .*ca\.pem \(role OU=user required\), recorded and not revoked in .*store\.sqlite; a client that does not start TLS has no identity, upstream mysql:\/\/127\.0\.0\.1:3306, strict: no, client TLS: terminated here \(.*relay\.pem\)/,
  );

  const head = `home: ${home.dir}\nlisteners:\n  - name: c\n    kind: tcp\n    listen: 127.0.0.1:3307\n    upstream: mysql://127.0.0.1:3306\n`;
  const refuse = configError(`${head}    identity: certificate\n    client_tls: refuse\n`);
  assert.deepEqual([refuse.line, refuse.field], [8, 'listeners.0.client_tls']);
  assert.match(refuse.message, /identity: certificate reads the certificate the client sends inside TLS, so client_tls must be terminate/);
  const topRefuse = configError(`client_tls: refuse\n${head}    identity: certificate\n`);
  assert.deepEqual([topRefuse.line, topRefuse.field], [8, 'listeners.0.identity']);
  const ident = configError(`${head}    identity: certificate\n    ident: { port: 1113 }\n`);
  assert.deepEqual([ident.line, ident.field], [8, 'listeners.0.ident']);
  assert.match(ident.message, /only used with identity: ident/);
  const ca = configError(`${head}    client_ca: /etc/ssl/ca.pem\n`);
  assert.deepEqual([ca.line, ca.field], [7, 'listeners.0.client_ca']);
  assert.match(ca.message, /only used with identity: certificate/);
  const typo = configError(`${head}    identity: cert\n`);
  assert.deepEqual([typo.line, typo.field], [7, 'listeners.0.identity']);
  const noHome = configError(`listeners:\n  - { name: c, kind: tcp, identity: certificate, home: ${join(dir, 'nowhere')}, listen: "127.0.0.1:3307", upstream: "mysql://127.0.0.1:3306" }\n`);
  assert.equal(noHome.field, 'listeners.0.identity');
  assert.match(noHome.message, /nowhere\/ca\.pem cannot be read/);
});
