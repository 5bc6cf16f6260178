// `warpstone status` text: target health from the store and each bandwidth limit's credits, so an
// operator sees a dead service and a spent burst without reading JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatStatus } from '../../src/cli/status.ts';
import type { RelayStatus } from '../../src/relay/admin.ts';

const base: RelayStatus = {
  relay: { pid: 42, startedAt: '2026-11-23T10:00:00.000Z', listen: ['127.0.0.1:7443'], version: '1' },
  agents: [{ name: 'box', address: '127.0.0.1:50000', connectedSince: '2026-11-23T10:00:01.000Z', tunnels: ['web', 'db'], streams: 0 }],
  tunnels: [
    { name: 'web', agent: 'box', port: 80, online: true, lastSeen: '2026-11-23T10:00:01.000Z' },
    { name: 'db', agent: 'box', port: 5432, online: true, lastSeen: '2026-11-23T10:00:01.000Z' },
  ],
  streams: [],
};

test('status shows each tunnel target health from the store, and "-" where nothing was checked', () => {
  const text = formatStatus(base, [
    { agent: 'box', tunnel: 'db', state: 'down', detail: 'connection refused', since: new Date('2026-11-23T10:05:00Z'), checkedAt: new Date('2026-11-23T10:06:00Z') },
  ]);
  const db = text.split('\n').find((l) => l.startsWith('db '));
  const web = text.split('\n').find((l) => l.startsWith('web '));
  assert.match(db ?? '', /DOWN since 2026-11-23T10:05:00.000Z: connection refused$/);
  assert.match(web ?? '', / -$/);
});

test('status lists bandwidth limits with credits left, and says when credits are exhausted', () => {
  const limit = {
    scope: 'tunnel' as const,
    name: 'web',
    streams: 2,
    waiting: 1,
    baselineBytesPerSecond: 1_000_000,
    maxBytesPerSecond: 5_000_000,
    creditCapBytes: 100_000_000,
    credits: 0,
    allowedBytesPerSecond: 1_000_000,
    measuredBytesPerSecond: 990_000,
    recentBytesPerSecond: 1_000_000,
    measureWindowMs: 5000,
    state: 'baseline' as const,
    exhausted: true,
    totalBytes: 123_000_000,
    secondsOfCreditLeft: null,
  };
  const text = formatStatus({ ...base, shaping: [limit] });
  assert.match(text, /bandwidth limits \(1\)/);
  const row = text.split('\n').find((l) => l.startsWith('tunnel web'));
  assert.ok(row, text);
  assert.match(row, /baseline \(credits exhausted\)/);
  assert.match(row, /of 100 ?MB/);
  assert.doesNotMatch(formatStatus(base), /bandwidth limits/);
});
