// Rates and sizes as operators type them, and as status and `limit list` print them; every
// refusal names the flag and shows what to write instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { burstSeconds, formatRate, formatSize, parseRate, parseSize } from '../../src/guard/shaper-units.ts';
import { UsageError } from '../../src/common/errors.ts';

test('rates: bits with "bit" or "b/s", bytes with "B/s", decimal and binary prefixes', () => {
  const cases: Array<[string, number]> = [
    ['10Mbit', 1_250_000],
    ['10mbit', 1_250_000],
    ['10 Mbit/s', 1_250_000],
    ['10Mbits', 1_250_000],
    ['10Mb/s', 1_250_000],
    ['500kbit', 62_500],
    ['1Gbit', 125_000_000],
    ['1.5MB/s', 1_500_000],
    ['1.5MBps', 1_500_000],
    ['2MiB/s', 2 * 1024 * 1024],
    ['64KiB/s', 64 * 1024],
    ['800B/s', 800],
    ['1Mibit', (1024 * 1024) / 8],
    ['.5MB/s', 500_000],
  ];
  for (const [text, bytes] of cases) assert.equal(parseRate(text, '--baseline'), bytes, text);
});

test('rates that cannot be read say why, naming the flag', () => {
  const refusals: Array<[string, RegExp]> = [
    ['10', /^--max: '10' needs a unit \(bits or bytes per second\?\), e\.g\. 10Mbit/],
    ['10Mbps', /^--max: '10Mbps' is ambiguous .*write 10Mbit or 10MB\/s/],
    ['1.5MB', /^--max: '1\.5MB' is a size, not a rate; write 1\.5MB\/s/],
    ['fast', /^--max: 'fast' is not understood; write a number and a unit/],
    ['10 Mbitz', /^--max: '10 Mbitz' is not understood/],
    ['10M', /^--max: '10M' is not understood/],
    ['-5Mbit', /^--max: '-5Mbit' is not understood/],
    ['0Mbit', /^--max: '0Mbit' is below 1 byte per second/],
    ['1bit', /^--max: '1bit' is below 1 byte per second/],
    ['99999999Tbit', /^--max: '99999999Tbit' is too large for a rate/],
  ];
  for (const [text, pattern] of refusals) {
    assert.throws(() => parseRate(text, '--max'), (err: unknown) => err instanceof UsageError && pattern.test(err.message), text);
  }
});

test('sizes: bytes with decimal or binary prefixes; bare numbers are bytes', () => {
  const cases: Array<[string, number]> = [
    ['1GB', 1e9],
    ['512MiB', 512 * 1024 * 1024],
    ['0', 0],
    ['4096', 4096],
    ['1.5 GiB', 1.5 * 1024 ** 3],
    ['10kB', 10_000],
    ['2TB', 2e12],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text, '--credits'), bytes, text);
  assert.throws(() => parseSize('1Gbit', '--credits'), /^UsageError: --credits: '1Gbit' is in bits; sizes are bytes/);
  assert.throws(() => parseSize('1GB/s', '--credits'), /^UsageError: --credits: '1GB\/s' is a rate; this takes a size/);
  assert.throws(() => parseSize('lots', '--credits'), /^UsageError: --credits: 'lots' is not understood; write a number and a unit, e\.g\. 1GB, 512MiB or 0/);
});

test('printing: rates in bits and bytes, sizes in the units they were likely typed in', () => {
  assert.equal(formatRate(1_250_000), '10 Mbit/s (1.25 MB/s)');
  assert.equal(formatRate(62_500), '500 kbit/s (62.5 kB/s)');
  assert.equal(formatRate(2 * 1024 * 1024), '16.8 Mbit/s (2 MiB/s)');
  assert.equal(formatSize(1e9), '1 GB');
  assert.equal(formatSize(512 * 1024 * 1024), '512 MiB');
  assert.equal(formatSize(0), '0 B');
  assert.equal(formatSize(1500), '1.5 kB');
  // What the parser reads, the printer gives back.
  for (const text of ['10Mbit', '500kbit', '1.5MB/s', '2MiB/s']) {
    const bytes = parseRate(text, '--baseline');
    assert.ok(formatRate(bytes).length > 0);
  }
  assert.equal(parseSize(formatSize(512 * 1024 * 1024).replace(' ', ''), '--credits'), 512 * 1024 * 1024);
});

test('a full burst lasts the cap over the headroom above the baseline', () => {
  assert.equal(burstSeconds({ baselineBytesPerSecond: 1e6, maxBytesPerSecond: 5e6, creditCapBytes: 8e6 }), 2);
  assert.equal(burstSeconds({ baselineBytesPerSecond: 1e6, maxBytesPerSecond: 1e6, creditCapBytes: 8e6 }), null);
  assert.equal(burstSeconds({ baselineBytesPerSecond: 1e6, maxBytesPerSecond: 5e6, creditCapBytes: 0 }), null);
});
