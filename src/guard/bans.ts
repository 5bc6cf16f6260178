// Automatic bans with fail2ban's semantics, built into the relay. Every `failure` event counts
// against its source's prefix (IPv4 /32, IPv6 /64 by default); `maxRetry` failures within
// `findTime` ban the prefix for `banTime`, and each repeat offence multiplies that by
// `increment`, up to `maxBanTime`. Bans live in the store (they survive restarts and are shared
// with `warpstone ban`), and in memory for the one question the accept path asks: is this
// address banned? That check is synchronous and costs a map lookup.
// Failure counting is in memory and bounded (`maxTracked` prefixes; the least recently failing
// is forgotten first). A poll every `pollMs` lifts expired bans and picks up bans added or
// removed by `warpstone ban` (the store's ban revision), so they apply within about a second.
// Owns: counting failures, issuing, loading and lifting bans, logging dropped connections.
// Must not: touch sockets (the relay drops banned connections) or block the event emitter.
import type { Logger } from '../common/log.js';
import type { RelayEvents, RelayEventMap } from '../ops/events.js';
import type { BanRecord, OpsStore } from '../store/ops-store.js';
import { UsageError, errorMessage } from '../common/errors.js';
import { banDurationMs, type BanSettings } from './ban-settings.js';
import { formatDuration } from './duration.js';
import { cidrContains, formatCidr, hostOfSource, parseCidr, parseIp, prefixOf, type Cidr, type IpAddress } from './prefix.js';

/** A repeated drop from one banned prefix is logged at most this often. */
const DROP_LOG_INTERVAL_MS = 10_000;

interface ActiveBan {
  record: BanRecord;
  untilMs: number;
  cidr: Cidr;
}

interface FailureTrail {
  /** times of the recent failures, oldest first, at most maxRetry */
  times: number[];
  reasons: string[];
}

export class BanGuard {
  /** active bans by prefix text */
  private readonly active = new Map<string, ActiveBan>();
  /** active bans whose length is not the grouping length (an admin's /24, a /128): checked by containment */
  private wide: ActiveBan[] = [];
  /** recent failures per prefix; Map order = least recently failing first (evicted first) */
  private readonly failures = new Map<string, FailureTrail>();
  /** prefixes whose ban is being written: a reload must not take them for removed */
  private readonly pending = new Set<string>();
  private readonly writes = new Set<Promise<void>>();
  private readonly drops = new Map<string, { dropped: number; loggedAt: number }>();
  private readonly unsubscribe: Array<() => void> = [];
  private revision = -1;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private storeFailing = false;

  constructor(
    private readonly store: OpsStore,
    private readonly events: RelayEvents,
    private readonly log: Logger,
    readonly settings: BanSettings,
    private readonly now: () => number = Date.now,
  ) {}

  async start(): Promise<void> {
    this.revision = await this.store.banRevision();
    this.replaceActive(await this.store.listBans({ now: new Date(this.now()) }));
    this.unsubscribe.push(this.events.on('failure', (e) => this.onFailure(e)));
    this.unsubscribe.push(this.events.on('banned-drop', (e) => this.onDrop(e)));
    this.timer = setInterval(() => void this.tick(), this.settings.pollMs);
    this.timer.unref();
    this.log.info(
      {
        active: this.active.size,
        maxretry: this.settings.maxRetry,
        findtime: formatDuration(this.settings.findTimeMs),
        bantime: formatDuration(this.settings.banTimeMs),
        increment: this.settings.increment,
        maxbantime: formatDuration(this.settings.maxBanTimeMs),
        prefix: `/${this.settings.prefixLengths.v4} IPv4, /${this.settings.prefixLengths.v6} IPv6`,
        ignore: this.settings.ignore.toStrings(),
      },
      this.settings.automatic === false ? 'automatic bans off; bans added with `warpstone ban add` apply' : 'bans enabled',
    );
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const off of this.unsubscribe.splice(0)) off();
    await Promise.allSettled([...this.writes]);
  }

  /** The accept path's question. Synchronous, no allocation when nothing is banned. */
  isBanned(remoteAddress: string | undefined): boolean {
    if (this.active.size === 0 || remoteAddress === undefined) return false;
    const ip = parseIp(remoteAddress);
    return ip !== undefined && this.banOf(ip) !== undefined;
  }

  /** Active bans as this relay enforces them now. */
  list(): BanRecord[] {
    return [...this.active.values()].map((b) => b.record);
  }

  /** Prefixes with failures counted but not (yet) banned: bounded by `maxTracked`. */
  get tracked(): number {
    return this.failures.size;
  }

  private groupOf(ip: IpAddress): string {
    return formatCidr(prefixOf(ip, ip.family === 4 ? this.settings.prefixLengths.v4 : this.settings.prefixLengths.v6));
  }

  private banOf(ip: IpAddress): ActiveBan | undefined {
    const now = this.now();
    const exact = this.active.get(this.groupOf(ip));
    if (exact && exact.untilMs > now) return exact;
    for (const ban of this.wide) if (ban.untilMs > now && cidrContains(ban.cidr, ip)) return ban;
    return undefined;
  }

  private isGroupingLength(cidr: Cidr): boolean {
    return cidr.bits === (cidr.family === 4 ? this.settings.prefixLengths.v4 : this.settings.prefixLengths.v6);
  }

  private setActive(record: BanRecord): void {
    let cidr: Cidr;
    try {
      cidr = parseCidr(record.prefix, 'ban', { v4: 32, v6: 128 });
    } catch {
      this.log.warn({ prefix: record.prefix }, 'ignoring a ban whose prefix is not a CIDR block');
      return;
    }
    const key = formatCidr(cidr);
    const previous = this.active.get(key);
    const entry: ActiveBan = { record: { ...record, prefix: key }, untilMs: record.until.getTime(), cidr };
    this.active.set(key, entry);
    this.failures.delete(key);
    // only bans of an unusual length live in `wide`: most bans (a burst of them under attack)
    // cost no rebuild
    if (!this.isGroupingLength(cidr) || (previous && !this.isGroupingLength(previous.cidr))) this.rebuildWide();
  }

  private deleteActive(prefix: string): void {
    const previous = this.active.get(prefix);
    this.active.delete(prefix);
    this.drops.delete(prefix);
    if (previous && !this.isGroupingLength(previous.cidr)) this.rebuildWide();
  }

  private rebuildWide(): void {
    this.wide = [...this.active.values()].filter((b) => !this.isGroupingLength(b.cidr));
  }

  private replaceActive(records: BanRecord[]): void {
    this.active.clear();
    for (const [, record] of latestPerPrefix(records)) this.setActive(record);
    this.rebuildWide();
  }

  private onFailure(e: RelayEventMap['failure']): void {
    if (this.settings.automatic === false) return;
    const ip = parseIp(hostOfSource(e.source));
    if (!ip) return;
    if (this.settings.ignore.size > 0 && this.settings.ignore.match(ip)) return;
    if (this.banOf(ip)) return; // already banned: a connection that got in before the ban
    const prefix = this.groupOf(ip);
    if (this.pending.has(prefix)) return;
    const now = this.now();
    let trail = this.failures.get(prefix);
    if (trail) this.failures.delete(prefix); // re-inserted below: most recently failing last
    else trail = { times: [], reasons: [] };
    trail.times.push(now);
    trail.reasons.push(e.reason);
    while (trail.times.length > 0 && ((trail.times[0] ?? now) <= now - this.settings.findTimeMs || trail.times.length > this.settings.maxRetry)) {
      trail.times.shift();
      trail.reasons.shift();
    }
    if (trail.times.length >= this.settings.maxRetry) {
      this.issue(prefix, trail, now);
      return;
    }
    this.failures.set(prefix, trail);
    if (this.failures.size > this.settings.maxTracked) {
      const oldest = this.failures.keys().next().value;
      if (oldest !== undefined) this.failures.delete(oldest);
    }
  }

  private issue(prefix: string, trail: FailureTrail, now: number): void {
    const counts = new Map<string, number>();
    for (const r of trail.reasons) counts.set(r, (counts.get(r) ?? 0) + 1);
    const span = now - (trail.times[0] ?? now);
    const reason = `${trail.times.length} failures in ${formatDuration(span)}: ${[...counts].map(([r, n]) => `${r} x${n}`).join(', ')}`;
    // Drop this prefix's connections from now on, before the store has answered.
    this.pending.add(prefix);
    this.setActive({ prefix, bannedAt: new Date(now), until: new Date(now + this.settings.banTimeMs), offence: 1, failures: trail.times.length, reason, by: 'auto' });
    const write = (async () => {
      const last = await this.store.lastBan(prefix);
      // a prefix whose last ban ended longer than the cap ago starts again at the first offence
      const repeat = last !== undefined && now - last.until.getTime() < this.settings.maxBanTimeMs;
      const offence = repeat ? last.offence + 1 : 1;
      const duration = banDurationMs(this.settings, offence);
      const record: BanRecord = { prefix, bannedAt: new Date(now), until: new Date(now + duration), offence, failures: trail.times.length, reason, by: 'auto' };
      this.setActive(record);
      await this.store.putBan(record);
      this.events.emit('ban-issued', { time: record.bannedAt, address: prefix, until: record.until, failures: record.failures, offence, reason });
      this.log.warn(
        { prefix, offence, failures: record.failures, until: record.until.toISOString(), for: formatDuration(duration), reason },
        `source banned for ${formatDuration(duration)}${offence > 1 ? ` (offence ${offence})` : ''}`,
      );
    })()
      .catch((err: unknown) => this.log.error({ prefix, err: errorMessage(err) }, 'could not record a ban in the store; it holds in this relay until it expires'))
      .finally(() => {
        this.pending.delete(prefix);
        this.writes.delete(write);
      });
    this.writes.add(write);
  }

  private onDrop(e: RelayEventMap['banned-drop']): void {
    const ip = parseIp(hostOfSource(e.source));
    if (!ip) return;
    const ban = this.banOf(ip);
    if (!ban) return; // expired between the check and this event
    const prefix = formatCidr(ban.cidr);
    const now = this.now();
    const seen = this.drops.get(prefix);
    if (seen && now - seen.loggedAt < DROP_LOG_INTERVAL_MS) {
      seen.dropped += 1;
      return;
    }
    const dropped = (seen?.dropped ?? 0) + 1;
    this.drops.set(prefix, { dropped: 0, loggedAt: now });
    this.log.info(
      { source: e.source, prefix, until: ban.record.until.toISOString(), dropped },
      `connection dropped: source is banned for ${formatDuration(ban.untilMs - now)} more`,
    );
  }

  /** Lifts expired bans and reloads when another process changed the bans. */
  async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const now = this.now();
      for (const [prefix, ban] of [...this.active]) {
        if (ban.untilMs > now || this.pending.has(prefix)) continue;
        this.deleteActive(prefix);
        this.events.emit('ban-lifted', { time: new Date(now), address: prefix, by: 'expiry' });
        this.log.info({ prefix, bannedAt: ban.record.bannedAt.toISOString(), offence: ban.record.offence }, 'ban expired; source admitted again');
      }
      const revision = await this.store.banRevision();
      if (revision !== this.revision) await this.reload(revision);
      if (this.storeFailing) this.log.info('ban store readable again');
      this.storeFailing = false;
    } catch (err) {
      if (!this.storeFailing) this.log.error({ err: errorMessage(err) }, 'cannot read bans from the store; keeping the bans in memory');
      this.storeFailing = true;
    } finally {
      this.ticking = false;
    }
  }

  private async reload(revision: number): Promise<void> {
    const now = this.now();
    const fresh = latestPerPrefix(await this.store.listBans({ now: new Date(now) }));
    for (const [prefix, ban] of [...this.active]) {
      if (fresh.has(prefix) || this.pending.has(prefix)) continue;
      this.deleteActive(prefix);
      this.failures.delete(prefix);
      this.events.emit('ban-lifted', { time: new Date(now), address: prefix, by: 'admin' });
      this.log.info({ prefix, by: ban.record.by }, 'ban removed by an admin; source admitted again');
    }
    for (const [prefix, record] of fresh) {
      const known = this.active.get(prefix);
      if (known && known.untilMs === record.until.getTime()) continue;
      if (this.pending.has(prefix)) continue;
      this.setActive(record);
      if (!known) {
        this.events.emit('ban-issued', { time: record.bannedAt, address: prefix, until: record.until, failures: record.failures, offence: record.offence, reason: record.reason });
        this.log.warn({ prefix, by: record.by, until: record.until.toISOString(), reason: record.reason }, `ban added by ${record.by === 'admin' ? 'an admin' : 'another relay'}`);
      }
    }
    this.revision = revision;
  }
}

function parseCidrSafe(text: string): Cidr | undefined {
  try {
    return parseCidr(text, 'ban', { v4: 32, v6: 128 });
  } catch {
    return undefined;
  }
}

/** Active bans keyed by canonical prefix, the longest-running one where a prefix has several. */
function latestPerPrefix(records: BanRecord[]): Map<string, BanRecord> {
  const out = new Map<string, BanRecord>();
  for (const r of records) {
    const cidr = parseCidrSafe(r.prefix);
    if (!cidr) continue;
    const key = formatCidr(cidr);
    const known = out.get(key);
    if (!known || r.until > known.until) out.set(key, { ...r, prefix: key });
  }
  return out;
}

/** The prefix an address is banned under by `warpstone ban add ADDR` (a bare address: its /32 or /64). */
export function banPrefixOf(text: string, what: string, lengths = { v4: 32, v6: 64 }): string {
  const cidr = parseCidr(text, what, lengths);
  if (cidr.bits === 0) throw new UsageError(`${what}: ${JSON.stringify(text)} is a /0 block; it would ban every address`, 'WS_BAD_CIDR');
  return formatCidr(cidr);
}
