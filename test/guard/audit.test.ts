// The audit log on a real store and a real file: what each event becomes, the JSON lines,
// batched inserts, a file rotated or removed under it, the bounded queue, a clear start error.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync, renameSync, unlinkSync, existsSync, statSync } from 'node:fs';
import { silentLogger } from '../../src/common/log.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/store.ts';
import { RelayEvents } from '../../src/ops/events.ts';
import { AuditLog } from '../../src/guard/audit.ts';
import { StateError } from '../../src/common/errors.ts';
import { Cleanup, tempDir } from '../helpers/harness.ts';
import { captureLog } from './capture-log.ts';
import { sleep } from '../helpers/tls-clients.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());


async function rig(options: { flushMs?: number; batchRows?: number; maxQueue?: number; file?: string | null } = {}) {
  const dir = tempDir(cleanup);
  const store: Store = await openSqliteStore(join(dir, 'store.sqlite'), { create: true });
  cleanup.add(() => store.close());
  const events = new RelayEvents();
  const { log, lines } = captureLog();
  const file = options.file === null ? undefined : (options.file ?? join(dir, 'audit.jsonl'));
  const audit = new AuditLog(store, events, log, {
    ...(file ? { file } : {}),
    flushMs: options.flushMs ?? 3_600_000,
    ...(options.batchRows ? { batchRows: options.batchRows } : {}),
    ...(options.maxQueue ? { maxQueue: options.maxQueue } : {}),
  });
  await audit.start();
  cleanup.add(() => audit.stop());
  const fileLines = (path = file as string): Array<Record<string, unknown>> =>
    readFileSync(path, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { store, events, audit, file: file as string, fileLines, logLines: lines };
}

const t = (s: number): Date => new Date(Date.UTC(2030, 0, 1, 0, 0, s));

test('stream open, refusal and close, a refused handshake and a ban: one line and one row each', async () => {
  const r = await rig();
  r.events.emit('stream-open', { time: t(1), id: 7, identity: 'alice', source: '127.0.0.1:5000', tunnel: 'web', agent: 'box', target: 'web:80' });
  r.events.emit('stream-close', { time: t(2), id: 7, identity: 'alice', source: '127.0.0.1:5000', tunnel: 'web', agent: 'box', bytesIn: 10, bytesOut: 20, durationMs: 1000.4, reason: 'closed' });
  r.events.emit('stream-refused', { time: t(3), identity: 'bob', source: '127.0.0.1:5001', tunnel: 'db', status: 403, reason: 'not-granted', message: "user 'bob' is not granted tunnel 'db'" });
  // the failure that goes with that refusal carries the tunnel: it must not make a second record
  r.events.emit('failure', { time: t(3), source: '127.0.0.1:5001', reason: 'not-granted', identity: 'bob', tunnel: 'db', detail: 'x' });
  r.events.emit('failure', { time: t(4), source: '192.0.2.9:6000', reason: 'tls-expired', identity: 'oldtimer', detail: 'expired 3 days ago' });
  r.events.emit('ban-issued', { time: t(5), address: '192.0.2.9/32', until: t(605), failures: 5, offence: 1, reason: '5 failures in 3 s: tls-unknown-ca x5' });
  // events that are not audited
  r.events.emit('bytes', { tunnel: 'web', identity: 'alice', up: 1, down: 2 });
  r.events.emit('handshake-ok', { time: t(6), source: '127.0.0.1:5000', identity: 'alice', role: 'user', resumed: false });
  await r.audit.flush();

  const lines = r.fileLines();
  assert.deepEqual(lines.map((l) => l.kind), ['stream-open', 'stream-close', 'stream-refused', 'handshake-refused', 'banned']);
  assert.deepEqual(lines[0], { time: t(1).toISOString(), kind: 'stream-open', identity: 'alice', source: '127.0.0.1:5000', tunnel: 'web', target: 'web:80', bytesIn: null, bytesOut: null, durationMs: null, reason: null });
  assert.deepEqual([lines[1]?.bytesIn, lines[1]?.bytesOut, lines[1]?.durationMs, lines[1]?.reason], [10, 20, 1000, 'closed']);
  assert.equal(lines[2]?.reason, "not-granted (403): user 'bob' is not granted tunnel 'db'");
  assert.deepEqual([lines[3]?.identity, lines[3]?.tunnel, lines[3]?.reason], ['oldtimer', null, 'tls-expired: expired 3 days ago']);
  assert.equal(lines[4]?.source, '192.0.2.9/32');
  assert.match(String(lines[4]?.reason), /^banned for 10 min until 2030-01-01T00:10:05.000Z \(offence 1\): 5 failures/);

  const rows = await r.store.queryAudit({});
  assert.deepEqual(rows.map((x) => x.kind).reverse(), lines.map((l) => l.kind), 'the store holds the same records');
  assert.deepEqual((await r.store.queryAudit({ identity: 'alice' })).map((x) => x.kind), ['stream-close', 'stream-open']);
  assert.equal(statSync(r.file).mode & 0o777, 0o600, 'the audit file is private to the relay owner');
});

test('a full batch is written without waiting for the timer', async () => {
  const r = await rig({ batchRows: 3 });
  for (let i = 0; i < 3; i++) r.events.emit('stream-open', { time: t(i), id: i, identity: 'alice', source: '127.0.0.1:1', tunnel: 'web', agent: 'box' });
  const deadline = Date.now() + 5_000;
  while ((await r.store.queryAudit({})).length < 3 && Date.now() < deadline) await sleep(20);
  assert.equal((await r.store.queryAudit({})).length, 3);
});

test('a rotated or removed file is reopened; nothing written after is lost', async () => {
  const r = await rig();
  const open = (id: number): void => r.events.emit('stream-open', { time: t(id), id, identity: 'alice', source: '127.0.0.1:1', tunnel: 'web', agent: 'box' });
  open(1);
  await r.audit.flush();
  renameSync(r.file, `${r.file}.1`); // logrotate without copytruncate
  open(2);
  await r.audit.flush();
  assert.deepEqual(r.fileLines(`${r.file}.1`).map((l) => l.time), [t(1).toISOString()]);
  assert.deepEqual(r.fileLines().map((l) => l.time), [t(2).toISOString()]);
  unlinkSync(r.file);
  open(3);
  await r.audit.flush();
  assert.ok(existsSync(r.file));
  assert.deepEqual(r.fileLines().map((l) => l.time), [t(3).toISOString()]);
  assert.equal(r.logLines().filter((l) => l.msg === 'audit file reopened (rotated or removed)').length, 2);
  assert.equal((await r.store.queryAudit({})).length, 3);
});

test('the queue is bounded: the oldest records go first and the loss is logged', async () => {
  const r = await rig({ maxQueue: 5, batchRows: 1000 });
  for (let i = 0; i < 12; i++) r.events.emit('stream-open', { time: t(i), id: i, identity: 'alice', source: '127.0.0.1:1', tunnel: 'web', agent: 'box' });
  await r.audit.flush();
  assert.deepEqual(r.fileLines().map((l) => l.time), [7, 8, 9, 10, 11].map((i) => t(i).toISOString()));
  assert.equal((await r.store.queryAudit({})).length, 5);
  const warn = r.logLines().find((l) => l.msg === 'audit queue full: the oldest audit records were dropped');
  assert.deepEqual([warn?.droppedLines, warn?.droppedRows], [7, 7]);
});

test('store only (no file); an audit file that cannot be opened is a clear start error', async () => {
  const r = await rig({ file: null });
  r.events.emit('stream-open', { time: t(1), id: 1, identity: 'alice', source: '127.0.0.1:1', tunnel: 'web', agent: 'box' });
  await r.audit.flush();
  assert.equal((await r.store.queryAudit({})).length, 1);

  const dir = tempDir(cleanup);
  const store = await openSqliteStore(join(dir, 'store.sqlite'), { create: true });
  cleanup.add(() => store.close());
  const bad = new AuditLog(store, new RelayEvents(), silentLogger(), { file: join(dir, 'no', 'such', 'dir', 'audit.jsonl') });
  await assert.rejects(bad.start(), (err: unknown) => err instanceof StateError && err.code === 'WS_AUDIT_FILE' && /cannot open the audit file .*no\/such\/dir.*ENOENT/.test(err.message));
});
