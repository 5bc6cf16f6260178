// IP addresses as the guard sees them: a source address reduced to its prefix (IPv4 /32 and
// IPv6 /64 by default, since one IPv6 host usually owns a whole /64), CIDR blocks for ban and
// ignore lists, and the canonical text of both ("203.0.113.7/32", "2001:db8:1:2::/64").
// IPv4-mapped IPv6 addresses (::ffff:192.0.2.1, what a dual-stack listener reports for IPv4
// peers) are treated as the IPv4 address they carry.
// Owns: address and CIDR parsing, masking and formatting. Must not: keep state or do I/O.
import { isIPv4, isIPv6 } from 'node:net';
import { UsageError } from '../common/errors.js';

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order */
  bytes: Uint8Array;
}

export interface Cidr extends IpAddress {
  /** prefix length: 0..32 (IPv4) or 0..128 (IPv6); the bytes beyond it are zero */
  bits: number;
}

function parseV4(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

function parseV6(text: string): Uint8Array | undefined {
  let body = text;
  const bytes = new Uint8Array(16);
  // an embedded IPv4 tail ("::ffff:1.2.3.4", "64:ff9b::1.2.3.4") fills the last 4 bytes
  let tail: Uint8Array | undefined;
  const lastColon = body.lastIndexOf(':');
  if (body.slice(lastColon + 1).includes('.')) {
    const v4 = body.slice(lastColon + 1);
    if (!isIPv4(v4)) return undefined;
    tail = parseV4(v4);
    body = `${body.slice(0, lastColon + 1)}0:0`;
  }
  const halves = body.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groups(halves[0] ?? '');
  const rest = halves.length === 2 ? groups(halves[1] ?? '') : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  for (let i = 0; i < 8; i++) {
    const g = all[i] ?? '';
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    const v = parseInt(g, 16);
    bytes[i * 2] = v >> 8;
    bytes[i * 2 + 1] = v & 0xff;
  }
  if (tail) bytes.set(tail, 12);
  return bytes;
}

function isMappedV4(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * Parses an IP address (IPv4, IPv6, an IPv6 zone "%eth0" is dropped); undefined when it is not
 * one. IPv4-mapped IPv6 becomes IPv4.
 */
export function parseIp(text: string): IpAddress | undefined {
  const t = text.trim();
  if (isIPv4(t)) return { family: 4, bytes: parseV4(t) };
  const unzoned = t.includes('%') ? t.slice(0, t.indexOf('%')) : t;
  if (!isIPv6(unzoned)) return undefined;
  const bytes = parseV6(unzoned);
  if (!bytes) return undefined;
  if (isMappedV4(bytes)) return { family: 4, bytes: bytes.slice(12) };
  return { family: 6, bytes };
}

/** The host part of a relay source string: "1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1". */
export function hostOfSource(source: string): string {
  if (source.startsWith('[')) {
    const close = source.indexOf(']');
    return close > 0 ? source.slice(1, close) : source;
  }
  const colon = source.lastIndexOf(':');
  // more than one colon without brackets: a bare IPv6 address
  if (colon < 0 || source.indexOf(':') !== colon) return source;
  return source.slice(0, colon);
}

function mask(bytes: Uint8Array, bits: number): Uint8Array {
  const out = bytes.slice();
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    out[i] = (out[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

function formatV6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // RFC 5952: compress the longest run (at least two) of zero groups, the first if tied
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

export function formatIp(ip: IpAddress): string {
  return ip.family === 4 ? Array.from(ip.bytes).join('.') : formatV6(ip.bytes);
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr)}/${cidr.bits}`;
}

export function maxBits(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

/** The block of `bits` leading bits that contains `ip`. */
export function prefixOf(ip: IpAddress, bits: number): Cidr {
  const b = Math.max(0, Math.min(maxBits(ip.family), bits));
  return { family: ip.family, bytes: mask(ip.bytes, b), bits: b };
}

export interface PrefixLengths {
  v4: number;
  v6: number;
}

/** The default grouping of sources: one IPv4 address, one IPv6 /64. */
export const DEFAULT_PREFIX_LENGTHS: PrefixLengths = { v4: 32, v6: 64 };

/** The canonical prefix text a source address is counted and banned under; undefined if not an IP. */
export function sourcePrefix(address: string, lengths: PrefixLengths = DEFAULT_PREFIX_LENGTHS): string | undefined {
  const ip = parseIp(address);
  if (!ip) return undefined;
  return formatCidr(prefixOf(ip, ip.family === 4 ? lengths.v4 : lengths.v6));
}

/**
 * Parses "ADDR/BITS" or a bare address. A bare address becomes the prefix sources are grouped
 * by (`bare`: /32 and /64 by default; pass {v4: 32, v6: 128} for "exactly this host").
 * Bits beyond the prefix are cleared ("10.1.2.3/8" -> "10.0.0.0/8"). Throws UsageError naming
 * `what` (the flag or argument) when the text is not an address or a block.
 */
export function parseCidr(text: string, what: string, bare: PrefixLengths = DEFAULT_PREFIX_LENGTHS): Cidr {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addressText = slash < 0 ? t : t.slice(0, slash);
  const ip = parseIp(addressText);
  if (!ip) {
    throw new UsageError(`${what}: ${JSON.stringify(text)} is not an IP address or CIDR block (e.g. 203.0.113.7, 198.51.100.0/24, 2001:db8::/48)`, 'WS_BAD_CIDR');
  }
  if (slash < 0) return prefixOf(ip, ip.family === 4 ? bare.v4 : bare.v6);
  const bitsText = t.slice(slash + 1);
  // a mapped address written with an IPv6 length (::ffff:10.0.0.0/104) counts from bit 96
  const mappedV6Length = ip.family === 4 && isIPv6(addressText);
  const limit = mappedV6Length ? 128 : maxBits(ip.family);
  if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > limit || (mappedV6Length && Number(bitsText) < 96)) {
    throw new UsageError(`${what}: ${JSON.stringify(text)} has prefix length '${bitsText}'; it must be 0-${maxBits(ip.family)} for IPv${ip.family}`, 'WS_BAD_CIDR');
  }
  const bits = mappedV6Length ? Number(bitsText) - 96 : Number(bitsText);
  return prefixOf(ip, bits);
}

export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.family !== ip.family) return false;
  const masked = mask(ip.bytes, cidr.bits);
  for (let i = 0; i < masked.length; i++) if (masked[i] !== cidr.bytes[i]) return false;
  return true;
}

/** Does block `outer` contain all of block `inner`? */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return outer.family === inner.family && outer.bits <= inner.bits && cidrContains(outer, inner);
}

/** A list of CIDR blocks (the ignore list, the ban list's wide entries), checked by containment. */
export class CidrList {
  readonly blocks: readonly Cidr[];

  constructor(blocks: Iterable<Cidr>) {
    this.blocks = [...blocks];
  }

  static parse(texts: readonly string[], what: string): CidrList {
    // an ignore entry written as a bare address means that host only
    return new CidrList(texts.map((t) => parseCidr(t, what, { v4: 32, v6: 128 })));
  }

  get size(): number {
    return this.blocks.length;
  }

  /** The first block containing `ip`, if any. */
  match(ip: IpAddress): Cidr | undefined {
    return this.blocks.find((b) => cidrContains(b, ip));
  }

  toStrings(): string[] {
    return this.blocks.map(formatCidr);
  }
}
