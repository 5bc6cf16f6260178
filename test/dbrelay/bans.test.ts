// Bans in the database relay with real parts: a warpstone home made by `warpstone init` whose
// store keeps the bans, the real `warpstone ban list|add|remove` commands, `warpstone identd`
// answering IDENT, MariaDB and PostgreSQL behind the relay (MariaDB through a recording proxy, to
// see which connections reach it), a scripted attacker on 127.0.0.2 speaking the protocols by
// hand, and the real `mariadb`, `psql`, mysql2 and pg clients on 127.0.0.1 reading the banned
// refusal. The config section, what counts as a failure and the refusal's bytes are checked
// directly too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { Cleanup, freePort, makeHome, runWarpstone, startWarpstone, tempDir, type Home } from '../helpers/harness.ts';
import type { Logger } from '../../src/common/log.ts';
import { ConfigError } from '../../src/common/errors.ts';
import { parseDbRelayConfig } from '../../src/dbrelay/config.ts';
import { DbRelay } from '../../src/dbrelay/server.ts';
import { createPolicy } from '../../src/dbrelay/policy.ts';
import { serveMysql } from '../../src/dbrelay/mysql-session.ts';
import { servePostgres } from '../../src/dbrelay/postgres-session.ts';
import { ER_HOST_IS_BLOCKED, bannedReply, failureOf } from '../../src/dbrelay/bans.ts';
import { CLIENT, buildPacket, readPacket } from '../../src/dbrelay/mysql.ts';
import { buildEncryptionRequest } from '../../src/dbrelay/postgres.ts';
import { describeDbRelayConfig } from '../../src/cli/dbrelay.ts';
import { withStore } from '../../src/cli/shared.ts';
import { runBanRemove } from '../../src/cli/ban.ts';
import type { ClientIdentity, Decision } from '../../src/dbrelay/types.ts';
import { recordingProxy, run } from './helpers.ts';
import { isRoot } from './accounts.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
// IDENT names the account running the clients; it must be a DB user of both servers: root.
const skip = isRoot ? false : 'needs root (IDENT must name root, a user of both databases)';

const ATTACKER = '127.0.0.2';
const NOT_MINE = `ws_ban_${randomBytes(3).toString('hex')}`;
let dir: string;
let identdPort: number;
let homeEnv: NodeJS.ProcessEnv;

before(async () => {
  dir = tempDir(cleanup, 'ws-dbrelay-bans-');
  if (!isRoot) return;
  const anyHome = await makeHome(cleanup);
  homeEnv = anyHome.env;
  identdPort = await freePort();
  // the relay asks the identd of the client's address: the attacker's too
  const identd = startWarpstone(cleanup, ['identd', '--listen', `127.0.0.1:${identdPort}`, '--listen', `${ATTACKER}:${identdPort}`], homeEnv);
  await identd.waitFor(/identd listening/);
});

type LogLine = Record<string, unknown> & { msg?: string };

/** A logger whose lines the test reads (WS_DBRELAY_TEST_LOG=1 also prints them). */
function capturedLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write: (line: string) => {
        lines.push(JSON.parse(line) as LogLine);
        if (process.env.WS_DBRELAY_TEST_LOG) process.stderr.write(line);
      },
    },
  );
  return { log, lines };
}

async function waitForLog(lines: LogLine[], match: (l: LogLine) => boolean, what: string, timeoutMs = 8_000): Promise<LogLine> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const found = lines.find(match);
    if (found) return found;
    if (Date.now() > until) throw new Error(`no log line ${what} within ${timeoutMs} ms; have:\n${lines.map((l) => l.msg).join('\n')}`);
    await sleep(25);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function startDbRelay(yaml: string, log: Logger): Promise<DbRelay> {
  const file = join(dir, `dbrelay-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(file, yaml);
  const relay = new DbRelay({ config: parseDbRelayConfig(yaml, file), handlers: { mysql: serveMysql, postgres: servePostgres }, createPolicy, log });
  await relay.start();
  cleanup.add(() => relay.stop());
  return relay;
}

function portOf(relay: DbRelay, name: string): number {
  const port = relay.listeners.find((l) => l.name === name)?.bound[0]?.port;
  assert.ok(port, `listener ${name} has a port`);
  return port;
}

function auditOf(path: string): LogLine[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as LogLine);
}

interface BanRow {
  prefix: string;
  until: string;
  bannedAt: string;
  offence: number;
  by: string;
  reason: string;
}

async function banList(home: Home): Promise<BanRow[]> {
  const r = await runWarpstone(['ban', 'list', '--home', home.dir, '--json'], home.env);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as BanRow[];
}

/** A HandshakeResponse41 for `user` (secure-connection auth, no TLS). */
function handshakeResponse(user: string): Buffer {
  const head = Buffer.alloc(32);
  head.writeUInt32LE((CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH) >>> 0, 0);
  head.writeUInt32LE(1 << 24, 4);
  head[8] = 45;
  return buildPacket(1, Buffer.concat([head, Buffer.from(`${user}\0`), Buffer.from([20]), Buffer.alloc(20, 7), Buffer.from('mysql_native_password\0')]));
}

/**
 * A MySQL client by hand from `from`: a greeting is answered with a handshake response for
 * `user`; an ERR packet ends the conversation (the client closes, as real ones do). Resolves
 * with the first packet and everything received, once the connection is closed.
 */
function scriptedMysql(port: number, from: string, user: string): Promise<{ first: Buffer; all: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    const chunks: Buffer[] = [];
    let first: Buffer | undefined;
    let unread: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the relay did not close the connection within 8 s'));
    }, 8_000);
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      unread = Buffer.concat([unread, d]);
      for (;;) {
        const r = readPacket(unread);
        if (r.kind !== 'packet') return;
        unread = r.rest;
        first ??= r.packet.raw;
        if (r.packet.payload[0] === 0x0a) socket.write(handshakeResponse(user));
        if (r.packet.payload[0] === 0xff) socket.end();
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ first: first ?? Buffer.alloc(0), all: Buffer.concat(chunks) });
    });
  });
}

/** A PostgreSQL client by hand from `from`: sends `bytes` at once, resolves with all it got once closed. */
function scriptedPostgres(port: number, from: string, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the relay did not close the connection within 8 s'));
    }, 8_000);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** The fields of a PostgreSQL ErrorResponse. */
function errorFields(bytes: Buffer): Map<string, string> {
  assert.equal(bytes[0], 0x45, `an ErrorResponse starts with 'E', got ${bytes.subarray(0, 8).toString('hex')}`);
  assert.equal(bytes.readInt32BE(1), bytes.length - 1, 'one message, all of it');
  const fields = new Map<string, string>();
  for (const part of bytes.subarray(5, bytes.length - 1).toString('utf8').split('\0')) if (part) fields.set(part[0] as string, part.slice(1));
  return fields;
}

// ---------------------------------------------------------------------------------------------

test('a scripted attacker from 127.0.0.2 crosses maxretry with other users: banned on every listener, ERR 1129 in place of the greeting and nothing reaches the database; 127.0.0.1 still works; released after bantime, longer the second time; `warpstone ban list` shows it, removing it admits again', { skip }, async () => {
  const home = await makeHome(cleanup);
  const proxy = await recordingProxy(3306);
  cleanup.add(() => proxy.close());
  const audit = join(dir, 'bans-audit.jsonl');
  const { log, lines } = capturedLog();
  const relay = await startDbRelay(
    `
audit: ${audit}
bans: { home: ${home.dir}, maxretry: 3, findtime: 1m, bantime: 6s, increment: 2, maxtime: 1h }
listeners:
  - { name: my, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:${proxy.port}" }
  - { name: pg, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres://127.0.0.1:5432" }
`,
    log,
  );
  const port = portOf(relay, 'my');
  const pgPort = portOf(relay, 'pg');

  // 1. Three refusals: root (as IDENT says) may not log in as someone else.
  for (let i = 1; i <= 3; i++) {
    const { first, all } = await scriptedMysql(port, ATTACKER, NOT_MINE);
    assert.equal(first[4], 0x0a, 'a real greeting first');
    const err = all.subarray(first.length);
    assert.equal(err[3], 2, 'the refusal follows the handshake response');
    assert.equal(err.readUInt16LE(5), 1045);
    assert.match(err.toString('utf8'), new RegExp(`identity 'root' \\(IDENT.*may not log in as database user '${NOT_MINE}'`));
  }
  assert.equal(proxy.connections.length, 3, 'each refused client cost one database connection');
  const issued = await waitForLog(lines, (l) => l.msg === 'source banned for 6 s', 'saying the source is banned');
  assert.equal(issued.prefix, `${ATTACKER}/32`);
  assert.match(String(issued.reason), /^3 failures in .*: db-mismatch x3$/);
  // The CLI takes seconds to start on a busy machine: ask it now, while the ban holds.
  const listed = banList(home);

  // 2. Banned: the exact refusal in place of the greeting, on every listener, nothing upstream.
  for (let i = 0; i < 2; i++) {
    const { all } = await scriptedMysql(port, ATTACKER, NOT_MINE);
    assert.deepEqual(all, bannedReply('mysql', ATTACKER));
    assert.equal(all.readUIntLE(0, 3), all.length - 4, 'one packet');
    assert.equal(all[3], 0, 'sequence 0: it stands where the greeting would');
    assert.equal(all[4], 0xff, 'an ERR packet');
    assert.equal(all.readUInt16LE(5), ER_HOST_IS_BLOCKED);
    assert.notEqual(all[7], 0x23, "no '#SQLSTATE' marker before the greeting");
    assert.equal(all.subarray(7).toString('utf8'), `warpstone dbrelay: host '${ATTACKER}' is blocked (banned after repeated refused logins, or by an admin); see 'warpstone ban list'`);
  }
  const pgBanned = await scriptedPostgres(pgPort, ATTACKER, buildEncryptionRequest('ssl'));
  assert.deepEqual(pgBanned, bannedReply('postgres', ATTACKER), 'the ErrorResponse in place of the answer to the SSLRequest');
  const fields = errorFields(pgBanned);
  assert.equal(fields.get('S'), 'FATAL');
  assert.equal(fields.get('C'), '28000');
  assert.equal(proxy.connections.length, 3, 'a banned client never reaches the database');
  const drops = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('connection dropped: source is banned'));
  assert.equal(drops.length, 1, 'three refusals within 10 s: one log line');
  assert.match(String(drops[0]?.source), /^127\.0\.0\.2:\d+$/);

  const banned = auditOf(audit).filter((l) => l.reason === 'banned');
  assert.deepEqual(
    banned.map((l) => [l.listener, l.protocol, l.decision, l.identity, l.dbUser, l.identityDetail]),
    [
      ['my', 'mysql', 'deny', null, null, 'not looked up: the source is banned'],
      ['my', 'mysql', 'deny', null, null, 'not looked up: the source is banned'],
      ['pg', 'postgres', 'deny', null, null, 'not looked up: the source is banned'],
    ],
  );
  for (const l of banned) assert.match(String(l.source), /^127\.0\.0\.2:\d+$/);

  // 3. The store has it: `warpstone ban list --home` showed it.
  const [row, ...others] = await listed;
  assert.equal(others.length, 0);
  assert.equal(row?.prefix, `${ATTACKER}/32`);
  assert.equal(row?.by, 'auto');
  assert.equal(row?.offence, 1);
  assert.match(row?.reason ?? '', /^3 failures in .*: db-mismatch x3$/);
  assert.ok(Date.parse(row?.until ?? '') > Date.now(), 'listed while it holds');

  // 4. Another source is not affected: the real client from 127.0.0.1 as root.
  const own = await run('mariadb', ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(port), '-u', 'root', '-N', '-B', '-e', 'SELECT 42']);
  assert.equal(own.stdout, '42\n', own.stderr);

  // 5. Released after bantime; a repeat offence bans twice as long (increment 2).
  await sleep(Math.max(0, Date.parse(row?.until ?? '') - Date.now()) + 100);
  const back = await scriptedMysql(port, ATTACKER, NOT_MINE);
  assert.equal(back.first[4], 0x0a, 'a greeting again after bantime');
  for (let i = 0; i < 2; i++) await scriptedMysql(port, ATTACKER, NOT_MINE);
  await waitForLog(lines, (l) => l.msg === 'source banned for 12 s (offence 2)', 'about the second, longer ban');
  const [second] = await withStore(home.dir, (store) => store.listBans());
  assert.equal(second?.offence, 2);
  assert.equal((second?.until.getTime() ?? 0) - (second?.bannedAt.getTime() ?? 0), 12_000);
  assert.deepEqual((await scriptedMysql(port, ATTACKER, NOT_MINE)).all, bannedReply('mysql', ATTACKER));

  // 6. Removed from the store (what `warpstone ban remove` does; the command itself is in the
  //    next test), the running relay admits the source within about a second.
  const removed = await runBanRemove(home.dir, ATTACKER);
  assert.deepEqual(removed, { prefix: `${ATTACKER}/32`, lifted: true, coveredBy: [] });
  await waitForLog(lines, (l) => l.msg === 'ban removed by an admin; source admitted again', 'about the removal');
  assert.equal((await scriptedMysql(port, ATTACKER, NOT_MINE)).first[4], 0x0a, 'admitted again');
});

test('an admin ban of 127.0.0.1 (`warpstone ban add`) as the real clients see it: mariadb, psql, mysql2 and pg; `ban remove` admits again', { skip }, async () => {
  const home = await makeHome(cleanup);
  const { log, lines } = capturedLog();
  const relay = await startDbRelay(
    `
bans: { home: ${home.dir} }
listeners:
  - { name: my, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:3306" }
  - { name: pg, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${identdPort} }, upstream: "postgres://127.0.0.1:5432" }
`,
    log,
  );
  const port = portOf(relay, 'my');
  const pgPort = portOf(relay, 'pg');
  const added = await runWarpstone(['ban', 'add', '127.0.0.1', '--for', '10m', '--reason', 'test', '--home', home.dir], home.env);
  assert.match(added.stdout, /^banned 127\.0\.0\.1\/32 for 10 min/, added.stderr);
  await waitForLog(lines, (l) => l.msg === 'ban added by an admin' && l.prefix === '127.0.0.1/32', 'about the admin ban');
  const blocked = "warpstone dbrelay: host '127.0.0.1' is blocked (banned after repeated refused logins, or by an admin); see 'warpstone ban list'";

  // mariadb turns TLS on by default, so it will not vouch for an error before TLS, but shows it.
  const mariadbDefault = await run('mariadb', ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(port), '-u', 'root', '-e', 'SELECT 1']);
  assert.equal(mariadbDefault.code, 1);
  assert.equal(mariadbDefault.stderr, `ERROR 2002 (HY000): Received error packet before completion of TLS handshake. The authenticity of the following error cannot be verified: 1129 - ${blocked}\n`);
  const mariadbClear = await run('mariadb', ['--no-defaults', '--skip-ssl', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(port), '-u', 'root', '-e', 'SELECT 1']);
  assert.equal(mariadbClear.stderr, `ERROR 1129 (HY000): ${blocked}\n`);
  await assert.rejects(mysql.createConnection({ host: '127.0.0.1', port, user: 'root' }), (err: Error & { code?: string; errno?: number }) => {
    assert.equal(err.code, 'ER_HOST_IS_BLOCKED');
    assert.equal(err.errno, 1129);
    assert.equal(err.message, blocked);
    return true;
  });

  // libpq (15.10+, 16.6+, 17.2+) does not show text received before TLS was negotiated (CVE-2024-10977).
  const psqlPrefer = await run('psql', ['-X', '-w', `host=127.0.0.1 port=${pgPort} user=root dbname=postgres`, '-c', 'SELECT 1']);
  assert.equal(psqlPrefer.code, 2);
  assert.match(psqlPrefer.stderr, /failed: server sent an error response during SSL exchange/);
  const psqlClear = await run('psql', ['-X', '-w', `host=127.0.0.1 port=${pgPort} user=root dbname=postgres sslmode=disable`, '-c', 'SELECT 1']);
  assert.match(psqlClear.stderr, new RegExp(`failed: FATAL:  ${blocked.replace(/[()'.]/g, '\\$&')}\\n`));
  const client = new pg.Client({ host: '127.0.0.1', port: pgPort, user: 'root', database: 'postgres' });
  await assert.rejects(client.connect(), (err: Error & { code?: string; severity?: string }) => {
    assert.equal(err.code, '28000');
    assert.equal(err.severity, 'FATAL');
    assert.equal(err.message, blocked);
    return true;
  });

  const removed = await runWarpstone(['ban', 'remove', '127.0.0.1', '--home', home.dir], home.env);
  assert.equal(removed.stdout, 'unbanned 127.0.0.1/32\n', removed.stderr);
  await waitForLog(lines, (l) => l.msg === 'ban removed by an admin; source admitted again', 'about the removal');
  const own = await run('psql', ['-X', '-w', '-A', '-t', `host=127.0.0.1 port=${pgPort} user=root dbname=postgres sslmode=disable`, '-c', 'SELECT current_user']);
  assert.equal(own.stdout, 'root\n', own.stderr);
});

test('a TLS-first listener: certificates from another CA count (tls-unknown-ca); a banned source is dropped before any TLS byte', { skip }, async () => {
  const home = await makeHome(cleanup);
  const stranger = await makeHome(cleanup);
  const foreign = await stranger.issue('user', 'root');
  const audit = join(dir, 'tls-bans-audit.jsonl');
  const { log, lines } = capturedLog();
  const relay = await startDbRelay(
    `
home: ${home.dir}
audit: ${audit}
bans: { maxretry: 2, bantime: 1m }
listeners:
  - { name: certs, kind: tls, listen: "127.0.0.1:0", upstream: "mysql://127.0.0.1:3306" }
`,
    log,
  );
  const port = portOf(relay, 'certs');
  const pem = readFileSync(foreign, 'utf8');
  const attempt = (): Promise<{ secure: boolean; data: Buffer; error?: string }> =>
    new Promise((resolve) => {
      const raw = net.connect({ host: '127.0.0.1', port, localAddress: ATTACKER });
      raw.on('error', () => undefined);
      const socket = tls.connect({ socket: raw, servername: 'localhost', key: pem, cert: pem, ca: home.caPem });
      const chunks: Buffer[] = [];
      let secure = false;
      let error: string | undefined;
      socket.on('secureConnect', () => (secure = true));
      socket.on('data', (d: Buffer) => {
        // the greeting comes first: answer it, so the relay decides
        if (chunks.length === 0) socket.write(handshakeResponse('root'));
        chunks.push(d);
      });
      socket.on('error', (err) => (error = err.message));
      socket.on('close', () => resolve({ secure, data: Buffer.concat(chunks), ...(error ? { error } : {}) }));
    });
  for (let i = 0; i < 2; i++) {
    const r = await attempt();
    assert.ok(r.secure, 'TLS works; the certificate is refused in the protocol');
    assert.match(r.data.toString('utf8'), /could not tell who is connecting \(client certificate, tls: certificate of 'root' .* not verified: SELF_SIGNED_CERT_IN_CHAIN\)/);
  }
  const issued = await waitForLog(lines, (l) => l.msg === 'source banned for 1 min', 'saying the source is banned');
  assert.match(String(issued.reason), /: tls-unknown-ca x2$/);
  const dropped = await attempt();
  assert.equal(dropped.secure, false, 'no TLS handshake');
  assert.equal(dropped.data.length, 0);
  assert.ok(dropped.error, 'the client sees the connection end');
  const last = auditOf(audit).at(-1);
  assert.equal(last?.reason, 'banned');
  assert.equal(last?.identitySource, 'certificate');
});

test('no identity from IDENT does not count: a host without an identd is refused every time, never banned', { skip }, async () => {
  const home = await makeHome(cleanup);
  const nobodyListens = await freePort();
  const relay = await startDbRelay(
    `
bans: { home: ${home.dir}, maxretry: 2 }
listeners:
  - { name: my, kind: tcp, listen: "127.0.0.1:0", ident: { port: ${nobodyListens} }, upstream: "mysql://127.0.0.1:3306" }
`,
    capturedLog().log,
  );
  const port = portOf(relay, 'my');
  for (let i = 0; i < 4; i++) {
    const { first, all } = await scriptedMysql(port, ATTACKER, 'root');
    assert.equal(first[4], 0x0a, `attempt ${i + 1}: greeted, not banned`);
    assert.match(all.toString('utf8'), /could not tell who is connecting \(IDENT, ident: no answer/);
  }
  assert.deepEqual(await banList(home), []);
});

// ---------------------------------------------------------------------------------------------
// Without servers

test('what counts as a failure: mismatches, refused unknown users, certificate problems; not IDENT, not allowed logins, not configuration', () => {
  const deny = (reason: Decision['reason']): Decision => ({ allow: false, reason, message: 'x' });
  const allow = (reason: Decision['reason']): Decision => ({ allow: true, reason, message: 'x' });
  const ident: ClientIdentity = { name: 'root', source: 'ident' };
  const noIdent: ClientIdentity = { name: undefined, source: 'ident', detail: 'ident: NO-USER' };
  const cert = (problem: ClientIdentity['problem']): ClientIdentity => ({ name: undefined, source: 'certificate', ...(problem ? { problem } : {}) });
  assert.equal(failureOf(ident, deny('mismatch')), 'db-mismatch');
  assert.equal(failureOf(ident, deny('unknown-db-user')), 'db-unknown-user');
  assert.equal(failureOf(ident, allow('unknown-db-user')), undefined, 'not strict: the database refuses it');
  assert.equal(failureOf(ident, allow('match')), undefined);
  assert.equal(failureOf(noIdent, deny('no-identity')), undefined);
  assert.equal(failureOf(ident, deny('unparsable')), undefined);
  assert.equal(failureOf(ident, deny('refused-by-config')), undefined);
  assert.equal(failureOf(cert('no-certificate'), deny('no-identity')), 'tls-no-certificate');
  assert.equal(failureOf(cert('unknown-ca'), deny('no-identity')), 'tls-unknown-ca');
  assert.equal(failureOf(cert('expired'), deny('no-identity')), 'tls-expired');
  assert.equal(failureOf(cert('not-yet-valid'), deny('no-identity')), 'tls-not-yet-valid');
  assert.equal(failureOf(cert('revoked'), deny('no-identity')), 'tls-revoked');
  assert.equal(failureOf(cert('unknown-certificate'), deny('no-identity')), 'tls-unknown-certificate');
  assert.equal(failureOf(cert(undefined), deny('no-identity')), undefined, 'the store failing is not the client');
});

test('the banned refusals byte by byte; IPv4-mapped addresses are shown as IPv4', () => {
  const message = "warpstone dbrelay: host '192.0.2.7' is blocked (banned after repeated refused logins, or by an admin); see 'warpstone ban list'";
  const body = Buffer.from(message, 'utf8');
  const my = bannedReply('mysql', '::ffff:192.0.2.7');
  assert.deepEqual(my.subarray(0, 7), Buffer.from([body.length + 3, 0, 0, 0, 0xff, 0x69, 0x04]));
  assert.deepEqual(my.subarray(7), body);
  const pgReply = bannedReply('postgres', '192.0.2.7');
  const fields = errorFields(pgReply);
  assert.deepEqual([...fields], [
    ['S', 'FATAL'],
    ['V', 'FATAL'],
    ['C', '28000'],
    ['M', message],
  ]);
});

function configError(text: string): ConfigError {
  try {
    parseDbRelayConfig(text, '/etc/dbrelay.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail('expected a ConfigError');
}

test('the bans: section: defaults as the relay flags, every setting, and errors naming line and field', async () => {
  const home = await makeHome(cleanup);
  const listener = 'listeners:\n  - { name: my, kind: tcp, listen: "127.0.0.1:3307", upstream: "mysql://127.0.0.1:3306" }\n';
  const plain = parseDbRelayConfig(`bans: { home: ${home.dir} }\n${listener}`, '/etc/dbrelay.yaml');
  assert.equal(plain.bans?.store, join(home.dir, 'store.sqlite'));
  assert.deepEqual(
    { ...plain.bans?.settings, ignore: plain.bans?.settings.ignore.toStrings() },
    { maxRetry: 5, findTimeMs: 600_000, banTimeMs: 600_000, increment: 2, maxBanTimeMs: 604_800_000, prefixLengths: { v4: 32, v6: 64 }, ignore: [], maxTracked: 10_000, pollMs: 1_000 },
  );
  assert.equal(parseDbRelayConfig(listener, '/etc/dbrelay.yaml').bans, undefined, 'no section, no bans');
  const full = parseDbRelayConfig(
    `home: ${home.dir}\nbans:\n  maxretry: 3\n  findtime: 1h30m\n  bantime: 90\n  increment: 1.5\n  maxtime: 1d\n  ignore: [10.0.0.0/8, "::1"]\n  prefix_v4: 24\n  prefix_v6: 48\n${listener}`,
    '/etc/dbrelay.yaml',
  );
  const s = full.bans?.settings;
  assert.deepEqual([s?.maxRetry, s?.findTimeMs, s?.banTimeMs, s?.increment, s?.maxBanTimeMs, s?.prefixLengths], [3, 5_400_000, 90_000, 1.5, 86_400_000, { v4: 24, v6: 48 }]);
  assert.deepEqual(s?.ignore.toStrings(), ['10.0.0.0/8', '::1/128']);
  assert.equal(full.bans?.home, home.dir, 'the top-level home by default');
  const described = describeDbRelayConfig(full);
  assert.match(described, /^bans: 3 failures within 1 h 30 min ban a source \(\/24 IPv4, \/48 IPv6\) for 1 min 30 s, x1\.5 per repeat up to 1 day; never banned: 10\.0\.0\.0\/8, ::1\/128; kept in .*store\.sqlite/m);
  assert.match(described, /^ {2}counted: .* on 'my'; a banned MySQL client gets ERR 1129/m);

  const at = (e: ConfigError): [number | undefined, string | undefined] => [e.line, e.field];
  assert.deepEqual(at(configError(`bans:\n  home: ${home.dir}\n  maxretry: 0\n${listener}`)), [3, 'bans.maxretry']);
  const unit = configError(`bans:\n  home: ${home.dir}\n  bantime: "10"\n${listener}`);
  assert.deepEqual(at(unit), [3, 'bans.bantime']);
  assert.match(unit.message, /'10' needs a unit \(did you mean '10s' or '10m'\?\)/);
  const ignore = configError(`bans:\n  home: ${home.dir}\n  ignore: [10.0.0.0/8, nonsense]\n${listener}`);
  assert.deepEqual(at(ignore), [3, 'bans.ignore.1']);
  assert.match(ignore.message, /bans\.ignore\.1: "nonsense" is not an IP address or CIDR block/);
  assert.deepEqual(at(configError(`bans:\n  home: ${home.dir}\n  bantime: 0.1\n${listener}`)), [3, 'bans.bantime']);
  const cap = configError(`bans:\n  home: ${home.dir}\n  bantime: 2h\n  maxtime: 1h\n${listener}`);
  assert.deepEqual(at(cap), [4, 'bans.maxtime']);
  assert.match(cap.message, /maxtime is shorter than bantime/);
  const typo = configError(`bans:\n  home: ${home.dir}\n  max_retry: 3\n${listener}`);
  assert.deepEqual(at(typo), [3, 'bans.max_retry']);
  const nowhere = configError(`bans:\n  home: ${join(dir, 'no-such-home')}\n${listener}`);
  assert.deepEqual(at(nowhere), [2, 'bans.home']);
  assert.match(nowhere.message, /store\.sqlite does not exist: bans are kept in a warpstone store/);
});
