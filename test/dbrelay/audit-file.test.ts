// The audit file: one JSON line per decision, appended (never truncated), created 0640, and a
// clear error when it cannot be opened.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, tempDir } from '../helpers/harness.ts';
import { silentLogger } from '../../src/common/log.ts';
import { AuditFile } from '../../src/dbrelay/audit-file.ts';
import type { DbAuditEvent } from '../../src/dbrelay/types.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

const event = (over: Partial<DbAuditEvent>): DbAuditEvent => ({
  time: new Date('2025-01-02T03:04:05.678Z'),
  listener: 'dev',
  protocol: 'mysql',
  source: '127.0.0.1:40000',
  identity: 'alice',
  identitySource: 'ident',
  identityDetail: 'ident: USERID from 127.0.0.1:113 (UNIX)',
  dbUser: 'alice',
  decision: 'allow',
  reason: 'match',
  message: "identity 'alice' may log in as database user 'alice'",
  ...over,
});

test('one JSON line per decision, appended, file created 0640', () => {
  const dir = tempDir(cleanup);
  const path = join(dir, 'audit.jsonl');
  const first = AuditFile.open(path, silentLogger());
  first.record(event({}));
  first.record(event({ identity: undefined, identityDetail: 'ident: NO-USER', dbUser: 'root', decision: 'deny', reason: 'no-identity', message: 'refused' }));
  first.close();
  assert.equal(statSync(path).mode & 0o777, 0o640);
  const again = AuditFile.open(path, silentLogger());
  again.record(event({ dbUser: undefined, reason: 'unparsable' }));
  again.close();
  const lines = readFileSync(path, 'utf8').split('\n');
  assert.equal(lines.pop(), '', 'ends with a newline');
  assert.equal(lines.length, 3, 'appended, not truncated');
  assert.deepEqual(JSON.parse(lines[0] as string), {
    time: '2025-01-02T03:04:05.678Z',
    listener: 'dev',
    protocol: 'mysql',
    source: '127.0.0.1:40000',
    identity: 'alice',
    identitySource: 'ident',
    identityDetail: 'ident: USERID from 127.0.0.1:113 (UNIX)',
    dbUser: 'alice',
    decision: 'allow',
    reason: 'match',
    message: "identity 'alice' may log in as database user 'alice'",
  });
  const denied = JSON.parse(lines[1] as string) as Record<string, unknown>;
  assert.equal(denied.identity, null);
  assert.equal(denied.decision, 'deny');
  assert.equal((JSON.parse(lines[2] as string) as Record<string, unknown>).dbUser, null);
});

test('a name with a newline stays inside its line', () => {
  const path = join(tempDir(cleanup), 'audit.jsonl');
  const sink = AuditFile.open(path, silentLogger());
  sink.record(event({ dbUser: 'root\n{"decision":"allow"}' }));
  sink.close();
  const text = readFileSync(path, 'utf8');
  assert.equal(text.split('\n').length, 2);
  assert.equal((JSON.parse(text) as Record<string, unknown>).dbUser, 'root\n{"decision":"allow"}');
});

test('an audit file that cannot be opened is a clear error; no file means log only', () => {
  const dir = tempDir(cleanup);
  assert.throws(() => AuditFile.open(dir, silentLogger()), (err: Error & { code?: string }) => err.code === 'WS_DBRELAY_AUDIT' && err.message.includes(dir));
  assert.throws(() => AuditFile.open(join(dir, 'missing', 'a.jsonl'), silentLogger()), /cannot be opened for appending: ENOENT/);
  const logOnly = AuditFile.open(undefined, silentLogger());
  logOnly.record(event({}));
  logOnly.close();
});
