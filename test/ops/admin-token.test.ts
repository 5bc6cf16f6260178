// Admin tokens: minted tokens are stored only as their SHA-256, verify accepts the right token
// and refuses wrong, malformed and revoked ones, lastUsedAt is written at most once a minute,
// sessions expire and are bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdminSessions, AdminTokens, checkLabel, hashToken, looksLikeToken, mintAdminToken } from '../../src/ops/admin-token.ts';
import { MemoryOpsStore } from './memory-ops-store.ts';

test('a minted token is shown once and stored only as its hash', async () => {
  const store = new MemoryOpsStore();
  const minted = await mintAdminToken(store, '  phone  ');
  assert.ok(looksLikeToken(minted.token), minted.token);
  assert.equal(minted.label, 'phone');
  const stored = await store.listAdminTokens();
  assert.equal(stored.length, 1);
  assert.equal(stored[0]?.hash, hashToken(minted.token));
  assert.match(stored[0]?.hash ?? '', /^[0-9a-f]{64}$/);
  assert.ok(!JSON.stringify(stored).includes(minted.token.slice(4)), 'the token itself is not stored');
  const again = await mintAdminToken(store, 'phone');
  assert.notEqual(again.token, minted.token, 'every call mints a fresh token');
  assert.notEqual(again.id, minted.id);
});

test('labels are checked', () => {
  assert.throws(() => checkLabel('   '), /--label/);
  assert.throws(() => checkLabel('x'.repeat(101)), /at most 100/);
  assert.throws(() => checkLabel('a\nb'), /control characters/);
  assert.equal(checkLabel('laptop (work)'), 'laptop (work)');
});

test('verify: the right token passes; wrong, malformed and revoked ones do not', async () => {
  const store = new MemoryOpsStore();
  const tokens = new AdminTokens(store);
  const a = await mintAdminToken(store, 'a');
  const b = await mintAdminToken(store, 'b');
  assert.equal((await tokens.verify(a.token))?.id, a.id);
  assert.equal((await tokens.verify(b.token))?.label, 'b');
  const wrong = a.token.slice(0, -1) + (a.token.endsWith('A') ? 'B' : 'A');
  assert.equal(await tokens.verify(wrong), undefined);
  assert.equal(await tokens.verify('wsa_short'), undefined);
  assert.equal(await tokens.verify(''), undefined);
  assert.equal(await tokens.verify(hashToken(a.token)), undefined, 'the hash is not a token');
  assert.equal(await store.removeAdminToken(a.id), true);
  assert.equal(await tokens.verify(a.token), undefined, 'revoked');
  assert.equal((await tokens.verify(b.token))?.id, b.id, 'the other token still works');
});

test('lastUsedAt is written on use, at most once a minute per token', async () => {
  const store = new MemoryOpsStore();
  const tokens = new AdminTokens(store, 60_000);
  const a = await mintAdminToken(store, 'a');
  const t0 = new Date('2030-01-01T00:00:00Z');
  await tokens.verify(a.token, t0);
  await tokens.verify(a.token, new Date(t0.getTime() + 30_000));
  assert.equal(store.tokenTouches, 1);
  assert.deepEqual((await store.listAdminTokens())[0]?.lastUsedAt, t0);
  await tokens.verify(a.token, new Date(t0.getTime() + 61_000));
  assert.equal(store.tokenTouches, 2);
});

test('sessions map to token hashes, expire, and are bounded', () => {
  const sessions = new AdminSessions(1000, 3);
  const s1 = sessions.open('h1', 0);
  assert.match(s1, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(sessions.tokenHashOf(s1, 500), 'h1');
  assert.equal(sessions.tokenHashOf(s1, 1000), undefined, 'expired');
  assert.equal(sessions.tokenHashOf('nonsense', 0), undefined);
  const ids = [sessions.open('a', 2000), sessions.open('b', 2000), sessions.open('c', 2000), sessions.open('d', 2000)];
  assert.equal(sessions.size, 3);
  assert.equal(sessions.tokenHashOf(ids[0] as string, 2001), undefined, 'the oldest session made room');
  assert.equal(sessions.tokenHashOf(ids[3] as string, 2001), 'd');
  sessions.close(ids[3] as string);
  assert.equal(sessions.tokenHashOf(ids[3] as string, 2001), undefined);
});
