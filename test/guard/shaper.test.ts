// The credit model on a fake clock: credits earned under the baseline, a burst at max until they
// are spent, the fall back to the baseline, the cap, the restore threshold, reconfiguration, and
// an invariant over random senders (never more than the rates and credits allow).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CreditBucket, LimitInvalid, limitProblem, type CreditTransition, type ShaperLimit } from '../../src/guard/shaper.ts';

const KB = 1000;
const MB = 1000 * 1000;

class FakeClock {
  now = 1_000_000;
  readonly read = (): number => this.now;
}

/** Sends `chunk`-sized pieces whenever the bucket allows, polling every `stepMs`, for `ms`. */
function greedy(clock: FakeClock, bucket: CreditBucket, ms: number, chunk: number, onSent?: (t: number, bytes: number) => void, stepMs = 1): number {
  let sent = 0;
  const end = clock.now + ms;
  while (clock.now < end) {
    while (bucket.ready()) {
      bucket.take(chunk);
      sent += chunk;
      onSent?.(clock.now, chunk);
    }
    clock.now += stepMs;
  }
  return sent;
}

function bucketWith(limit: ShaperLimit, clock: FakeClock, extra: { initialCredits?: number } = {}): { bucket: CreditBucket; events: CreditTransition[] } {
  const events: CreditTransition[] = [];
  const bucket = new CreditBucket(limit, { clock: clock.read, onTransition: (t) => events.push(t), ...extra });
  return { bucket, events };
}

test('credits accumulate at the unused part of the baseline, up to the cap', () => {
  const clock = new FakeClock();
  const limit = { baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 4 * MB, creditCapBytes: 10 * MB };
  const { bucket, events } = bucketWith(limit, clock, { initialCredits: 0 });
  // Without credits the bucket starts at the baseline, and says nothing (nothing ran out).
  assert.equal(bucket.snapshot().allowedBytesPerSecond, 1 * MB);
  assert.equal(bucket.snapshot().credits, 0);
  // 250 KB/s for 4 s: a quarter of the baseline used, three quarters earned.
  for (let i = 0; i < 40; i++) {
    clock.now += 100;
    assert.ok(bucket.ready());
    bucket.take(25 * KB);
  }
  const after = bucket.snapshot();
  assert.equal(after.credits, 3 * MB);
  assert.equal(after.state, 'baseline', 'under the baseline is not a burst');
  assert.ok(Math.abs(after.measuredBytesPerSecond - 250 * KB) < 15 * KB, `measured ${after.measuredBytesPerSecond}`);
  assert.equal(after.allowedBytesPerSecond, 4 * MB, 'credits above the threshold allow bursting again');
  assert.deepEqual(events, [], 'a quiet start and its end are not announced');
  // Idle far longer than needed: the cap holds.
  clock.now += 100_000;
  const idle = bucket.snapshot();
  assert.equal(idle.credits, 10 * MB);
  assert.equal(idle.state, 'idle');
  assert.equal(idle.measuredBytesPerSecond, 0);
});

test('a greedy sender bursts at max until the credits are gone, then runs at the baseline', () => {
  const clock = new FakeClock();
  // 8 MB of credit spent at (5 - 1) MB/s: the burst lasts 2 s.
  const limit = { baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 5 * MB, creditCapBytes: 8 * MB };
  const { bucket, events } = bucketWith(limit, clock);
  const start = clock.now;
  const perSecond = new Map<number, number>();
  let midBurst: ReturnType<CreditBucket['snapshot']> | undefined;
  greedy(clock, bucket, 8_000, 16 * 1024, (t, bytes) => {
    const second = Math.floor((t - start) / 1000);
    perSecond.set(second, (perSecond.get(second) ?? 0) + bytes);
    if (!midBurst && t - start >= 1_000) midBurst = bucket.snapshot();
  });
  assert.equal(events.length, 1, JSON.stringify(events));
  const exhausted = events[0] as CreditTransition;
  assert.equal(exhausted.kind, 'exhausted');
  assert.equal(exhausted.baselineBytesPerSecond, 1 * MB);
  const burstMs = exhausted.atMs - start;
  // The first 50 ms of pacing depth (250 KB at max) is sent at once and paid from the credits too.
  const expectedMs = ((8 * MB - 0.05 * 5 * MB) / (4 * MB)) * 1000;
  assert.ok(Math.abs(burstMs - expectedMs) <= 20, `burst lasted ${burstMs} ms, expected ${expectedMs}`);
  // Second 0: max rate plus the depth. Second 1: max until the credits are gone, then the
  // baseline. Seconds 2-7: baseline.
  const expected = [5.25 * MB, (expectedMs / 1000 - 1) * 5 * MB + (2 - expectedMs / 1000) * 1 * MB];
  for (const s of [0, 1]) {
    const bytes = perSecond.get(s) ?? 0;
    assert.ok(Math.abs(bytes - (expected[s] as number)) <= 40 * 1024, `second ${s}: ${bytes} bytes, expected ${expected[s]}`);
  }
  for (const s of [2, 3, 4, 5, 6, 7]) {
    const bytes = perSecond.get(s) ?? 0;
    assert.ok(Math.abs(bytes - 1 * MB) <= 20 * 1024, `second ${s}: ${bytes} bytes`);
  }
  assert.ok(midBurst);
  assert.equal(midBurst.state, 'bursting');
  assert.equal(midBurst.allowedBytesPerSecond, 5 * MB);
  assert.ok(Math.abs(midBurst.credits - 3.75 * MB) < 50 * KB, `credits mid-burst ${midBurst.credits}`);
  assert.ok(midBurst.secondsOfCreditLeft !== null && Math.abs(midBurst.secondsOfCreditLeft - 0.94) < 0.1, `left ${midBurst.secondsOfCreditLeft}`);
  const end = bucket.snapshot();
  assert.equal(end.state, 'baseline');
  assert.equal(end.exhausted, true);
  assert.equal(end.allowedBytesPerSecond, 1 * MB);
  assert.ok(end.credits < 20 * 1024, `credits at the baseline: ${end.credits}`);
  // measured over the last 5 s, all of them at the baseline by now
  assert.ok(Math.abs(end.measuredBytesPerSecond - 1 * MB) < 30 * KB, `measured ${end.measuredBytesPerSecond}`);
});

test('sending at the baseline earns nothing; bursting resumes only above the restore threshold', () => {
  const clock = new FakeClock();
  const limit = { baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 5 * MB, creditCapBytes: 8 * MB };
  const { bucket, events } = bucketWith(limit, clock);
  greedy(clock, bucket, 3_000, 16 * 1024);
  assert.deepEqual(events.map((e) => e.kind), ['exhausted']);
  // Ten more seconds flat out at the baseline: still exhausted, no flapping.
  greedy(clock, bucket, 10_000, 16 * 1024);
  assert.deepEqual(events.map((e) => e.kind), ['exhausted']);
  assert.equal(bucket.snapshot().exhausted, true);
  // Stop. The threshold is 5 % of the cap (400 KB), earned at 1 MB/s in about 0.4 s.
  const stoppedAt = clock.now;
  clock.now += 300;
  assert.equal(bucket.snapshot().exhausted, true, 'not yet above the threshold');
  clock.now += 700;
  const snap = bucket.snapshot();
  assert.equal(snap.exhausted, false);
  assert.equal(snap.allowedBytesPerSecond, 5 * MB);
  assert.deepEqual(events.map((e) => e.kind), ['exhausted', 'restored']);
  // Dated when the credits crossed the threshold, not when the snapshot looked.
  const restoredAfter = (events[1] as CreditTransition).atMs - stoppedAt;
  assert.ok(restoredAfter >= 390 && restoredAfter <= 430, `restored ${restoredAfter} ms after the stop`);
});

test('the cap is respected however long the bucket rests, and a burst spends at most cap + baseline time', () => {
  const clock = new FakeClock();
  const limit = { baselineBytesPerSecond: 100 * KB, maxBytesPerSecond: 10 * MB, creditCapBytes: 2 * MB };
  const { bucket } = bucketWith(limit, clock, { initialCredits: 0 });
  clock.now += 3_600_000;
  assert.equal(bucket.snapshot().credits, 2 * MB);
  const start = clock.now;
  const sent = greedy(clock, bucket, 1_000, 8 * 1024);
  // In one second: the cap, the baseline's second, the pacing depth and one chunk at most.
  assert.ok(sent <= 2 * MB + 100 * KB + 0.05 * 10 * MB + 8 * 1024, `sent ${sent}`);
  assert.ok(sent >= 2 * MB, `sent ${sent}`);
  assert.ok(clock.now - start >= 1_000);
});

test('a plain rate limit (no credits) paces at the baseline and never announces anything', () => {
  const clock = new FakeClock();
  const events: CreditTransition[] = [];
  const bucket = new CreditBucket({ baselineBytesPerSecond: 2 * MB, maxBytesPerSecond: 2 * MB, creditCapBytes: 0 }, { clock: clock.read, onTransition: (t) => events.push(t) });
  const sent = greedy(clock, bucket, 5_000, 32 * 1024);
  assert.ok(Math.abs(sent - 10 * MB) <= 0.1 * MB + 64 * 1024, `sent ${sent}`);
  assert.deepEqual(events, []);
  const snap = bucket.snapshot();
  assert.equal(snap.state, 'baseline');
  assert.equal(snap.exhausted, false);
});

test('reconfiguring keeps the credits (clamped to a smaller cap) and follows the new rates', () => {
  const clock = new FakeClock();
  const { bucket, events } = bucketWith({ baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 5 * MB, creditCapBytes: 8 * MB }, clock);
  greedy(clock, bucket, 1_000, 16 * 1024); // sends 5 MB + the 250 KB depth, earns 1 MB
  const before = bucket.snapshot().credits;
  assert.ok(Math.abs(before - 3.75 * MB) < 50 * KB, `credits ${before}`);
  bucket.reconfigure({ baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 9 * MB, creditCapBytes: 8 * MB });
  assert.equal(bucket.snapshot().credits, before);
  assert.equal(bucket.snapshot().allowedBytesPerSecond, 9 * MB);
  bucket.reconfigure({ baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 9 * MB, creditCapBytes: 1 * MB });
  assert.equal(bucket.snapshot().credits, 1 * MB);
  // Removing the headroom ends an exhaustion, and says so (an alert must not hang open).
  greedy(clock, bucket, 2_000, 16 * 1024);
  assert.deepEqual(events.map((e) => e.kind), ['exhausted']);
  bucket.reconfigure({ baselineBytesPerSecond: 3 * MB, maxBytesPerSecond: 3 * MB, creditCapBytes: 0 });
  assert.deepEqual(events.map((e) => e.kind), ['exhausted', 'restored']);
  assert.equal(bucket.snapshot().allowedBytesPerSecond, 3 * MB);
});

test('a plain limit that gains bursting starts without credits and earns them, quietly', () => {
  const clock = new FakeClock();
  const { bucket, events } = bucketWith({ baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 1 * MB, creditCapBytes: 0 }, clock);
  greedy(clock, bucket, 1_000, 16 * 1024);
  bucket.reconfigure({ baselineBytesPerSecond: 1 * MB, maxBytesPerSecond: 4 * MB, creditCapBytes: 4 * MB });
  const after = bucket.snapshot();
  assert.equal(after.credits, 0);
  assert.equal(after.allowedBytesPerSecond, 1 * MB);
  clock.now += 1_000;
  assert.equal(bucket.snapshot().allowedBytesPerSecond, 4 * MB, 'a second of rest earns more than the 5 % threshold');
  assert.deepEqual(events, [], 'nothing ran out, so nothing is announced');
});

test('limits that cannot be modelled are refused with the reason', () => {
  assert.match(limitProblem({ baselineBytesPerSecond: 0, maxBytesPerSecond: 1, creditCapBytes: 0 }) ?? '', /baseline must be a positive rate/);
  assert.match(limitProblem({ baselineBytesPerSecond: 2, maxBytesPerSecond: 1, creditCapBytes: 0 }) ?? '', /max \(1 bytes\/s\) must be at least the baseline/);
  assert.match(limitProblem({ baselineBytesPerSecond: 1, maxBytesPerSecond: 1, creditCapBytes: -1 }) ?? '', /credit cap/);
  assert.match(limitProblem({ baselineBytesPerSecond: Number.NaN, maxBytesPerSecond: 1, creditCapBytes: 0 }) ?? '', /baseline/);
  assert.equal(limitProblem({ baselineBytesPerSecond: 1, maxBytesPerSecond: 1, creditCapBytes: 0 }), undefined);
  assert.throws(() => new CreditBucket({ baselineBytesPerSecond: 1, maxBytesPerSecond: Infinity, creditCapBytes: 0 }), (err: unknown) => err instanceof LimitInvalid && err.code === 'WS_LIMIT_INVALID');
});

test('over any run, a sender never gets more than the rates and credits allow, and a greedy one gets the baseline', () => {
  fc.assert(
    fc.property(
      fc.record({
        base: fc.integer({ min: 10 * KB, max: 5 * MB }),
        headroom: fc.integer({ min: 0, max: 5 * MB }),
        cap: fc.integer({ min: 0, max: 20 * MB }),
        initial: fc.double({ min: 0, max: 1, noNaN: true }),
        chunk: fc.integer({ min: 1, max: 64 * 1024 }),
        // pauses (ms) between bursts of sending, and how long each burst of sending lasts
        pattern: fc.array(fc.tuple(fc.integer({ min: 0, max: 3_000 }), fc.integer({ min: 1, max: 2_000 })), { minLength: 1, maxLength: 6 }),
      }),
      ({ base, headroom, cap, initial, chunk, pattern }) => {
        const clock = new FakeClock();
        const max = base + headroom;
        const initialCredits = Math.floor(cap * initial);
        const bucket = new CreditBucket({ baselineBytesPerSecond: base, maxBytesPerSecond: max, creditCapBytes: cap }, { clock: clock.read, initialCredits });
        const start = clock.now;
        let sent = 0;
        let greedyMs = 0;
        let greedySent = 0;
        for (const [pause, busy] of pattern) {
          clock.now += pause;
          const got = greedy(clock, bucket, busy, chunk, undefined, 2);
          sent += got;
          greedyMs += busy;
          greedySent += got;
          const elapsed = (clock.now - start) / 1000;
          const depth = max * 0.05;
          // Upper bounds: the peak rate, and the baseline plus every credit there could be.
          assert.ok(sent <= max * elapsed + depth + chunk + 1, `peak: sent ${sent} in ${elapsed} s at max ${max}`);
          assert.ok(sent <= base * elapsed + initialCredits + depth + 2 * chunk + 1, `credits: sent ${sent} in ${elapsed} s, base ${base}, credits ${initialCredits}`);
        }
        // Lower bound: while busy, a greedy sender is never held under the baseline (one chunk
        // and one polling step per burst of sending aside).
        const slack = pattern.length * (2 * chunk + (base * 4) / 1000);
        assert.ok(greedySent + slack >= (base * greedyMs) / 1000, `greedy got ${greedySent} in ${greedyMs} ms at base ${base}`);
      },
    ),
    { numRuns: 60 },
  );
});
