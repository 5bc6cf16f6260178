// BanGuard against a real SQLite store, driven by failure events with a test clock: maxretry
// within findtime, IPv6 /64 grouping, the ignore list, repeat bans growing to the cap, expiry,
// bans added and removed in the store by another process (the `warpstone ban` path), bans
// surviving a new guard (a relay restart), and the bound on tracked prefixes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/store.ts';
import { RelayEvents, type FailureReason, type RelayEventMap } from '../../src/ops/events.ts';
import { BanGuard } from '../../src/guard/bans.ts';
import { defaultBanSettings, type BanSettings } from '../../src/guard/ban-settings.ts';
import { CidrList } from '../../src/guard/prefix.ts';
import { Cleanup, tempDir } from '../helpers/harness.ts';
import { captureLog } from './capture-log.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());


interface Rig {
  store: Store;
  path: string;
  events: RelayEvents;
  guard: BanGuard;
  clock: { now: number };
  issued: Array<RelayEventMap['ban-issued']>;
  lifted: Array<RelayEventMap['ban-lifted']>;
  lines: () => Array<Record<string, unknown>>;
  fail(source: string, reason?: FailureReason): void;
  /** resolves with the next ban-issued event */
  nextBan(): Promise<RelayEventMap['ban-issued']>;
}

async function rig(overrides: Partial<BanSettings> = {}, existing?: { path: string; clock: { now: number } }): Promise<Rig> {
  const path = existing?.path ?? join(tempDir(cleanup), 'store.sqlite');
  const store = await openSqliteStore(path, { create: true });
  cleanup.add(() => store.close());
  const events = new RelayEvents();
  const clock = existing?.clock ?? { now: Date.now() };
  const { log, lines } = captureLog();
  const settings = { ...defaultBanSettings(), maxRetry: 3, findTimeMs: 60_000, banTimeMs: 10_000, maxBanTimeMs: 35_000, pollMs: 3_600_000, ...overrides };
  const guard = new BanGuard(store, events, log, settings, () => clock.now);
  await guard.start();
  cleanup.add(() => guard.stop());
  const issued: Array<RelayEventMap['ban-issued']> = [];
  const lifted: Array<RelayEventMap['ban-lifted']> = [];
  events.on('ban-issued', (e) => issued.push(e));
  events.on('ban-lifted', (e) => lifted.push(e));
  return {
    store,
    path,
    events,
    guard,
    clock,
    issued,
    lifted,
    lines,
    fail: (source, reason = 'tls-unknown-ca') => events.emit('failure', { time: new Date(clock.now), source, reason, detail: 'test' }),
    nextBan: () => new Promise((resolve) => {
      const off = events.on('ban-issued', (e) => {
        off();
        resolve(e);
      });
    }),
  };
}

test('maxretry failures within findtime ban the source; others and spaced-out failures do not', async () => {
  const r = await rig();
  // two failures, then a pause longer than findtime: the count starts again
  r.fail('203.0.113.7:1000');
  r.fail('203.0.113.7:1001');
  r.clock.now += 61_000;
  r.fail('203.0.113.7:1002');
  r.fail('203.0.113.7:1003');
  assert.equal(r.guard.isBanned('203.0.113.7'), false, 'only two failures inside the window');
  assert.equal(r.issued.length, 0);

  const ban = r.nextBan();
  r.fail('203.0.113.7:1004', 'unknown-tunnel');
  assert.equal(r.guard.isBanned('203.0.113.7'), true, 'banned at once, before the store has answered');
  assert.equal(r.guard.isBanned('::ffff:203.0.113.7'), true, 'as a dual-stack listener reports it');
  assert.equal(r.guard.isBanned('203.0.113.8'), false, 'a neighbour is not');
  const e = await ban;
  assert.equal(e.address, '203.0.113.7/32');
  assert.equal(e.offence, 1);
  assert.equal(e.failures, 3);
  assert.equal(e.until.getTime() - e.time.getTime(), 10_000);
  assert.match(e.reason, /^3 failures in \d+ (ms|s): tls-unknown-ca x2, unknown-tunnel x1$/);
  const stored = await r.store.listBans({ now: new Date(r.clock.now) });
  assert.deepEqual(stored.map((b) => [b.prefix, b.offence, b.by]), [['203.0.113.7/32', 1, 'auto']]);
  assert.ok(r.lines().some((l) => l.msg === 'source banned for 10 s' && l.prefix === '203.0.113.7/32'));
});

test('IPv6 sources count per /64: addresses in one /64 add up, the next /64 is separate', async () => {
  const r = await rig();
  const ban = r.nextBan();
  r.fail('[2001:db8:1:2::1]:4000');
  r.fail('[2001:db8:1:2::ffff]:4001');
  r.fail('[2001:db8:1:3::1]:4002');
  assert.equal(r.guard.isBanned('2001:db8:1:2::77'), false);
  r.fail('[2001:db8:1:2:abcd::5]:4003');
  assert.equal((await ban).address, '2001:db8:1:2::/64');
  assert.equal(r.guard.isBanned('2001:db8:1:2:dead:beef::1'), true, 'the whole /64');
  assert.equal(r.guard.isBanned('2001:db8:1:3::1'), false, 'the next /64 has one failure only');
});

test('the ignore list: failures from ignored blocks never count', async () => {
  const r = await rig({ ignore: CidrList.parse(['127.0.0.0/8', '::1'], '--ban-ignore') });
  for (let i = 0; i < 10; i++) {
    r.fail(`127.0.0.${1 + (i % 3)}:${5000 + i}`);
    r.fail(`[::1]:${6000 + i}`);
  }
  assert.equal(r.guard.isBanned('127.0.0.1'), false);
  assert.equal(r.guard.isBanned('::1'), false);
  assert.equal(r.guard.tracked, 0, 'ignored sources are not even tracked');
  const ban = r.nextBan();
  for (let i = 0; i < 3; i++) r.fail(`[::2]:${7000 + i}`);
  assert.equal((await ban).address, '::/64', '::2 is not ignored (only ::1 is)');
});

test('repeat offenders: each ban lasts increment times longer, up to maxbantime; expiry lifts', async () => {
  const r = await rig();
  const durations: number[] = [];
  for (let round = 1; round <= 4; round++) {
    const ban = r.nextBan();
    for (let i = 0; i < 3; i++) r.fail(`198.51.100.9:${round * 10 + i}`);
    const e = await ban;
    assert.equal(e.offence, round);
    durations.push(e.until.getTime() - e.time.getTime());
    assert.equal(r.guard.isBanned('198.51.100.9'), true);
    // still banned just before the end, lifted by the poll after it
    r.clock.now = e.until.getTime() - 1;
    await r.guard.tick();
    assert.equal(r.guard.isBanned('198.51.100.9'), true);
    r.clock.now = e.until.getTime();
    assert.equal(r.guard.isBanned('198.51.100.9'), false, 'an expired ban stops dropping even before the poll');
    await r.guard.tick();
    assert.deepEqual(r.lifted.at(-1), { time: new Date(r.clock.now), address: '198.51.100.9/32', by: 'expiry' });
  }
  assert.deepEqual(durations, [10_000, 20_000, 35_000, 35_000], 'doubling, capped at 35 s');
  assert.ok(r.lines().some((l) => l.msg === 'ban expired; source admitted again'));

  // a source whose last ban ended longer than the cap ago starts again at offence 1
  r.clock.now += 36_000;
  const fresh = r.nextBan();
  for (let i = 0; i < 3; i++) r.fail(`198.51.100.9:${100 + i}`);
  assert.equal((await fresh).offence, 1);
});

test('bans survive a restart: a new guard on the same store drops the source at once', async () => {
  const first = await rig();
  const ban = first.nextBan();
  for (let i = 0; i < 3; i++) first.fail(`192.0.2.44:${i}`);
  await ban;
  await first.guard.stop();
  const second = await rig({}, { path: first.path, clock: first.clock });
  assert.equal(second.guard.isBanned('192.0.2.44'), true);
  assert.deepEqual(second.guard.list().map((b) => b.prefix), ['192.0.2.44/32']);
});

test('bans added and removed in the store by another process apply at the next poll', async () => {
  const r = await rig();
  const other = await openSqliteStore(r.path);
  cleanup.add(() => other.close());
  const now = new Date(r.clock.now);
  // a wide admin ban (a /24) and a single address
  await other.putBan({ prefix: '203.0.113.0/24', bannedAt: now, until: new Date(r.clock.now + 3_600_000), offence: 1, failures: 0, reason: 'scanner net', by: 'admin' });
  await other.putBan({ prefix: '192.0.2.1/32', bannedAt: now, until: new Date(r.clock.now + 3_600_000), offence: 1, failures: 0, reason: 'by hand', by: 'admin' });
  assert.equal(r.guard.isBanned('203.0.113.200'), false, 'not before the poll');
  await r.guard.tick();
  assert.equal(r.guard.isBanned('203.0.113.200'), true, 'the /24 covers every address in it');
  assert.equal(r.guard.isBanned('::ffff:203.0.113.1'), true);
  assert.equal(r.guard.isBanned('203.0.114.1'), false);
  assert.equal(r.guard.isBanned('192.0.2.1'), true);
  assert.deepEqual(r.issued.map((e) => e.address).sort(), ['192.0.2.1/32', '203.0.113.0/24']);
  assert.ok(r.lines().some((l) => l.msg === 'ban added by an admin' && l.prefix === '203.0.113.0/24'));

  assert.equal(await other.removeBan('203.0.113.0/24'), true);
  await r.guard.tick();
  assert.equal(r.guard.isBanned('203.0.113.200'), false);
  assert.equal(r.guard.isBanned('192.0.2.1'), true);
  assert.deepEqual(r.lifted.map((e) => [e.address, e.by]), [['203.0.113.0/24', 'admin']]);
});

test('failure tracking is bounded: the least recently failing prefix is forgotten first', async () => {
  const r = await rig({ maxTracked: 3 });
  r.fail('10.0.0.1:1');
  r.fail('10.0.0.1:2');
  r.fail('10.0.0.2:1');
  r.fail('10.0.0.3:1');
  r.fail('10.0.0.4:1'); // evicts 10.0.0.1 (its two failures are forgotten)
  assert.equal(r.guard.tracked, 3);
  r.fail('10.0.0.1:3');
  r.fail('10.0.0.1:4');
  assert.equal(r.guard.isBanned('10.0.0.1'), false, 'two failures since it was forgotten, not four');
  const ban = r.nextBan();
  r.fail('10.0.0.1:5');
  assert.equal((await ban).address, '10.0.0.1/32');
  assert.ok(r.guard.tracked <= 3);
});

test('drops of a banned source are logged, at most once per 10 s with a count', async () => {
  const r = await rig({ banTimeMs: 60_000 });
  const ban = r.nextBan();
  for (let i = 0; i < 3; i++) r.fail(`192.0.2.99:${i}`);
  await ban;
  for (let i = 0; i < 50; i++) r.events.emit('banned-drop', { time: new Date(r.clock.now), source: `192.0.2.99:${100 + i}` });
  r.clock.now += 10_000;
  r.events.emit('banned-drop', { time: new Date(r.clock.now), source: '192.0.2.99:999' });
  const drops = r.lines().filter((l) => String(l.msg).startsWith('connection dropped: source is banned for '));
  assert.equal(drops.length, 2, 'one line for the first drop, one 10 s later');
  assert.equal(drops[1]?.dropped, 50, 'the later line counts the drops it stands for');
  assert.equal(drops[0]?.prefix, '192.0.2.99/32');
});
