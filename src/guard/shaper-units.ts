// Rates and sizes as people write them: "10Mbit", "500kbit", "1.5MB/s", "2MiB/s" for rates,
// "1GB", "512MiB" for sizes, and the way `limit list`, `status` and the dashboard print them.
// A lower-case "b" is bits and an upper-case "B" bytes; k, M, G, T are powers of 1000 and
// Ki, Mi, Gi, Ti powers of 1024. "bps" is refused: tc reads "mbps" as megabytes per second,
// most people as megabits, and a limit off by eight is worse than an error.
// Owns: parsing and printing of bandwidth numbers. Must not: know about buckets or the store.
import { UsageError } from '../common/errors.js';
import { MAX_LIMIT_VALUE } from './shaper.js';

const PREFIX: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
const BINARY: Record<string, number> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

interface Parsed {
  value: number;
  prefix: string;
  binary: boolean;
  /** 'bit' or 'byte'; undefined for a bare number */
  base: 'bit' | 'byte' | undefined;
  /** '/s' or 'ps' after the unit */
  perSecond: '' | '/s' | 'ps';
}

const NUMBER_AND_UNIT = /^(\d+(?:\.\d+)?|\.\d+)\s*(.*)$/;
const UNIT = /^(?:([kKmMgGtT])(i)?)?(bits?|b|B)?(\/s|ps)?$/;

function parse(text: string, flag: string, example: string): Parsed {
  const trimmed = text.trim();
  const m = NUMBER_AND_UNIT.exec(trimmed);
  const u = m ? UNIT.exec(m[2] ?? '') : null;
  if (!m || !u || (u[1] && !u[3])) {
    throw new UsageError(`${flag}: '${text}' is not understood; write a number and a unit, e.g. ${example}`, 'WS_BAD_UNIT');
  }
  const base = u[3] === undefined ? undefined : u[3] === 'B' ? 'byte' : 'bit';
  return { value: Number(m[1]), prefix: (u[1] ?? '').toLowerCase(), binary: u[2] !== undefined, base, perSecond: (u[4] ?? '') as Parsed['perSecond'] };
}

function scale(p: Parsed): number {
  return p.binary ? (BINARY[p.prefix] ?? 1) : (PREFIX[p.prefix] ?? 1);
}

function checkRange(bytes: number, text: string, flag: string, what: string): number {
  if (!Number.isFinite(bytes) || bytes > MAX_LIMIT_VALUE) throw new UsageError(`${flag}: '${text}' is too large for a ${what}`, 'WS_BAD_UNIT');
  return bytes;
}

/** A rate in whole bytes per second. Bits need "bit" (or "b/s"), bytes need "B/s". */
export function parseRate(text: string, flag: string): number {
  const example = '10Mbit, 500kbit, 1.5MB/s or 2MiB/s';
  const p = parse(text, flag, example);
  if (p.base === undefined) throw new UsageError(`${flag}: '${text}' needs a unit (bits or bytes per second?), e.g. ${example}`, 'WS_BAD_UNIT');
  if (p.perSecond === 'ps' && p.base === 'bit') {
    throw new UsageError(`${flag}: '${text}' is ambiguous ("bps" means bytes to tc and bits to most people); write ${p.value}${p.prefix.toUpperCase()}bit or ${p.value}${p.prefix.toUpperCase()}B/s`, 'WS_BAD_UNIT');
  }
  if (p.base === 'byte' && p.perSecond === '') {
    throw new UsageError(`${flag}: '${text}' is a size, not a rate; write ${text.trim()}/s`, 'WS_BAD_UNIT');
  }
  const bytesPerSecond = Math.round((p.value * scale(p)) / (p.base === 'bit' ? 8 : 1));
  if (!(bytesPerSecond >= 1)) throw new UsageError(`${flag}: '${text}' is below 1 byte per second; the rate must be above zero`, 'WS_BAD_UNIT');
  return checkRange(bytesPerSecond, text, flag, 'rate');
}

/** A size in bytes ("1GB", "512MiB", "0"). A bare number is bytes. */
export function parseSize(text: string, flag: string): number {
  const example = '1GB, 512MiB or 0';
  const p = parse(text, flag, example);
  if (p.perSecond !== '') throw new UsageError(`${flag}: '${text}' is a rate; this takes a size, e.g. ${example}`, 'WS_BAD_UNIT');
  if (p.base === 'bit') throw new UsageError(`${flag}: '${text}' is in bits; sizes are bytes, e.g. ${example}`, 'WS_BAD_UNIT');
  return checkRange(Math.round(p.value * scale(p)), text, flag, 'size');
}

function trimNumber(v: number): string {
  return Number(v.toPrecision(3)).toString();
}

function pick(value: number, units: Array<[number, string]>): string {
  for (const [size, name] of units) if (value >= size) return `${trimNumber(value / size)} ${name}`;
  const last = units[units.length - 1] as [number, string];
  return `${trimNumber(value / last[0])} ${last[1]}`;
}

/** "10 Mbit/s (1.25 MB/s)": bits as links are sold, bytes as transfers are counted. */
export function formatRate(bytesPerSecond: number): string {
  const bits = pick(bytesPerSecond * 8, [
    [1e12, 'Tbit/s'],
    [1e9, 'Gbit/s'],
    [1e6, 'Mbit/s'],
    [1e3, 'kbit/s'],
    [1, 'bit/s'],
  ]);
  return `${bits} (${formatSize(bytesPerSecond)}/s)`;
}

const BINARY_UNITS: Array<[number, string, number]> = [
  [1024 ** 4, 'TiB', 1e12],
  [1024 ** 3, 'GiB', 1e9],
  [1024 ** 2, 'MiB', 1e6],
  [1024, 'KiB', 1e3],
];

/** "1 GB", "512 MiB" (binary units when the number is a whole number of them), "0 B". */
export function formatSize(bytes: number): string {
  if (bytes === 0) return '0 B';
  // A whole number of binary units that is not also a round decimal number was typed that way.
  for (const [size, name, decimal] of BINARY_UNITS) {
    if (bytes >= size && bytes % size === 0 && bytes % decimal !== 0) return `${bytes / size} ${name}`;
  }
  return pick(bytes, [
    [1e12, 'TB'],
    [1e9, 'GB'],
    [1e6, 'MB'],
    [1e3, 'kB'],
    [1, 'B'],
  ]);
}

/** How long a full bucket of credits lasts at the maximum rate (null when it cannot burst). */
export function burstSeconds(limit: { baselineBytesPerSecond: number; maxBytesPerSecond: number; creditCapBytes: number }): number | null {
  const headroom = limit.maxBytesPerSecond - limit.baselineBytesPerSecond;
  if (headroom <= 0 || limit.creditCapBytes <= 0) return null;
  return limit.creditCapBytes / headroom;
}
