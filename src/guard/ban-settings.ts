// Settings of the automatic bans and their defaults, in one place: `warpstone relay` flags come
// through here (validated, with errors that name the flag), and `warpstone ban add` takes its
// default duration from here.
// Owns: ban defaults and flag validation. Must not: ban anything or touch the store.
import { UsageError } from '../common/errors.js';
import { parseDuration } from './duration.js';
import { CidrList, DEFAULT_PREFIX_LENGTHS, type PrefixLengths } from './prefix.js';

/**
 * fail2ban's defaults (maxretry 5, findtime 10m, bantime 10m) with bantime.increment on:
 * each repeat offence doubles the ban, up to a week. Loopback is NOT in the ignore list by
 * default: a relay reached through a local TLS terminator or an SSH tunnel sees every client
 * as 127.0.0.1, and an attacker coming through such a hop must still be stopped; pass
 * `--ban-ignore 127.0.0.0/8 --ban-ignore ::1` when local health checks should never count.
 */
export const BAN_DEFAULTS = {
  maxRetry: 5,
  findTime: '10m',
  banTime: '10m',
  increment: 2,
  maxBanTime: '1w',
  prefixLengths: DEFAULT_PREFIX_LENGTHS,
  /** how long `warpstone ban add` bans when no --for is given */
  adminBanTime: '1w',
  /** prefixes whose recent failures are remembered; the least recently failing go first */
  maxTracked: 10_000,
  /** how often the relay lifts expired bans and checks the store for bans added elsewhere */
  pollMs: 1_000,
} as const;

export interface BanSettings {
  maxRetry: number;
  findTimeMs: number;
  banTimeMs: number;
  /** factor applied per repeat offence: banTime x increment^(offence-1) */
  increment: number;
  maxBanTimeMs: number;
  prefixLengths: PrefixLengths;
  ignore: CidrList;
  maxTracked: number;
  pollMs: number;
  /** false with --no-ban: failures ban nobody, but bans added with `warpstone ban add` still apply */
  automatic?: boolean;
}

/** The flags of `warpstone relay` that shape bans, as commander hands them over (strings). */
export interface BanFlags {
  /** false with --no-ban */
  ban?: boolean;
  banMaxretry?: string;
  banFindtime?: string;
  banTime?: string;
  banIncrement?: string;
  banMaxtime?: string;
  banIgnore?: string[];
  banPrefixV4?: string;
  banPrefixV6?: string;
}

function integer(text: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`${flag}: '${text}' should be a whole number from ${min} to ${max}`);
  }
  return Number(text);
}

export function defaultBanSettings(): BanSettings {
  return {
    maxRetry: BAN_DEFAULTS.maxRetry,
    findTimeMs: parseDuration(BAN_DEFAULTS.findTime, 'findtime'),
    banTimeMs: parseDuration(BAN_DEFAULTS.banTime, 'bantime'),
    increment: BAN_DEFAULTS.increment,
    maxBanTimeMs: parseDuration(BAN_DEFAULTS.maxBanTime, 'maxbantime'),
    prefixLengths: { ...BAN_DEFAULTS.prefixLengths },
    ignore: new CidrList([]),
    maxTracked: BAN_DEFAULTS.maxTracked,
    pollMs: BAN_DEFAULTS.pollMs,
  };
}

/** Settings from relay flags; undefined when bans are off (--no-ban). */
export function banSettingsFromFlags(flags: BanFlags): BanSettings | undefined {
  if (flags.ban === false) return undefined;
  const s = defaultBanSettings();
  if (flags.banMaxretry !== undefined) s.maxRetry = integer(flags.banMaxretry, '--ban-maxretry', 1, 10_000);
  if (flags.banFindtime !== undefined) s.findTimeMs = parseDuration(flags.banFindtime, '--ban-findtime');
  if (flags.banTime !== undefined) s.banTimeMs = parseDuration(flags.banTime, '--ban-time');
  if (flags.banMaxtime !== undefined) s.maxBanTimeMs = parseDuration(flags.banMaxtime, '--ban-maxtime');
  if (flags.banIncrement !== undefined) {
    const text = flags.banIncrement.trim();
    if (!/^\d+(\.\d+)?$/.test(text) || Number(text) < 1 || Number(text) > 100) {
      throw new UsageError(`--ban-increment: '${flags.banIncrement}' should be a factor from 1 (every ban as long as --ban-time) to 100`);
    }
    s.increment = Number(text);
  }
  if (flags.banPrefixV4 !== undefined) s.prefixLengths.v4 = integer(flags.banPrefixV4, '--ban-prefix-v4', 8, 32);
  if (flags.banPrefixV6 !== undefined) s.prefixLengths.v6 = integer(flags.banPrefixV6, '--ban-prefix-v6', 16, 128);
  if (flags.banIgnore && flags.banIgnore.length > 0) s.ignore = CidrList.parse(flags.banIgnore, '--ban-ignore');
  if (s.maxBanTimeMs < s.banTimeMs) {
    throw new UsageError(`--ban-maxtime (${flags.banMaxtime ?? BAN_DEFAULTS.maxBanTime}) is shorter than --ban-time (${flags.banTime ?? BAN_DEFAULTS.banTime}); the cap must be at least the first ban`);
  }
  return s;
}

/** How long the `offence`-th ban of a prefix lasts. */
export function banDurationMs(settings: Pick<BanSettings, 'banTimeMs' | 'increment' | 'maxBanTimeMs'>, offence: number): number {
  const grown = settings.banTimeMs * settings.increment ** Math.max(0, offence - 1);
  return Math.min(Number.isFinite(grown) ? grown : settings.maxBanTimeMs, settings.maxBanTimeMs);
}
