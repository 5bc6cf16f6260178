// The registry and the per-stream gates on simulated time (fake clock and fake timers): streams
// sharing a bucket share it fairly, a stream under a tunnel and a user limit obeys both, one timer
// per bucket, both directions of a stream share its buckets, reloads keep credits, removal
// releases waiting streams.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ShapingRegistry, type CreditsEvent, type TimerApi } from '../../src/guard/throttle.ts';
import type { SpliceThrottle } from '../../src/common/splice.ts';
import type { LimitRecord } from '../../src/store/ops-store.ts';

const MB = 1000 * 1000;

/** Simulated time: a clock and timers that fire in order when the test advances. */
class SimTime implements TimerApi {
  now = 5_000_000;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  readonly clock = (): number => this.now;
  set(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  }
  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  get armed(): number {
    return this.pending.size;
  }
  /** Runs timers in time order up to `ms` from now. */
  run(ms: number, each?: () => void): void {
    const end = this.now + ms;
    for (;;) {
      let nextId: number | undefined;
      let next: { at: number; fn: () => void } | undefined;
      for (const [id, t] of this.pending) if (!next || t.at < next.at || (t.at === next.at && id < (nextId ?? Infinity))) [nextId, next] = [id, t];
      if (!next || next.at > end) break;
      this.pending.delete(nextId as number);
      this.now = Math.max(this.now, next.at);
      next.fn();
      each?.();
    }
    this.now = end;
  }
}

/** A source that always has data: offers chunks until the gate says wait, resumes on release
 * (one tick later, as a paused socket does). Counts what the gate let through. */
class Sender {
  sent = 0;
  constructor(
    private readonly time: SimTime,
    private readonly gate: SpliceThrottle,
    private readonly chunk: number,
  ) {}
  private readonly release = (): void => {
    this.sent += this.chunk;
    this.time.set(this.offer, 0);
  };
  readonly offer = (): void => {
    for (let i = 0; i < 10_000; i++) {
      if (!this.gate.admit(this.chunk, this.release)) return;
      this.sent += this.chunk;
    }
    throw new Error('the gate never said wait');
  };
}

const limit = (scope: 'tunnel' | 'user', name: string, base: number, max = base, cap = 0): LimitRecord => ({
  scope,
  name,
  baselineBytesPerSecond: base,
  maxBytesPerSecond: max,
  creditCapBytes: cap,
});

function setup(): { time: SimTime; registry: ShapingRegistry; events: CreditsEvent[] } {
  const time = new SimTime();
  const events: CreditsEvent[] = [];
  const registry = new ShapingRegistry({ clock: time.clock, timers: time, onCredits: (e) => events.push(e) });
  return { time, registry, events };
}

test('no limit for a tunnel or user: no throttle at all', () => {
  const { registry } = setup();
  registry.applyLimits([limit('tunnel', 'web', MB)]);
  assert.equal(registry.forStream('db', 'alice'), undefined);
  assert.ok(registry.forStream('web', 'alice'));
});

test('streams of one tunnel share its bucket fairly, with one timer for the bucket', () => {
  const { time, registry } = setup();
  registry.applyLimits([limit('tunnel', 'web', 2 * MB)]);
  const senders = [0, 1, 2].map(() => new Sender(time, (registry.forStream('web', 'u') as { up: SpliceThrottle }).up, 16 * 1024));
  for (const s of senders) s.offer();
  let maxTimers = 0;
  time.run(10_000, () => (maxTimers = Math.max(maxTimers, time.armed)));
  const total = senders.reduce((n, s) => n + s.sent, 0);
  assert.ok(Math.abs(total - 20 * MB) < 0.2 * MB, `total ${total}`);
  for (const s of senders) assert.ok(Math.abs(s.sent - total / 3) < 0.03 * total, `shares ${senders.map((x) => x.sent).join(', ')}`);
  // Resume ticks of the senders are timers of this simulation too: at most one each, plus the
  // bucket's one.
  assert.ok(maxTimers <= 1 + senders.length, `timers armed at once: ${maxTimers}`);
  assert.ok(registry.armedTimers() <= 1);
  const [bucket] = registry.snapshot();
  assert.equal(bucket?.streams, 3);
  assert.ok((bucket?.waiting ?? 0) >= 1 && (bucket?.waiting ?? 0) <= 3);
});

test('a stream under a tunnel limit and a user limit obeys both; the user limit spans tunnels', () => {
  const { time, registry } = setup();
  registry.applyLimits([limit('tunnel', 'web', 4 * MB), limit('user', 'alice', 1 * MB)]);
  const alice = new Sender(time, (registry.forStream('web', 'alice') as { up: SpliceThrottle }).up, 16 * 1024);
  const bob = new Sender(time, (registry.forStream('web', 'bob') as { up: SpliceThrottle }).up, 16 * 1024);
  const aliceDb = new Sender(time, (registry.forStream('db', 'alice') as { up: SpliceThrottle }).up, 16 * 1024);
  for (const s of [alice, bob, aliceDb]) s.offer();
  time.run(10_000);
  // alice: 1 MB/s over both of her streams, half each; bob: what web has left (3.5 MB/s).
  assert.ok(Math.abs(alice.sent + aliceDb.sent - 10 * MB) < 0.2 * MB, `alice ${alice.sent} + ${aliceDb.sent}`);
  assert.ok(Math.abs(alice.sent - aliceDb.sent) < 0.5 * MB, `alice ${alice.sent} vs ${aliceDb.sent}`);
  assert.ok(Math.abs(bob.sent - 35 * MB) < 0.7 * MB, `bob ${bob.sent}`);
  assert.ok(alice.sent + bob.sent <= 40 * MB + 0.3 * MB, 'the tunnel limit holds');
  // The other way: the tunnel is the tighter limit.
  registry.applyLimits([limit('tunnel', 'web', 1 * MB), limit('user', 'alice', 4 * MB)]);
  const before = alice.sent + bob.sent;
  time.run(10_000);
  const after = alice.sent + bob.sent - before;
  assert.ok(Math.abs(after - 10 * MB) < 0.3 * MB, `web after tightening: ${after}`);
});

test('credits: both directions of a stream draw on one bucket; a burst, the exhaustion event, then the baseline', () => {
  const { time, registry, events } = setup();
  registry.applyLimits([limit('tunnel', 'web', 1 * MB, 5 * MB, 4 * MB)]);
  const gates = registry.forStream('web', 'alice') as { up: SpliceThrottle; down: SpliceThrottle };
  const up = new Sender(time, gates.up, 16 * 1024);
  const down = new Sender(time, gates.down, 16 * 1024);
  up.offer();
  down.offer();
  time.run(500);
  const burst = registry.snapshot()[0];
  assert.equal(burst?.state, 'bursting');
  assert.equal(burst?.allowedBytesPerSecond, 5 * MB);
  assert.equal(burst?.streams, 1, 'one stream, counted once for its two directions');
  // The shape the metrics and the dashboard read (OpsView.shaping).
  const [ops] = registry.opsSnapshot();
  assert.equal(ops?.state, 'burst');
  assert.equal(ops?.creditCap, 4 * MB);
  assert.equal(ops?.credits, burst?.credits);
  // 0.5 s at 5 MB/s plus the 250 KB of pacing depth sent at the start: 5.5 MB/s.
  assert.ok(Math.abs((ops?.rateBytesPerSecond ?? 0) - 5.5 * MB) < 0.1 * MB, `rate ${ops?.rateBytesPerSecond}`);
  time.run(4_500);
  assert.equal(events.length, 1);
  const event = events[0] as CreditsEvent;
  assert.equal(event.kind, 'credits-exhausted');
  assert.equal(event.scope, 'tunnel');
  assert.equal(event.name, 'web');
  assert.equal(event.baselineBytesPerSecond, 1 * MB);
  assert.ok(event.time instanceof Date);
  const end = registry.snapshot()[0];
  assert.equal(end?.state, 'baseline');
  assert.equal(end?.exhausted, true);
  assert.equal(registry.opsSnapshot()[0]?.state, 'baseline');
  assert.ok(Math.abs((registry.opsSnapshot()[0]?.rateBytesPerSecond ?? 0) - 1 * MB) < 0.1 * MB);
  // Burst: (4 MB - 0.25 MB depth) / 4 MB/s ≈ 0.94 s at 5 MB/s, then 4.06 s at 1 MB/s, for both
  // directions together, shared about evenly.
  const total = up.sent + down.sent;
  assert.ok(Math.abs(total - (0.25 * MB + 0.9375 * 5 * MB + 4.0625 * MB)) < 0.1 * MB, `sent ${up.sent} + ${down.sent}`);
  assert.ok(Math.abs(up.sent - down.sent) < 0.05 * total, `up ${up.sent}, down ${down.sent}`);
  assert.equal(end?.totalBytes, total);
});

test('reloading limits keeps the credits of unchanged buckets and reconfigures changed ones in place', () => {
  const { time, registry } = setup();
  const web = limit('tunnel', 'web', 1 * MB, 5 * MB, 8 * MB);
  const first = registry.applyLimits([web]);
  assert.deepEqual(first.added, ['tunnel:web']);
  const sender = new Sender(time, (registry.forStream('web', 'alice') as { up: SpliceThrottle }).up, 16 * 1024);
  sender.offer();
  time.run(1_000);
  const credits = (): number => registry.snapshot()[0]?.credits ?? -1;
  const spent = credits();
  assert.ok(spent < 5 * MB, `credits after a second of burst: ${spent}`);
  // Same numbers (new object, as a reload from the store gives): kept, credits untouched.
  const again = registry.applyLimits([{ ...web }, limit('user', 'bob', MB)]);
  assert.deepEqual(again.kept, ['tunnel:web']);
  assert.deepEqual(again.added, ['user:bob']);
  assert.equal(credits(), spent);
  // Changed max: the same bucket, the same credits; the live stream follows the new rate.
  const changed = registry.applyLimits([{ ...web, maxBytesPerSecond: 2 * MB }, limit('user', 'bob', MB)]);
  assert.deepEqual(changed.changed, ['tunnel:web']);
  assert.equal(credits(), spent);
  const before = sender.sent;
  time.run(1_000);
  const rate = sender.sent - before;
  assert.ok(Math.abs(rate - 2 * MB) < 0.1 * MB, `after the change: ${rate} bytes in 1 s`);
});

test('removing a limit releases the waiting streams; they then run unshaped', () => {
  const { time, registry } = setup();
  registry.applyLimits([limit('tunnel', 'web', 100_000)]);
  const gate = (registry.forStream('web', 'alice') as { up: SpliceThrottle }).up;
  let released = 0;
  const release = (): void => void released++;
  while (gate.admit(64 * 1024, release));
  assert.equal(registry.snapshot()[0]?.waiting, 1);
  assert.equal(registry.armedTimers(), 1);
  const result = registry.applyLimits([]);
  assert.deepEqual(result.removed, ['tunnel:web']);
  assert.equal(released, 1, 'the held chunk goes at once');
  assert.equal(registry.armedTimers(), 0);
  for (let i = 0; i < 100; i++) assert.equal(gate.admit(64 * 1024, release), true);
  assert.deepEqual(registry.snapshot(), []);
  time.run(1_000);
});

test('a stream that ends while waiting leaves its bucket: no release, no timer, no count', () => {
  const { registry } = setup();
  registry.applyLimits([limit('user', 'alice', 10_000)]);
  const gates = registry.forStream('web', 'alice') as { up: SpliceThrottle; down: SpliceThrottle };
  let released = 0;
  while (gates.up.admit(16 * 1024, () => void released++));
  const snap = (): { streams: number; waiting: number } => {
    const s = registry.snapshot()[0];
    return { streams: s?.streams ?? -1, waiting: s?.waiting ?? -1 };
  };
  assert.deepEqual(snap(), { streams: 1, waiting: 1 });
  // splice closes both gates of a finished pair; the stream leaves with the second.
  gates.up.close();
  assert.deepEqual(snap(), { streams: 1, waiting: 0 });
  gates.down.close();
  assert.deepEqual(snap(), { streams: 0, waiting: 0 });
  assert.equal(registry.armedTimers(), 0);
  assert.equal(released, 0);
});

test('an invalid record is reported and skipped; a valid one it replaces stays in force', () => {
  const problems: string[] = [];
  const time = new SimTime();
  const registry = new ShapingRegistry({ clock: time.clock, timers: time, onInvalid: (r, p) => problems.push(`${r.scope}:${r.name}: ${p}`) });
  registry.applyLimits([limit('tunnel', 'web', MB)]);
  const result = registry.applyLimits([limit('tunnel', 'web', MB, MB / 2), limit('tunnel', 'db', 0)]);
  assert.deepEqual(result.invalid, ['tunnel:web', 'tunnel:db']);
  assert.deepEqual(result.kept, ['tunnel:web']);
  assert.equal(problems.length, 2);
  assert.match(problems[0] ?? '', /^tunnel:web: max \(500000 bytes\/s\) must be at least the baseline/);
  assert.match(problems[1] ?? '', /^tunnel:db: baseline must be a positive rate/);
  assert.deepEqual(
    registry.snapshot().map((s) => `${s.scope}:${s.name}:${s.baselineBytesPerSecond}`),
    ['tunnel:web:1000000'],
  );
});
