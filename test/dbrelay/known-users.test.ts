// Known DB users: a fixed list, nothing configured, and the periodic query against the real
// MariaDB and PostgreSQL with the relay's own account; a failed query keeps the last good list
// and says so in the log; before any success the answer is "cannot tell" (undefined).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { silentLogger, type Logger } from '../../src/common/log.ts';
import { QueriedKnownUsers, createKnownUsers, queryKnownUsers } from '../../src/dbrelay/known-users.ts';
import type { KnownUsersSource } from '../../src/dbrelay/config.ts';
import { recordingProxy } from './helpers.ts';
import { createMariadbUser, createPostgresUser, psqlAdmin } from './accounts.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

type QuerySource = Extract<KnownUsersSource, { kind: 'query' }>;

function mysqlSource(port = 3306): QuerySource {
  return { kind: 'query', protocol: 'mysql', address: { host: '127.0.0.1', port }, user: 'root', password: undefined, database: undefined, everyMs: 60_000, display: `mysql://root@127.0.0.1:${port}` };
}

function postgresSource(port = 5432): QuerySource {
  return { kind: 'query', protocol: 'postgres', address: { host: '127.0.0.1', port }, user: 'postgres', password: undefined, database: 'postgres', everyMs: 60_000, display: `postgres://postgres@127.0.0.1:${port}/postgres` };
}

/** A pino logger whose lines are kept for assertions. */
function capturingLogger(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino<never>({ level: 'info' }, sink), lines: () => lines };
}

test('a list, and nothing configured (every DB user counts as existing)', async () => {
  const list = createKnownUsers({ kind: 'list', users: ['alice', 'app'] }, silentLogger());
  assert.equal(await list.has('alice'), true);
  assert.equal(await list.has('mallory'), false);
  const none = createKnownUsers({ kind: 'none' }, silentLogger());
  assert.equal(await none.has('anyone'), true);
});

test('MariaDB: SELECT User FROM mysql.user with the relay account', async () => {
  const name = `ws_ku_${randomBytes(3).toString('hex')}`;
  createMariadbUser(cleanup, name, 'pw');
  const users = await queryKnownUsers(mysqlSource());
  assert.ok(users.has(name), `${name} in ${[...users].join(',')}`);
  assert.ok(users.has('root'));
  assert.ok(!users.has(''), 'the anonymous user is no name');
  const known = new QueriedKnownUsers(mysqlSource(), silentLogger());
  known.start();
  cleanup.add(() => known.stop());
  assert.equal(await known.has(name), true, 'the first lookup waits for the first query');
  assert.equal(await known.has(`${name}_nope`), false);
});

test('PostgreSQL: roles that can log in', async () => {
  const name = `ws_ku_${randomBytes(3).toString('hex')}`;
  createPostgresUser(cleanup, name, 'pw');
  const nologin = `${name}_group`;
  psqlAdmin(`CREATE ROLE "${nologin}" NOLOGIN`);
  cleanup.add(() => psqlAdmin(`DROP ROLE IF EXISTS "${nologin}"`));
  const users = await queryKnownUsers(postgresSource());
  assert.ok(users.has(name));
  assert.ok(users.has('postgres'));
  assert.ok(!users.has(nologin), 'a role that cannot log in is not a user');
});

test('a failed query keeps the last good list and logs; before any success the answer is undefined', async () => {
  const name = `ws_ku_${randomBytes(3).toString('hex')}`;
  createMariadbUser(cleanup, name, 'pw');
  const proxy = await recordingProxy(3306);
  const { log, lines } = capturingLogger();
  const known = new QueriedKnownUsers(mysqlSource(proxy.port), log);
  known.start();
  cleanup.add(() => known.stop());
  assert.equal(await known.has(name), true);
  await proxy.close();
  await known.refresh();
  assert.equal(await known.has(name), true, 'still known after the database went away');
  const failed = lines().find((l) => l.msg === 'known DB users query failed');
  assert.ok(failed, JSON.stringify(lines()));
  assert.equal(failed.url, `mysql://root@127.0.0.1:${proxy.port}`);
  assert.equal(typeof failed.keeping, 'number');
  assert.ok(!JSON.stringify(lines()).includes('password'), 'no password field in the log');

  const nowhere = new QueriedKnownUsers(mysqlSource(await freePort()), silentLogger());
  nowhere.start();
  cleanup.add(() => nowhere.stop());
  assert.equal(await nowhere.has(name), undefined);
});
