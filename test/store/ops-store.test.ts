// OpsStore on a real SQLite file: bans (history, supersede, removal, revision), audit (filters,
// order, prune), limits (policy revision), target health, address history (incl. a store file
// written by the previous schema), the alert outbox and admin tokens.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/store.ts';
import type { AuditRecord } from '../../src/store/ops-store.ts';
import { Cleanup, tempDir } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

async function freshStore(): Promise<{ store: Store; path: string }> {
  const path = join(tempDir(cleanup), 'store.sqlite');
  const store = await openSqliteStore(path, { create: true });
  cleanup.add(() => store.close());
  return { store, path };
}

const t0 = new Date('2030-01-01T00:00:00.000Z');
const at = (seconds: number): Date => new Date(t0.getTime() + seconds * 1000);

test('bans: active vs all, the latest per prefix, supersede, removal forgets, revision bumps', async () => {
  const { store } = await freshStore();
  const rev0 = await store.banRevision();
  const policy0 = await store.revision();
  await store.putBan({ prefix: '203.0.113.7/32', bannedAt: at(0), until: at(600), offence: 1, failures: 5, reason: 'tls-unknown-ca x5', by: 'auto' });
  await store.putBan({ prefix: '2001:db8:1:2::/64', bannedAt: at(10), until: at(20), offence: 1, failures: 5, reason: 'unknown-tunnel x5', by: 'auto' });
  assert.equal(await store.banRevision(), rev0 + 2);
  assert.equal(await store.revision(), policy0, 'bans do not reload the grant/revocation policy');

  const activeAt100 = await store.listBans({ now: at(100) });
  assert.deepEqual(activeAt100.map((b) => b.prefix), ['203.0.113.7/32']);
  const ban = activeAt100[0];
  assert.ok(ban);
  assert.equal(ban.until.toISOString(), at(600).toISOString());
  assert.equal(ban.offence, 1);
  assert.equal(ban.failures, 5);
  assert.equal(ban.by, 'auto');
  assert.equal((await store.listBans({ all: true, now: at(100) })).length, 2);

  // a second ban of the same prefix while the first is active supersedes it
  await store.putBan({ prefix: '203.0.113.7/32', bannedAt: at(200), until: at(200 + 3600), offence: 2, failures: 0, reason: 'by hand', by: 'admin' });
  const active = await store.listBans({ now: at(300) });
  assert.equal(active.length, 1);
  assert.equal(active[0]?.offence, 2);
  assert.equal(active[0]?.by, 'admin');
  const history = (await store.listBans({ all: true })).filter((b) => b.prefix === '203.0.113.7/32');
  assert.deepEqual(history.map((b) => b.until.toISOString()), [at(200).toISOString(), at(3800).toISOString()], 'the first ban now ends where the second begins');
  assert.equal((await store.lastBan('203.0.113.7/32'))?.offence, 2);
  assert.equal(await store.lastBan('198.51.100.1/32'), undefined);

  // removal: true only when a ban was active (these are in 2030, so "now" is before their end)
  const rev1 = await store.banRevision();
  assert.equal(await store.removeBan('203.0.113.7/32'), true);
  assert.equal(await store.lastBan('203.0.113.7/32'), undefined, 'removal forgets the history');
  assert.equal(await store.removeBan('203.0.113.7/32'), false);
  assert.equal(await store.banRevision(), rev1 + 1, 'a removal that changed nothing does not bump');
});

test('audit: filters, newest first, limit, nulls kept, prune', async () => {
  const { store } = await freshStore();
  const row = (seconds: number, kind: AuditRecord['kind'], identity: string | null, tunnel: string | null, extra: Partial<AuditRecord> = {}): AuditRecord => ({
    time: at(seconds),
    kind,
    identity,
    source: '127.0.0.1:40000',
    tunnel,
    target: tunnel ? `${tunnel}:80` : null,
    bytesIn: null,
    bytesOut: null,
    durationMs: null,
    reason: null,
    ...extra,
  });
  await store.addAudit([]);
  await store.addAudit([
    row(1, 'stream-open', 'alice', 'web'),
    row(2, 'stream-close', 'alice', 'web', { bytesIn: 5_000_000_000, bytesOut: 7, durationMs: 1234, reason: 'closed' }),
    row(3, 'stream-refused', 'bob', 'db', { reason: 'not-granted: user bob is not granted db' }),
    row(4, 'handshake-refused', null, null, { reason: 'tls-unknown-ca' }),
  ]);
  const all = await store.queryAudit({});
  assert.deepEqual(all.map((r) => r.kind), ['handshake-refused', 'stream-refused', 'stream-close', 'stream-open']);
  const close = all[2];
  assert.ok(close);
  assert.equal(close.bytesIn, 5_000_000_000, 'byte counts above 2^32 survive');
  assert.equal(close.bytesOut, 7);
  assert.equal(close.durationMs, 1234);
  assert.equal(all[0]?.identity, null);
  assert.equal(all[0]?.tunnel, null);
  assert.equal(all[3]?.bytesIn, null);

  assert.deepEqual((await store.queryAudit({ identity: 'alice' })).map((r) => r.kind), ['stream-close', 'stream-open']);
  assert.deepEqual((await store.queryAudit({ tunnel: 'db' })).map((r) => r.identity), ['bob']);
  assert.deepEqual((await store.queryAudit({ kind: 'handshake-refused' })).map((r) => r.reason), ['tls-unknown-ca']);
  assert.deepEqual((await store.queryAudit({ since: at(2), until: at(3) })).map((r) => r.kind), ['stream-refused', 'stream-close']);
  assert.equal((await store.queryAudit({ limit: 1 }))[0]?.kind, 'handshake-refused');

  assert.equal(await store.pruneAudit(at(3)), 2);
  assert.deepEqual((await store.queryAudit({})).map((r) => r.kind), ['handshake-refused', 'stream-refused']);
});

test('limits: upsert, list, remove; each change bumps the policy revision', async () => {
  const { store } = await freshStore();
  const r0 = await store.revision();
  await store.setLimit({ scope: 'tunnel', name: 'web', baselineBytesPerSecond: 1_000_000, maxBytesPerSecond: 10_000_000, creditCapBytes: 600_000_000 });
  await store.setLimit({ scope: 'user', name: 'alice', baselineBytesPerSecond: 100, maxBytesPerSecond: 200, creditCapBytes: 300 });
  await store.setLimit({ scope: 'tunnel', name: 'web', baselineBytesPerSecond: 2_000_000, maxBytesPerSecond: 10_000_000, creditCapBytes: 600_000_000 });
  assert.equal(await store.revision(), r0 + 3);
  const limits = await store.listLimits();
  assert.deepEqual(
    limits.map((l) => [l.scope, l.name, l.baselineBytesPerSecond]),
    [
      ['tunnel', 'web', 2_000_000],
      ['user', 'alice', 100],
    ],
  );
  assert.equal(await store.removeLimit('user', 'alice'), true);
  assert.equal(await store.removeLimit('user', 'alice'), false);
  assert.equal(await store.revision(), r0 + 4);
});

test('target health: latest state per agent and tunnel', async () => {
  const { store } = await freshStore();
  await store.putTargetHealth({ agent: 'box', tunnel: 'web', state: 'up', detail: 'tcp connect ok', since: at(0), checkedAt: at(0) });
  await store.putTargetHealth({ agent: 'box', tunnel: 'db', state: 'up', detail: 'ok', since: at(0), checkedAt: at(0) });
  await store.putTargetHealth({ agent: 'box', tunnel: 'web', state: 'down', detail: 'connection refused', since: at(30), checkedAt: at(30) });
  const rows = await store.listTargetHealth();
  assert.deepEqual(rows.map((r) => [r.tunnel, r.state, r.detail, r.since.toISOString()]), [
    ['db', 'up', 'ok', at(0).toISOString()],
    ['web', 'down', 'connection refused', at(30).toISOString()],
  ]);
});

test('address history: sightings with reasons, the last one, a period filter', async () => {
  const { store } = await freshStore();
  assert.equal(await store.lastSighting('box'), undefined);
  const first = await store.recordAgentConnected('box', '127.0.0.2:5000');
  await store.recordAgentDisconnected(first, 'ping timeout');
  const second = await store.recordAgentConnected('box', '127.0.0.3:5001');
  await store.recordAgentConnected('other', '127.0.0.9:1');
  const list = await store.listSightings('box');
  assert.deepEqual(list.map((s) => [s.id, s.address, s.reason, s.disconnectedAt === null]), [
    [first, '127.0.0.2:5000', 'ping timeout', false],
    [second, '127.0.0.3:5001', null, true],
  ]);
  assert.equal((await store.lastSighting('box'))?.id, second);
  await store.setSightingReason(second, 'replaced');
  assert.equal((await store.lastSighting('box'))?.reason, 'replaced');
  // only sightings still open or ended after `since`
  const future = await store.listSightings('box', new Date(Date.now() + 60_000));
  assert.deepEqual(future.map((s) => s.id), [second]);
});

test('a store file written by the previous version (schema 1) opens and gains the new tables and columns', async () => {
  const path = join(tempDir(cleanup), 'store.sqlite');
  // exactly what schema 1 created (the DDL Kysely generated then), with a row in it
  const old = new BetterSqlite3(path);
  old.exec(`
    create table "certificates" ("serial" text primary key, "name" text not null, "role" text not null, "not_before" text not null, "not_after" text not null, "issued_at" text not null, "revoked_at" text);
    create index "certificates_name" on "certificates" ("name");
    create table "grants" ("user_name" text not null, "tunnel" text not null, "granted_at" text not null, constraint "grants_pk" primary key ("user_name", "tunnel"));
    create table "meta" ("key" text primary key, "value" text not null);
    create table "agent_sightings" ("id" integer primary key autoincrement, "name" text not null, "address" text not null, "connected_at" text not null, "disconnected_at" text);
    create table "tunnels" ("name" text primary key, "agent" text not null, "port" integer not null, "first_seen" text not null, "last_seen" text not null);
    insert into "meta" values ('schema', '1'), ('revision', '7');
    insert into "agent_sightings" ("name", "address", "connected_at", "disconnected_at") values ('box', '192.0.2.1:4000', '2024-01-01T00:00:00.000Z', '2024-01-01T01:00:00.000Z');
  `);
  old.close();

  const store = await openSqliteStore(path);
  cleanup.add(() => store.close());
  assert.equal(await store.revision(), 7, 'the policy revision survives the upgrade');
  assert.equal(await store.banRevision(), 0);
  const sightings = await store.listSightings('box');
  assert.equal(sightings.length, 1);
  assert.equal(sightings[0]?.reason, null);
  const id = await store.recordAgentConnected('box', '192.0.2.2:4001');
  await store.recordAgentDisconnected(id, 'agent closed the connection');
  assert.equal((await store.lastSighting('box'))?.reason, 'agent closed the connection');
  await store.putBan({ prefix: '192.0.2.9/32', bannedAt: new Date(), until: new Date(Date.now() + 60_000), offence: 1, failures: 5, reason: 'x', by: 'auto' });
  assert.equal((await store.listBans()).length, 1);

  const raw = new BetterSqlite3(path, { readonly: true });
  const schema = raw.prepare(`select value from meta where key = 'schema'`).get() as { value: string };
  raw.close();
  assert.equal(schema.value, '2');
  // opening again (already upgraded) changes nothing
  const again = await openSqliteStore(path);
  assert.equal(await again.revision(), 7);
  await again.close();
});

test('alert outbox: due, failed with a retry time, delivered, listed', async () => {
  const { store } = await freshStore();
  await store.addAlerts([
    { createdAt: at(0), kind: 'agent-lost', payload: '{"agent":"box"}', destination: 'webhook:http://127.0.0.1:1/hook', nextAttemptAt: at(0) },
    { createdAt: at(1), kind: 'ban-issued', payload: '{}', destination: 'command:/bin/true', nextAttemptAt: at(100) },
  ]);
  const due = await store.dueAlerts(at(10), 10);
  assert.deepEqual(due.map((a) => a.kind), ['agent-lost']);
  const alert = due[0];
  assert.ok(alert);
  assert.equal(alert.attempts, 0);
  await store.markAlertFailed(alert.id, 'connection refused', at(60));
  assert.deepEqual(await store.dueAlerts(at(30), 10), [], 'a failed alert waits for its retry time');
  const retry = await store.dueAlerts(at(200), 10);
  assert.deepEqual(retry.map((a) => [a.kind, a.attempts, a.lastError]), [
    ['agent-lost', 1, 'connection refused'],
    ['ban-issued', 0, null],
  ]);
  await store.markAlertDelivered(alert.id, at(201));
  assert.deepEqual((await store.listAlerts({ undeliveredOnly: true })).map((a) => a.kind), ['ban-issued']);
  const delivered = (await store.listAlerts()).find((a) => a.id === alert.id);
  assert.equal(delivered?.deliveredAt?.toISOString(), at(201).toISOString());
  assert.equal(delivered?.attempts, 2);
});

test('admin tokens: stored by hash, used, listed, removed', async () => {
  const { store } = await freshStore();
  const hash = 'a'.repeat(64);
  const id = await store.addAdminToken({ hash, label: 'phone', createdAt: at(0) });
  assert.equal(await store.useAdminToken('b'.repeat(64), at(5)), false);
  assert.equal(await store.useAdminToken(hash, at(5)), true);
  const tokens = await store.listAdminTokens();
  assert.deepEqual(tokens.map((t) => [t.id, t.label, t.lastUsedAt?.toISOString()]), [[id, 'phone', at(5).toISOString()]]);
  await assert.rejects(store.addAdminToken({ hash, label: 'dup', createdAt: at(1) }), /UNIQUE/i);
  assert.equal(await store.removeAdminToken(id), true);
  assert.equal(await store.removeAdminToken(id), false);
  assert.equal(await store.useAdminToken(hash, at(6)), false);
});
