// The DB user as the relay reads it must be the user the server logs in, byte for byte, or the
// non-strict "unknown DB user → log and allow" rule lets an identity in as someone else.
// MariaDB: a latin1 client (mysql2, charset LATIN1_SWEDISH_CI) sends 0x80 for the user `ws_x€_…`;
// the server's latin1 is Windows-1252 and logs in that user, so the relay must read "€" too and
// refuse identity 'alice'. PostgreSQL: a `user` parameter that is not valid UTF-8 is never let
// through as "unknown" (the server compares raw bytes; the relay's U+FFFD reading is not them).
// Owns: test/dbrelay/username-decoding.test.ts. Must not: touch data (creates and drops one ws_* user).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import mysql from 'mysql2/promise';
import { serveMysql } from '../../src/dbrelay/mysql-session.ts';
import { servePostgres, serverRoleNameFromBytes } from '../../src/dbrelay/postgres-session.ts';
import { PG_CODE, parseStartup } from '../../src/dbrelay/postgres.ts';
import { queryKnownUsers } from '../../src/dbrelay/known-users.ts';
import { createPolicy } from '../../src/dbrelay/policy.ts';
import type { ClientIdentity } from '../../src/dbrelay/types.ts';
import { run } from './helpers.ts';
import { MARIADB_PORT, PG_PORT, TAG, startSessionRelay } from './session-harness.ts';

const EURO_USER = `ws_x€_${TAG}`;
const PASSWORD = 'pw-Secret1';
const alice: ClientIdentity = { name: 'alice', source: 'certificate' };

async function mariadbUtf8(sql: string): Promise<void> {
  const ran = await run('mariadb', ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(MARIADB_PORT), '-u', 'root', '--default-character-set=utf8mb4', '-e', sql]);
  if (ran.code !== 0) throw new Error(`mariadb admin failed: ${ran.stderr}`);
}

before(async () => {
  await mariadbUtf8(`CREATE USER IF NOT EXISTS '${EURO_USER}'@'%' IDENTIFIED BY '${PASSWORD}'`);
});

after(async () => {
  await mariadbUtf8(`DROP USER IF EXISTS '${EURO_USER}'@'%'`);
});

/**
 * mysql2 as a latin1 client sending byte 0x80 in the user name. mysql2 encodes latin1 with Node's
 * ISO-8859-1 (U+0080 → 0x80; it would send "€" as 0xAC), so the name is given as U+0080: the
 * bytes on the wire are what an attacker's client sends.
 */
async function latin1Login(port: number): Promise<string> {
  const conn = await mysql.createConnection({ host: '127.0.0.1', port, user: EURO_USER.replace('€', '\u0080'), password: PASSWORD, charset: 'LATIN1_SWEDISH_CI', connectTimeout: 10_000 });
  try {
    // hex: mysql2 would decode the answer as ISO-8859-1 too
    const [rows] = await conn.query("select hex(substring_index(current_user(), '@', 1)) as who");
    return Buffer.from(String((rows as Array<{ who: string }>)[0]?.who), 'hex').toString('utf8');
  } finally {
    await conn.end();
  }
}

test('MariaDB: a latin1 client sending 0x80 is judged as the server reads it (€), so identity alice is refused', async () => {
  // The premise, straight to the server: byte 0x80 in latin1 logs in the real user `ws_x€_…`.
  assert.equal(await latin1Login(MARIADB_PORT), EURO_USER, 'MariaDB reads latin1 0x80 as the euro sign');
  // Real known users, as the relay's known_users_query reads them.
  const known = await queryKnownUsers({ kind: 'query', protocol: 'mysql', address: { host: '127.0.0.1', port: MARIADB_PORT }, user: 'root', password: undefined, database: undefined, everyMs: 60_000, display: 'mysql://root@127.0.0.1:3306' });
  assert.ok(known.has(EURO_USER), 'the known-users query sees the euro user');
  const relay = await startSessionRelay({ handler: serveMysql, upstreamPort: MARIADB_PORT, identity: alice, known, strict: false });
  try {
    const err = await latin1Login(relay.port).then(
      (who) => assert.fail(`identity alice got in as ${who}`),
      (e: { message: string; errno?: number; sqlState?: string }) => e,
    );
    assert.equal(err.errno, 1045);
    assert.equal(err.sqlState, '28000');
    // mysql2 decodes the message as ISO-8859-1 (the client's charset); the relay sent UTF-8.
    assert.match(Buffer.from(err.message, 'latin1').toString('utf8'), /identity 'alice' \(client certificate\) may not log in as database user 'ws_x€_/);
    const event = await relay.waitForAudit((e) => e.decision === 'deny');
    assert.equal(event.dbUser, EURO_USER, 'audited under the name the server would have logged in');
    assert.equal(event.reason, 'mismatch');
  } finally {
    await relay.close();
  }
});

test('MariaDB: a converted latin1 name that does not exist is refused even when not strict', async () => {
  // 0xE9 in latin1 is "é": no such user exists, but a converted name never counts as "unknown → allow".
  const known = new Set(['root']);
  const relay = await startSessionRelay({ handler: serveMysql, upstreamPort: MARIADB_PORT, identity: alice, known, strict: false });
  try {
    const conn = mysql.createConnection({ host: '127.0.0.1', port: relay.port, user: `ws_jé_${TAG}`, password: PASSWORD, charset: 'LATIN1_SWEDISH_CI', connectTimeout: 10_000 });
    const err = await conn.then(
      async (c) => {
        await c.end();
        return assert.fail('the login went through');
      },
      (e: { message: string; errno?: number }) => e,
    );
    assert.equal(err.errno, 1045);
    assert.match(err.message, /warpstone dbrelay: database user 'ws_j.+_\w+' does not exist in the database, but the name was converted/);
    const event = await relay.waitForAudit((e) => e.reason === 'unknown-db-user');
    assert.equal(event.decision, 'deny');
  } finally {
    await relay.close();
  }
});

test('policy: "unknown DB user" with a lossy name is refused when not strict; a plain unknown name is still let through', async () => {
  const decide = createPolicy({ strict: false, mapping: new Map(), knownUsers: { has: async () => false } });
  const plain = await decide({ identity: alice, dbUser: 'ghost' });
  assert.equal(plain.allow, true);
  assert.equal(plain.reason, 'unknown-db-user');
  const lossy = await decide({ identity: alice, dbUser: 'gh\uFFFDst', lossyName: 'the user parameter is not valid UTF-8' });
  assert.equal(lossy.allow, false);
  assert.equal(lossy.reason, 'unknown-db-user');
  assert.match(lossy.message, /converted \(the user parameter is not valid UTF-8\)/);
  const unconvertible = await decide({ identity: alice, dbUser: undefined, parseProblem: 'non-ASCII in charset 28', lossyName: 'non-ASCII in charset 28' });
  assert.equal(unconvertible.allow, false, 'a name that could not be converted is not "unparsable → allow"');
  // A match still wins: the mapping is exact, the conversion cannot widen it.
  const matched = await createPolicy({ strict: false, mapping: new Map([['alice', ['jé']]]), knownUsers: { has: async () => true } })({ identity: alice, dbUser: 'jé', lossyName: 'latin1' });
  assert.equal(matched.allow, true);
});

/** A StartupMessage whose `user` value is the given raw bytes. */
function startupWithUserBytes(user: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from('user\0'), user, Buffer.from('\0database\0postgres\0\0')]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(body.length + 8, 0);
  head.writeInt32BE(PG_CODE.PROTOCOL_3_0, 4);
  return Buffer.concat([head, body]);
}

test('PostgreSQL: the user parameter keeps its raw bytes; invalid UTF-8 (or a cut inside a character) is lossy', () => {
  const invalid = Buffer.from([0x67, 0x68, 0xff, 0x73, 0x74]);
  const parsed = parseStartup(startupWithUserBytes(invalid));
  assert.equal(parsed.kind, 'startup');
  if (parsed.kind !== 'startup') return;
  assert.deepEqual(parsed.startup.userBytes, invalid);
  const role = serverRoleNameFromBytes(invalid);
  assert.equal(role.user, 'gh\uFFFDst');
  assert.match(role.lossy ?? '', /not valid UTF-8/);
  assert.deepEqual(serverRoleNameFromBytes(Buffer.from('jé')), { user: 'jé' }, 'valid UTF-8 is exact');
  assert.deepEqual(serverRoleNameFromBytes(Buffer.from('a\uFFFDb')), { user: 'a\uFFFDb' }, 'a real U+FFFD sent as UTF-8 is exact');
  const cutInside = serverRoleNameFromBytes(Buffer.from('é'.repeat(40)));
  assert.equal(cutInside.user, `${'é'.repeat(31)}\uFFFD`);
  assert.match(cutInside.lossy ?? '', /once cut to 63 bytes/);
});

test('PostgreSQL: a user parameter that is not valid UTF-8 is refused as unknown even when not strict', async () => {
  const relay = await startSessionRelay({ handler: servePostgres, upstreamPort: PG_PORT, identity: alice, known: new Set(['postgres']), strict: false });
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const socket = net.connect(relay.port, '127.0.0.1', () => socket.write(startupWithUserBytes(Buffer.from([0x67, 0x68, 0xff, 0x73, 0x74]))));
      let got = Buffer.alloc(0);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('no answer within 10 s'));
      }, 10_000);
      socket.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(got);
      });
    });
    assert.equal(reply[0], 0x45, 'an ErrorResponse');
    const text = reply.toString('utf8');
    assert.match(text, /C28000/);
    assert.match(text, /warpstone dbrelay: database user 'gh\uFFFDst' does not exist in the database, but the name was converted \(the user parameter is not valid UTF-8/);
    const event = await relay.waitForAudit((e) => e.protocol === 'postgres');
    assert.equal(event.decision, 'deny');
    assert.equal(event.reason, 'unknown-db-user');
  } finally {
    await relay.close();
  }
});
