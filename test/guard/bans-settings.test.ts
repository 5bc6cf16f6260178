// Ban settings from relay flags (defaults in one place, clear errors), durations, and the
// growth of repeat bans.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BAN_DEFAULTS, banDurationMs, banSettingsFromFlags, defaultBanSettings } from '../../src/guard/ban-settings.ts';
import { formatDuration, parseDuration } from '../../src/guard/duration.ts';
import { UsageError } from '../../src/common/errors.ts';

test('durations: units, combinations, decimals; clear errors for a bare number and nonsense', () => {
  assert.equal(parseDuration('30s', 'x'), 30_000);
  assert.equal(parseDuration('10m', 'x'), 600_000);
  assert.equal(parseDuration('1h', 'x'), 3_600_000);
  assert.equal(parseDuration('1d', 'x'), 86_400_000);
  assert.equal(parseDuration('1w', 'x'), 7 * 86_400_000);
  assert.equal(parseDuration('1h30m', 'x'), 5_400_000);
  assert.equal(parseDuration('1.5s', 'x'), 1_500);
  assert.equal(parseDuration('250ms', 'x'), 250);
  assert.equal(parseDuration(' 2M ', 'x'), 120_000, 'case and spaces around do not matter');
  assert.equal(parseDuration('0s', 'x', { allowZero: true }), 0);
  assert.throws(() => parseDuration('10', '--ban-time'), /--ban-time: '10' needs a unit \(did you mean '10s' or '10m'\?\); write e.g. 30s, 10m/);
  assert.throws(() => parseDuration('ten minutes', '--ban-time'), /--ban-time: 'ten minutes' is not a duration/);
  assert.throws(() => parseDuration('10x', '--ban-time'), /is not a duration/);
  assert.throws(() => parseDuration('', '--ban-time'), /is not a duration/);
  assert.throws(() => parseDuration('0s', '--ban-time'), /is zero/);
  assert.throws(() => parseDuration('99999w', '--ban-time'), /longer than 100 years/);
  assert.equal(formatDuration(45_000), '45 s');
  assert.equal(formatDuration(600_000), '10 min');
  assert.equal(formatDuration(7_500_000), '2 h 5 min');
  assert.equal(formatDuration(3 * 86_400_000), '3 days');
  assert.equal(formatDuration(90 * 86_400_000), '12 weeks 6 days');
});

test('defaults: fail2ban numbers with growth on; loopback not ignored', () => {
  const s = defaultBanSettings();
  assert.equal(s.maxRetry, 5);
  assert.equal(s.findTimeMs, 600_000);
  assert.equal(s.banTimeMs, 600_000);
  assert.equal(s.increment, 2);
  assert.equal(s.maxBanTimeMs, 7 * 86_400_000);
  assert.deepEqual(s.prefixLengths, { v4: 32, v6: 64 });
  assert.equal(s.ignore.size, 0);
  assert.deepEqual(banSettingsFromFlags({}), s, 'no flags = the defaults');
  assert.equal(BAN_DEFAULTS.maxRetry, s.maxRetry);
});

test('flags override the defaults; --no-ban turns bans off', () => {
  const s = banSettingsFromFlags({
    banMaxretry: '3',
    banFindtime: '1m',
    banTime: '2s',
    banIncrement: '3',
    banMaxtime: '1h',
    banIgnore: ['10.0.0.0/8', '::1'],
    banPrefixV4: '24',
    banPrefixV6: '56',
  });
  assert.ok(s);
  assert.equal(s.maxRetry, 3);
  assert.equal(s.findTimeMs, 60_000);
  assert.equal(s.banTimeMs, 2_000);
  assert.equal(s.increment, 3);
  assert.equal(s.maxBanTimeMs, 3_600_000);
  assert.deepEqual(s.ignore.toStrings(), ['10.0.0.0/8', '::1/128']);
  assert.deepEqual(s.prefixLengths, { v4: 24, v6: 56 });
  assert.equal(banSettingsFromFlags({ ban: false, banMaxretry: '3' }), undefined);
});

test('bad flags are usage errors naming the flag', () => {
  const bad: Array<[Parameters<typeof banSettingsFromFlags>[0], RegExp]> = [
    [{ banMaxretry: '0' }, /--ban-maxretry: '0' should be a whole number from 1/],
    [{ banMaxretry: 'five' }, /--ban-maxretry/],
    [{ banTime: '10' }, /--ban-time: '10' needs a unit/],
    [{ banFindtime: 'soon' }, /--ban-findtime: 'soon' is not a duration/],
    [{ banIncrement: '0.5' }, /--ban-increment: '0.5' should be a factor from 1/],
    [{ banMaxtime: '1m', banTime: '10m' }, /--ban-maxtime \(1m\) is shorter than --ban-time \(10m\)/],
    [{ banIgnore: ['10.0.0.0/99'] }, /--ban-ignore: "10.0.0.0\/99" has prefix length/],
    [{ banPrefixV6: '8' }, /--ban-prefix-v6: '8' should be a whole number from 16 to 128/],
    [{ banPrefixV4: '33' }, /--ban-prefix-v4/],
  ];
  for (const [flags, pattern] of bad) {
    assert.throws(() => banSettingsFromFlags(flags), (err: unknown) => err instanceof UsageError && pattern.test(err.message), JSON.stringify(flags));
  }
});

test('repeat bans grow by the increment and stop at the cap', () => {
  const s = { banTimeMs: 600_000, increment: 2, maxBanTimeMs: 3_600_000 };
  assert.deepEqual([1, 2, 3, 4, 5, 50, 5000].map((n) => banDurationMs(s, n)), [600_000, 1_200_000, 2_400_000, 3_600_000, 3_600_000, 3_600_000, 3_600_000]);
  assert.equal(banDurationMs({ ...s, increment: 1 }, 9), 600_000, 'increment 1: every ban the same');
});
