// Durations as operators write them on the command line ("30s", "10m", "1h", "1d", "1w",
// "1h30m", "500ms") and as people read them back ("3 days", "2 h 5 min").
// Owns: duration syntax. Must not: keep state or read clocks.
import { UsageError } from '../common/errors.js';

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/**
 * Milliseconds in `text`: one or more NUMBER+UNIT parts (units ms, s, m, h, d, w; decimals
 * allowed: "1.5h"). Throws UsageError naming `what` (the flag) with an example when it is not
 * one, including a bare number (is "10" seconds or minutes?).
 */
export function parseDuration(text: string, what: string, options: { allowZero?: boolean } = {}): number {
  const t = text.trim().toLowerCase();
  const part = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = part.exec(t)) !== null) {
    total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? 0);
    matched = part.lastIndex;
  }
  if (t === '' || matched !== t.length) {
    const hint = /^\d+(\.\d+)?$/.test(t) ? ` needs a unit (did you mean '${t}s' or '${t}m'?)` : ' is not a duration';
    throw new UsageError(`${what}: '${text}'${hint}; write e.g. 30s, 10m, 1h, 1d, 1w or 1h30m`, 'WS_BAD_DURATION');
  }
  if (!Number.isFinite(total) || total > 100 * 365 * UNIT_MS.d!) {
    throw new UsageError(`${what}: '${text}' is longer than 100 years`, 'WS_BAD_DURATION');
  }
  if (total === 0 && !options.allowZero) throw new UsageError(`${what}: '${text}' is zero; give a positive duration`, 'WS_BAD_DURATION');
  return Math.round(total);
}

/** "45 s", "10 min", "2 h 5 min", "3 days", "2 weeks": rounded to the two largest units. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)} ms`;
  const s = Math.round(abs / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return s % 60 === 0 ? `${min} min` : `${min} min ${s % 60} s`;
  const h = Math.floor(min / 60);
  if (h < 24) return min % 60 === 0 ? `${h} h` : `${h} h ${min % 60} min`;
  const d = Math.floor(h / 24);
  if (d < 14) return h % 24 === 0 ? `${d} day${d === 1 ? '' : 's'}` : `${d} day${d === 1 ? '' : 's'} ${h % 24} h`;
  if (d < 365) return `${Math.floor(d / 7)} weeks${d % 7 === 0 ? '' : ` ${d % 7} day${d % 7 === 1 ? '' : 's'}`}`;
  return `${(d / 365).toFixed(1)} years`;
}
