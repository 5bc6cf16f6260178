// The I/O graph's ring buffer: seconds land in their slots, the window slides, stale slots read
// as zero, late ticks within the window still count, the tunnel table is capped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IoGraph } from '../../src/ops/io-graph.ts';
import { RelayEvents } from '../../src/ops/events.ts';

const T0 = 1_700_000_000_000; // an epoch millisecond on a second boundary

test('bytes add up per second and direction; the series ends with the last complete second', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 10, now: () => now });
  io.record('web', 100, 1);
  io.record('web', 50, 2); // same second: adds up
  now += 1000;
  io.record('web', 7, 0);
  now += 1500; // second T0+2 is current and ignored; T0+1 is the last complete one
  const s = io.series('web');
  assert.ok(s);
  assert.equal(s.in.length, 10);
  assert.equal(s.start, T0 / 1000 + 1 - 9);
  assert.deepEqual(s.in.slice(-2), [150, 7]);
  assert.deepEqual(s.out.slice(-2), [3, 0]);
  assert.deepEqual(s.in.slice(0, 8), [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(io.series('nope'), undefined);
});

test('the window slides: slots older than the window read as zero and are reused', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 4, now: () => now });
  for (let i = 0; i < 6; i++) {
    io.record('db', i + 1, 10 * (i + 1), now);
    now += 1000;
  }
  // seconds T0..T0+5 recorded 1..6; now is T0+6, window = T0+2..T0+5
  const s = io.series('db');
  assert.ok(s);
  assert.equal(s.start, T0 / 1000 + 2);
  assert.deepEqual(s.in, [3, 4, 5, 6]);
  assert.deepEqual(s.out, [30, 40, 50, 60]);
  // a gap of part of the window clears the skipped slots, not the ones still inside it
  now += 2000; // T0+8
  io.record('db', 99, 0);
  now += 1000; // T0+9: window = T0+5..T0+8
  const t = io.series('db');
  assert.ok(t);
  assert.equal(t.start, T0 / 1000 + 5);
  assert.deepEqual(t.in, [6, 0, 0, 99]);
  assert.deepEqual(t.out, [60, 0, 0, 0]);
});

test('a gap longer than the whole window clears everything', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 5, now: () => now });
  io.record('x', 1000, 1000);
  now += 60_000;
  io.record('x', 1, 2);
  now += 1000;
  const s = io.series('x');
  assert.ok(s);
  assert.deepEqual(s.in, [0, 0, 0, 0, 1]);
  assert.deepEqual(s.out, [0, 0, 0, 0, 2]);
});

test('a late tick lands in its own second if that second is still in the window', () => {
  let now = T0 + 5000;
  const io = new IoGraph({ seconds: 10, now: () => now });
  io.record('x', 5, 0); // second T0+5
  io.record('x', 3, 0, T0 + 2000); // late, for T0+2
  io.record('x', 9, 0, T0 - 20_000); // older than the window: dropped
  now += 1000;
  const s = io.series('x');
  assert.ok(s);
  assert.deepEqual(s.in.slice(-4), [3, 0, 0, 5]);
  assert.equal(s.in.reduce((a, b) => a + b, 0), 8);
});

test('negative or non-finite byte counts are ignored', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 3, now: () => now });
  io.record('x', -5, Number.NaN);
  io.record('x', 4, Number.POSITIVE_INFINITY);
  now += 1000;
  assert.deepEqual(io.series('x')?.in.slice(-1), [4]);
  assert.deepEqual(io.series('x')?.out.slice(-1), [0]);
});

test('the tunnel table is capped; a tunnel idle for a whole window gives its place up', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 10, maxTunnels: 2, now: () => now });
  io.record('a', 1, 1);
  io.record('b', 1, 1);
  io.record('c', 1, 1);
  assert.deepEqual(io.tunnels(), ['a', 'b']);
  assert.equal(io.droppedTicks, 1);
  now += 5_000;
  io.record('b', 1, 1); // b stays busy
  now += 6_000; // a idle for 11 s > window
  io.record('c', 2, 2);
  assert.deepEqual(io.tunnels(), ['b', 'c']);
  now += 1000;
  assert.deepEqual(io.series('c')?.in.slice(-2), [0, 2], 'c starts fresh: nothing from its refused tick');
});

test('latest() gives the last complete second of every tunnel; attach() follows the bus', () => {
  let now = T0;
  const io = new IoGraph({ seconds: 60, now: () => now });
  const events = new RelayEvents();
  const off = io.attach(events);
  events.emit('bytes', { tunnel: 'web', identity: 'alice', up: 10, down: 20 });
  events.emit('bytes', { tunnel: 'web', identity: 'bob', up: 1, down: 2 });
  events.emit('bytes', { tunnel: '__proto__', identity: 'bob', up: 1, down: 1 });
  now += 1000;
  const point = io.latest();
  assert.equal(point.second, T0 / 1000);
  assert.deepEqual(point.tunnels.web, [11, 22]);
  assert.deepEqual(Object.keys(point.tunnels).sort(), ['__proto__', 'web']);
  assert.deepEqual(JSON.parse(JSON.stringify(point)).tunnels.__proto__, [1, 1]);
  off();
  events.emit('bytes', { tunnel: 'web', identity: 'alice', up: 10, down: 20 });
  now += 1000;
  assert.deepEqual(io.latest().tunnels.web, [0, 0], 'detached: no more bytes recorded');
});

test('an hour of one-second slots stays the configured size', () => {
  let now = T0;
  const io = new IoGraph({ now: () => now });
  for (let i = 0; i < 2 * 3600; i += 7) io.record('big', i, 0, T0 + i * 1000);
  now = T0 + 2 * 3600 * 1000;
  const s = io.series('big');
  assert.ok(s);
  assert.equal(s.in.length, 3600);
  // only the last hour's samples (every 7th second) remain
  const expected = new Array<number>(3600).fill(0);
  for (let i = 0; i < 2 * 3600; i += 7) {
    const idx = i - 3600; // window = T0+3600 .. T0+7199
    if (idx >= 0 && idx < 3600) expected[idx] = i;
  }
  assert.deepEqual(s.in, expected);
});
