import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../../src/agent/backoff.ts';

test('doubles from the first delay and caps at the maximum', () => {
  const b = new Backoff({ initialMs: 500, maxMs: 30_000, jitter: 0.5 }, () => 1);
  const delays = Array.from({ length: 10 }, () => b.next());
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test('jitter keeps each delay within [ceiling*(1-jitter), ceiling]', () => {
  const low = new Backoff({ initialMs: 1000, maxMs: 30_000, jitter: 0.5 }, () => 0);
  assert.deepEqual([low.next(), low.next(), low.next()], [500, 1000, 2000]);
  const real = new Backoff({ initialMs: 1000, maxMs: 30_000, jitter: 0.5 });
  for (let i = 0; i < 50; i++) {
    const d = real.next();
    assert.ok(d <= 30_000 && d >= 500, `delay ${d}`);
  }
});

test('reset starts over', () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
  b.next();
  b.next();
  b.reset();
  assert.equal(b.next(), 100);
  assert.equal(b.attempts, 1);
});
