// Address history statistics against numbers worked out by hand (the comments show the sums).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressStats, addressHost, summarize, isErrorReason, UNRECORDED_END } from '../../src/ops/address-stats.ts';
import type { SightingRecord } from '../../src/store/ops-store.ts';

const T = Date.UTC(2026, 0, 1);
const at = (minutes: number): Date => new Date(T + minutes * 60_000);
const MIN = 60_000;

let nextId = 1;
function sighting(address: string, from: number, to: number | null, reason: string | null = null): SightingRecord {
  return { id: nextId++, agent: 'box', address, connectedAt: at(from), disconnectedAt: to === null ? null : at(to), reason: to === null ? null : reason };
}

// A: 203.0.113.4, B: 198.51.100.7, C: 192.0.2.1, D: 2001:db8::1 (minutes from T)
const history: SightingRecord[] = [
  sighting('203.0.113.4:5000', 0, 30, 'ping timeout'),
  sighting('203.0.113.4:5001', 32, 60, 'connection closed'), // same host: not a change
  sighting('198.51.100.7:4000', 65, 125, 'ping timeout'), // change: A lasted 0..65
  sighting('192.0.2.1:1234', 125, 145, 'replaced by a newer session of the same agent'), // change: B lasted 65..125
  { ...sighting('198.51.100.7:4001', 145, null), reason: null }, // change: C lasted 125..145; never closed (relay died)
  sighting('[2001:db8::1]:443', 200, 230, 'agent closed the connection'), // change: B lasted 145..200
  sighting('[2001:db8::1]:444', 240, null), // still connected
];

test('hosts: the port is dropped, IPv6 brackets and IPv4-mapped prefixes too', () => {
  assert.equal(addressHost('198.51.100.4:50122'), '198.51.100.4');
  assert.equal(addressHost('[2001:db8::1]:443'), '2001:db8::1');
  assert.equal(addressHost('[::ffff:10.0.0.1]:1'), '10.0.0.1');
  assert.equal(addressHost('2001:db8::1'), '2001:db8::1');
  assert.equal(addressHost('10.1.2.3'), '10.1.2.3');
  assert.equal(addressHost('unknown'), 'unknown');
});

test('summary: mean, sample standard deviation, median of odd and even counts', () => {
  assert.equal(summarize([]), null);
  assert.deepEqual(summarize([7]), { count: 1, meanMs: 7, stdMs: null, medianMs: 7, shortestMs: 7, longestMs: 7 });
  // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum 32, sample variance 32/7
  const s = summarize([9, 2, 4, 4, 4, 5, 5, 7]);
  assert.equal(s?.meanMs, 5);
  assert.equal(s?.medianMs, 4.5);
  assert.ok(Math.abs((s?.stdMs ?? 0) - Math.sqrt(32 / 7)) < 1e-12);
  assert.equal(summarize([3, 1, 2])?.medianMs, 2);
});

test('the whole history: four changes, lasted 65/60/20/55 min, reasons and uptime', () => {
  const s = addressStats('box', [...history].reverse(), at(0), at(300));
  assert.equal(s.changes, 4);
  // closed spans: A 65, B 60, C 20, B 55 -> sorted 20 55 60 65
  // mean 200/4 = 50; median (55+60)/2 = 57.5; deviations -30 5 10 15 -> 1250/3 -> std 20.4124 min
  assert.ok(s.lasted);
  assert.equal(s.lasted.count, 4);
  assert.equal(s.lasted.meanMs, 50 * MIN);
  assert.equal(s.lasted.medianMs, 57.5 * MIN);
  assert.ok(Math.abs((s.lasted.stdMs ?? 0) - Math.sqrt(1250 / 3) * MIN) < 1e-6);
  assert.equal(s.lasted.shortestMs, 20 * MIN);
  assert.equal(s.lasted.longestMs, 65 * MIN);
  assert.deepEqual(
    s.spans.map((sp) => [sp.address, sp.from.getTime(), sp.to.getTime(), sp.lastedMs / MIN, sp.open, sp.connections, sp.connectedMs / MIN, sp.offlineMs / MIN]),
    [
      ['203.0.113.4', at(0).getTime(), at(65).getTime(), 65, false, 2, 58, 7], // connected 30 + 28
      ['198.51.100.7', at(65).getTime(), at(125).getTime(), 60, false, 1, 60, 0],
      ['192.0.2.1', at(125).getTime(), at(145).getTime(), 20, false, 1, 20, 0],
      ['198.51.100.7', at(145).getTime(), at(200).getTime(), 55, false, 1, 55, 0], // unrecorded end = next start
      ['2001:db8::1', at(200).getTime(), at(300).getTime(), 100, true, 2, 90, 10], // 30 + 60 connected, open
    ],
  );
  assert.deepEqual(s.current, { address: '2001:db8::1', connected: true, addressSince: at(200), lastConnectedAt: at(240), lastDisconnectedAt: at(230) });
  assert.equal(s.connections, 7);
  assert.equal(s.disconnects, 6);
  assert.deepEqual(s.reasons, [
    { reason: 'ping timeout', count: 2, error: true },
    { reason: 'agent closed the connection', count: 1, error: false },
    { reason: 'connection closed', count: 1, error: true },
    { reason: UNRECORDED_END, count: 1, error: false },
    { reason: 'replaced by a newer session of the same agent', count: 1, error: false },
  ]);
  assert.equal(s.errors, 3);
  // 30 + 28 + 60 + 20 + 55 + 30 + 60 = 283 of 300 minutes
  assert.equal(s.connectedMs, 283 * MIN);
  assert.equal(s.periodMs, 300 * MIN);
  assert.equal(s.observedMs, 300 * MIN);
});

test('a period that begins mid-history counts the full length of addresses that end in it', () => {
  const s = addressStats('box', history, at(100), at(300));
  // changes at 125, 145, 200 (the one at 65 is before the period)
  assert.equal(s.changes, 3);
  // B 60 (began at 65, before the period: full length), C 20, B 55 -> mean 45, median 55,
  // deviations 15 -25 10 -> 950/2 = 475 -> std 21.7945 min
  assert.ok(s.lasted);
  assert.equal(s.lasted.count, 3);
  assert.equal(s.lasted.meanMs, 45 * MIN);
  assert.equal(s.lasted.medianMs, 55 * MIN);
  assert.ok(Math.abs((s.lasted.stdMs ?? 0) - Math.sqrt(475) * MIN) < 1e-6);
  assert.deepEqual(s.spans.map((sp) => sp.address), ['198.51.100.7', '192.0.2.1', '198.51.100.7', '2001:db8::1']);
  // links ending at 125, 145, 200 (unrecorded), 230
  assert.equal(s.disconnects, 4);
  assert.equal(s.errors, 1);
  assert.equal(s.connections, 4);
  // 25 (100..125) + 20 + 55 + 30 + 60 = 190 of 200 minutes
  assert.equal(s.connectedMs, 190 * MIN);
  assert.equal(s.observedMs, 200 * MIN);
  // a period that begins before the first connection: the uptime counts from that connection
  const young = addressStats('box', history.slice(2), at(0), at(300));
  assert.equal(young.periodMs, 300 * MIN);
  assert.equal(young.observedMs, 235 * MIN);
});

test('an agent offline now: its last address lasted at least until its last disconnect; no change, no statistics', () => {
  const s = addressStats('box', [sighting('10.0.0.1:1', 0, 10, 'ping timeout'), sighting('10.0.0.1:2', 20, 40, 'ping timeout')], at(0), at(100));
  assert.equal(s.changes, 0);
  assert.equal(s.lasted, null);
  assert.deepEqual(s.current, { address: '10.0.0.1', connected: false, addressSince: at(0), lastConnectedAt: at(20), lastDisconnectedAt: at(40) });
  assert.deepEqual(
    s.spans.map((sp) => [sp.lastedMs / MIN, sp.open, sp.connectedMs / MIN, sp.offlineMs / MIN]),
    [[40, true, 30, 10]],
  );
  assert.equal(s.errors, 2);
  assert.equal(s.connectedMs, 30 * MIN);
});

test('no sightings: nothing to say, and nothing divides by zero', () => {
  const s = addressStats('box', [], at(0), at(10));
  assert.equal(s.current, null);
  assert.equal(s.changes, 0);
  assert.equal(s.lasted, null);
  assert.deepEqual(s.spans, []);
  assert.equal(s.disconnects, 0);
  assert.equal(s.connectedMs, 0);
});

test('error reasons: failures are errors, orderly ends are not', () => {
  for (const r of ['ping timeout', 'ping failed: x', 'connection closed', 'socket error']) assert.equal(isErrorReason(r), true, r);
  for (const r of ['agent closed the connection', 'relay shutting down', 'replaced', 'replaced by a newer session of the same agent', 'certificate revoked', null, UNRECORDED_END]) {
    assert.equal(isErrorReason(r), false, String(r));
  }
});
