// xhost access lists: `host`, `host/24`, `host/v4`, `host/v6`, `host/p2` (per-host dump level),
// `!` (switch between allow and deny), with stone 2.4's semantics (mkXhosts, mkXhostsExt,
// checkXhost):
//   - entries are tried in order and the first that matches decides: allowed if an even number
//     of `!` precede it, denied otherwise;
//   - an empty list allows everybody;
//   - when nothing matches, the client is denied if the list ends in allow mode and allowed if
//     it ends in deny mode (`! 10.0.0.1` = everybody but 10.0.0.1; `! !` denies everybody);
//   - an allowed client gets the matching entry's `pN` dump level (0 without `p`), or the
//     global `-p` level when it was allowed because nothing matched;
//   - IPv4 entries match IPv4 clients, IPv6 entries IPv6 clients; `/0` matches the whole family;
//   - the family a name is resolved in carries over from one entry to the next: `/v4`, `/v6`,
//     or a prefix over 32 (which means IPv6) change it for that entry AND all later ones, as the
//     `family` variable does in stone's mkXhosts.
// Where stone 2.4 differs on 64-bit Linux (its checks read 8-byte `u_long`s): it never matches
// an IPv4 entry against an IPv4-mapped IPv6 client (`::ffff:a.b.c.d`, what a dual-stack `/v6`
// listener — and Node on `::` — reports for IPv4 clients), so deny entries let such clients
// through; decide() matches them (option `mappedIpv4: 'stone-lp64'` reproduces stone). Its
// dotted-netmask check accepts only 0.0.0.0 and 255.255.255.255 for the same reason; both are
// accepted here with a warning, every other dotted mask is refused naming the prefix form.
// Owns: xhost syntax, resolution order and the allow/deny decision. Must not: resolve names
// itself (an injected resolver does), open sockets, log.
import net from 'node:net';
import { WarpstoneError } from '../common/errors.js';
import { StoneGrammarError, formatPosition, quoteToken } from './tokens.js';
import type { GrammarWarning, IpAddress, ResolvedXhostEntry, Token, XhostEntry, XhostFamily } from './types.js';

// ---------------------------------------------------------------------------------------------
// Parsing

export interface XhostListParse {
  readonly entries: XhostEntry[];
  readonly warnings: GrammarWarning[];
}

/**
 * Parses the xhost tokens of one stone (or one `-x` permit). `initialFamily` is what stone
 * starts from: see StoneDefinition.xhosts. Throws StoneGrammarError naming the bad token.
 */
export function parseXhostList(tokens: readonly Token[], initialFamily: XhostFamily): XhostListParse {
  const entries: XhostEntry[] = [];
  const warnings: GrammarWarning[] = [];
  let family = initialFamily;
  for (const token of tokens) {
    if (token.text === '!') {
      entries.push({ kind: 'toggle', position: token.position });
      continue;
    }
    const entry = parseXhostEntry(token, family, warnings);
    family = entry.family;
    entries.push(entry);
  }
  return { entries, warnings };
}

type HostEntry = Extract<XhostEntry, { kind: 'host' }>;

interface ExtensionState {
  family: XhostFamily;
  prefixLength: number | undefined;
  dumpMode: number;
}

function parseXhostEntry(token: Token, family: XhostFamily, warnings: GrammarWarning[]): HostEntry {
  const slash = token.text.indexOf('/');
  const host = slash < 0 ? token.text : token.text.slice(0, slash);
  const state: ExtensionState = { family, prefixLength: undefined, dumpMode: 0 };
  if (slash >= 0) parseExtensions(token, host, token.text.slice(slash + 1), state, warnings);
  checkHost(token, host, state.family);
  return {
    kind: 'host',
    text: token.text,
    host,
    family: state.family,
    prefixLength: state.prefixLength,
    dumpMode: state.dumpMode,
    position: token.position,
  };
}

const EXTENSION_HELP = 'expected <bits>, v4, v6 or p<mode>, separated by commas (e.g. 192.168.1.0/24,p2)';

/** `<bits> | v4 | v6 | p[N]`, comma separated (stone's mkXhostsExt). */
function parseExtensions(token: Token, host: string, ext: string, state: ExtensionState, warnings: GrammarWarning[]): void {
  let at = 0;
  for (;;) {
    const rest = ext.slice(at);
    if (rest === '' || rest.startsWith(',')) {
      throw new StoneGrammarError(token.position, token.text, `empty extension after '${host}/${ext.slice(0, at)}': ${EXTENSION_HELP}`);
    }
    at += parseOneExtension(token, host, rest, state, warnings);
    if (at === ext.length) return;
    if (ext[at] !== ',') {
      throw new StoneGrammarError(token.position, token.text, `unknown extension '${ext.slice(at)}' in '${host}/${ext}': ${EXTENSION_HELP}`);
    }
    at++;
  }
}

/** Parses one extension at the start of `rest`; returns how many characters it used. */
function parseOneExtension(token: Token, host: string, rest: string, state: ExtensionState, warnings: GrammarWarning[]): number {
  const dotted = /^\d+(?:\.\d*){1,3}/.exec(rest);
  if (dotted) {
    state.family = 'ipv4';
    state.prefixLength = dottedMaskBits(token, host, dotted[0], warnings);
    return dotted[0].length;
  }
  const bits = /^\d+/.exec(rest);
  if (bits) {
    const n = Number(bits[0]);
    if (n > 128) throw new StoneGrammarError(token.position, token.text, `prefix length ${bits[0]} is over 128`);
    if (n > 32) state.family = 'ipv6';
    state.prefixLength = n;
    return bits[0].length;
  }
  if (rest.startsWith('v4') || rest.startsWith('v6')) {
    state.family = rest[1] === '4' ? 'ipv4' : 'ipv6';
    return 2;
  }
  const dump = /^p(\d*)/.exec(rest);
  if (dump) {
    const mode = dump[1] === '' ? 1 : Number(dump[1]);
    if (mode > 0x7fff) throw new StoneGrammarError(token.position, token.text, `dump mode p${dump[1]} is too large (stone uses p0..p15)`);
    state.dumpMode = mode;
    return dump[0].length;
  }
  throw new StoneGrammarError(token.position, token.text, `unknown extension '${rest}' in '${host}/...': ${EXTENSION_HELP}`);
}

/**
 * A dotted netmask. stone 2.4 calls them deprecated and, on 64-bit Linux, accepts only
 * 0.0.0.0 (/0) and 255.255.255.255 (/32); anything else is refused with the prefix form.
 */
function dottedMaskBits(token: Token, host: string, mask: string, warnings: GrammarWarning[]): number {
  const accepted = stoneDottedMask(mask);
  if (accepted !== undefined) {
    warnings.push({
      token: token.text,
      position: token.position,
      message: `dotted netmask ${mask} is deprecated in stone 2.4; write ${host}/${accepted}`,
    });
    return accepted;
  }
  const prefix = contiguousPrefix(mask);
  if (prefix !== undefined) {
    throw new StoneGrammarError(
      token.position,
      token.text,
      `dotted netmask ${mask} is refused (stone 2.4: "netmask by bits pattern is deprecated"); write the prefix length: ${host}/${prefix}`,
    );
  }
  throw new StoneGrammarError(token.position, token.text, `'${mask}' is not a netmask; write a prefix length, e.g. ${host}/24`);
}

/** The prefix length of a four-octet contiguous netmask such as 255.255.255.0, else undefined. */
export function contiguousPrefix(mask: string): number | undefined {
  const octets = mask.split('.');
  if (octets.length !== 4 || octets.some((o) => !/^\d{1,3}$/.test(o) || Number(o) > 255)) return undefined;
  const value = octets.reduce((acc, o) => acc * 256 + Number(o), 0);
  for (let prefix = 0; prefix <= 32; prefix++) {
    const maskValue = prefix === 0 ? 0 : (0xffffffff - (2 ** (32 - prefix) - 1)) >>> 0;
    if (maskValue === value) return prefix;
  }
  return undefined;
}

/**
 * What stone 2.4's mkXhostsExt computes for a dotted mask on a 64-bit `u_long`: the prefix
 * length it accepts, or undefined where it exits with "netmask by bits pattern is deprecated".
 */
export function stoneDottedMask(mask: string): number | undefined {
  const U64 = (1n << 64n) - 1n;
  let num = 0n;
  let first = true;
  for (const c of mask) {
    if (c === '.') {
      num = (num << 8n) & U64;
      continue;
    }
    const digit = BigInt(c.charCodeAt(0) - 48);
    num = first ? digit : (num & 0xffffff00n) | (((num & 0xffn) * 10n + digit) & U64);
    first = false;
  }
  let bits = 0;
  while (bits < 32 && num !== 0n) {
    if ((num & 0x80000000n) === 0n) return undefined;
    num = (num << 1n) & U64;
    bits++;
  }
  return bits;
}

const HOST_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)$/;

function checkHost(token: Token, host: string, family: XhostFamily): void {
  if (host === '') {
    throw new StoneGrammarError(token.position, token.text, "expected a host name or address before '/'");
  }
  const literal = parseIpAddress(host);
  if (literal) {
    if (literal.family === 4 && family === 'ipv6') {
      throw new StoneGrammarError(token.position, token.text, `${host} is an IPv4 address but this entry is resolved as IPv6 (a /v6 extension, a prefix over 32, or an earlier entry's /v6 set that); add /v4`);
    }
    if (literal.family === 6 && family === 'ipv4') {
      throw new StoneGrammarError(token.position, token.text, `${host} is an IPv6 address but this entry is resolved as IPv4; add /v6 (e.g. ${host}/v6)`);
    }
    return;
  }
  if (!HOST_NAME.test(host)) {
    const hint = host.startsWith('-') ? "; options go before the first stone or after '--'" : '';
    throw new StoneGrammarError(token.position, token.text, `expected '!', a host name or an IP address, optionally with /<bits>, /v4, /v6, /p<mode>${hint}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses a numeric IPv4 (dotted quad) or IPv6 address; undefined for anything else. */
export function parseIpAddress(text: string): IpAddress | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const bytes = v4.slice(1).map(Number);
    return bytes.every((b) => b <= 255) ? { family: 4, bytes } : undefined;
  }
  if (!text.includes(':') || !net.isIPv6(text)) return undefined;
  return { family: 6, bytes: ipv6Bytes(text.replace(/%.*$/, '')) };
}

function ipv6Bytes(text: string): number[] {
  let body = text;
  let tail: number[] = [];
  const embedded = /(\d+\.\d+\.\d+\.\d+)$/.exec(body);
  if (embedded) {
    tail = (embedded[1] as string).split('.').map(Number);
    body = `${body.slice(0, embedded.index)}0:0`;
  }
  const [head, rest] = body.split('::') as [string, string | undefined];
  const groups = (s: string | undefined): number[] => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const left = groups(head);
  const right = groups(rest);
  const middle = rest === undefined ? [] : new Array<number>(8 - left.length - right.length).fill(0);
  const words = [...left, ...middle, ...right];
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** `::ffff:a.b.c.d` → a.b.c.d; other addresses unchanged. */
export function unmapIpv4(address: IpAddress): IpAddress {
  if (address.family !== 6) return address;
  const b = address.bytes;
  const mapped = b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return mapped ? { family: 4, bytes: b.slice(12, 16) } : address;
}

// ---------------------------------------------------------------------------------------------
// Resolution

/** Resolves a name in a family; must throw when it cannot (stone exits at start-up). */
export type XhostResolver = (host: string, family: XhostFamily) => Promise<IpAddress>;

/** A name in an xhost list could not be resolved (stone: exits at start-up). */
export class XhostResolveError extends WarpstoneError {
  constructor(entry: HostEntry, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super('WS_STONE_XHOST_RESOLVE', `${formatPosition(entry.position)}: ${quoteToken(entry.text)}: cannot resolve ${entry.host} (${entry.family}): ${why}`, { cause });
  }
}

/**
 * Turns entries into addresses: literals directly, names through `resolve` (stone keeps the
 * first address getaddrinfo returns; the resolver should do the same).
 */
export async function resolveXhosts(entries: readonly XhostEntry[], resolve: XhostResolver): Promise<ResolvedXhostEntry[]> {
  const out: ResolvedXhostEntry[] = [];
  for (const entry of entries) {
    if (entry.kind === 'toggle') {
      out.push({ kind: 'toggle' });
      continue;
    }
    const address = parseIpAddress(entry.host) ?? (await resolveName(entry, resolve));
    const fullLength = address.family === 4 ? 32 : 128;
    const prefixLength = entry.prefixLength ?? fullLength;
    if (prefixLength > fullLength) {
      throw new XhostResolveError(entry, new Error(`prefix /${prefixLength} is longer than an IPv${address.family} address`));
    }
    out.push({ kind: 'host', address, prefixLength, dumpMode: entry.dumpMode, entry });
  }
  return out;
}

async function resolveName(entry: HostEntry, resolve: XhostResolver): Promise<IpAddress> {
  let address: IpAddress;
  try {
    address = await resolve(entry.host, entry.family);
  } catch (err) {
    throw new XhostResolveError(entry, err);
  }
  const wanted = entry.family === 'ipv4' ? 4 : entry.family === 'ipv6' ? 6 : address.family;
  if (address.family !== wanted) throw new XhostResolveError(entry, new Error(`the resolver returned an IPv${address.family} address`));
  return address;
}

// ---------------------------------------------------------------------------------------------
// Decision

export interface DecideOptions {
  /** the global `-p` level, given to clients allowed because nothing matched; default 0 */
  readonly defaultDumpMode?: number;
  /**
   * 'match' (default): an IPv4 entry matches an IPv4-mapped IPv6 client. 'stone-lp64': never,
   * as stone 2.4 on 64-bit Linux (see the header).
   */
  readonly mappedIpv4?: 'match' | 'stone-lp64';
}

export interface XhostDecision {
  readonly allowed: boolean;
  /** dump level for this connection (0 when denied) */
  readonly dumpMode: number;
  /** index of the deciding entry in the list; undefined when nothing matched */
  readonly matchedIndex: number | undefined;
}

/**
 * Pure allow/deny decision for a client address (`'unix'` for a UNIX-socket peer, which no
 * entry matches).
 */
export function decide(rules: readonly ResolvedXhostEntry[], client: IpAddress | 'unix', options: DecideOptions = {}): XhostDecision {
  const defaultDumpMode = options.defaultDumpMode ?? 0;
  if (rules.length === 0) return { allowed: true, dumpMode: defaultDumpMode, matchedIndex: undefined };
  let allowMode = true;
  for (const [index, rule] of rules.entries()) {
    if (rule.kind === 'toggle') {
      allowMode = !allowMode;
      continue;
    }
    if (client === 'unix' || !ruleMatches(rule, client, options.mappedIpv4 ?? 'match')) continue;
    return allowMode ? { allowed: true, dumpMode: rule.dumpMode, matchedIndex: index } : { allowed: false, dumpMode: 0, matchedIndex: index };
  }
  return allowMode ? { allowed: false, dumpMode: 0, matchedIndex: undefined } : { allowed: true, dumpMode: defaultDumpMode, matchedIndex: undefined };
}

function ruleMatches(rule: Extract<ResolvedXhostEntry, { kind: 'host' }>, client: IpAddress, mappedIpv4: 'match' | 'stone-lp64'): boolean {
  let candidate = client;
  if (rule.address.family === 4 && client.family === 6) {
    if (mappedIpv4 === 'stone-lp64') return false;
    candidate = unmapIpv4(client);
  }
  if (candidate.family !== rule.address.family) return false;
  return prefixEqual(candidate.bytes, rule.address.bytes, rule.prefixLength);
}

function prefixEqual(a: readonly number[], b: readonly number[], bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((a[i] ?? 0) & mask) !== ((b[i] ?? 0) & mask)) return false;
  }
  return true;
}
