// An in-memory OpsStore: the whole contract (bans, audit, limits, target health, sightings,
// alerts, admin tokens) kept in arrays and maps, for the ops tests while the SQLite
// implementation is written elsewhere. Same semantics as the interface documents: active bans
// only unless `all`, audit newest first with filters and a default limit of 1000, tokens by hash.
// `failing` makes every call reject, for tests of a store that cannot be read.
import type {
  AdminTokenRecord,
  AlertRecord,
  AuditFilter,
  AuditRecord,
  BanRecord,
  LimitRecord,
  LimitScope,
  OpsStore,
  SightingRecord,
  TargetHealthRecord,
} from '../../src/store/ops-store.ts';

export class MemoryOpsStore implements OpsStore {
  private readonly bans = new Map<string, BanRecord[]>();
  private readonly audit: AuditRecord[] = [];
  private readonly limits = new Map<string, LimitRecord>();
  private readonly health = new Map<string, TargetHealthRecord>();
  private readonly sightings: SightingRecord[] = [];
  private readonly alerts: AlertRecord[] = [];
  private readonly tokens: AdminTokenRecord[] = [];
  private nextId = 1;
  /** when set, every call rejects with this error */
  failing: Error | undefined;
  /** calls to useAdminToken, to observe lastUsedAt writes */
  tokenTouches = 0;

  private async guard(): Promise<void> {
    if (this.failing) throw this.failing;
  }

  private banCounter = 0;

  async putBan(ban: BanRecord): Promise<void> {
    await this.guard();
    const list = this.bans.get(ban.prefix) ?? [];
    // a ban still active ends where the new one begins
    for (const old of list) if (old.until > ban.bannedAt) old.until = ban.bannedAt;
    list.push({ ...ban });
    this.bans.set(ban.prefix, list);
    this.banCounter += 1;
  }

  async removeBan(prefix: string): Promise<boolean> {
    await this.guard();
    const list = this.bans.get(prefix);
    if (!list) return false;
    const active = list.some((b) => b.until > new Date());
    this.bans.delete(prefix);
    this.banCounter += 1;
    return active;
  }

  async banRevision(): Promise<number> {
    await this.guard();
    return this.banCounter;
  }

  async listBans(options: { all?: boolean; now?: Date } = {}): Promise<BanRecord[]> {
    await this.guard();
    const now = options.now ?? new Date();
    const out: BanRecord[] = [];
    for (const list of this.bans.values()) for (const b of list) if (options.all || b.until > now) out.push({ ...b });
    return out.sort((a, b) => a.prefix.localeCompare(b.prefix) || a.bannedAt.getTime() - b.bannedAt.getTime());
  }

  async lastBan(prefix: string): Promise<BanRecord | undefined> {
    await this.guard();
    const latest = this.bans.get(prefix)?.at(-1);
    return latest ? { ...latest } : undefined;
  }

  async addAudit(records: AuditRecord[]): Promise<void> {
    await this.guard();
    this.audit.push(...records.map((r) => ({ ...r })));
  }

  async queryAudit(filter: AuditFilter): Promise<AuditRecord[]> {
    await this.guard();
    return this.audit
      .filter(
        (r) =>
          (!filter.since || r.time >= filter.since) &&
          (!filter.until || r.time < filter.until) &&
          (!filter.identity || r.identity === filter.identity) &&
          (!filter.tunnel || r.tunnel === filter.tunnel) &&
          (!filter.kind || r.kind === filter.kind),
      )
      .sort((a, b) => b.time.getTime() - a.time.getTime())
      .slice(0, filter.limit ?? 1000)
      .map((r) => ({ ...r }));
  }

  async pruneAudit(before: Date): Promise<number> {
    await this.guard();
    let removed = 0;
    for (let i = this.audit.length - 1; i >= 0; i--) {
      if ((this.audit[i] as AuditRecord).time < before) {
        this.audit.splice(i, 1);
        removed += 1;
      }
    }
    return removed;
  }

  async setLimit(limit: LimitRecord): Promise<void> {
    await this.guard();
    this.limits.set(`${limit.scope}:${limit.name}`, { ...limit });
  }

  async removeLimit(scope: LimitScope, name: string): Promise<boolean> {
    await this.guard();
    return this.limits.delete(`${scope}:${name}`);
  }

  async listLimits(): Promise<LimitRecord[]> {
    await this.guard();
    return [...this.limits.values()].map((l) => ({ ...l }));
  }

  async putTargetHealth(record: TargetHealthRecord): Promise<void> {
    await this.guard();
    this.health.set(`${record.agent}\u0000${record.tunnel}`, { ...record });
  }

  async listTargetHealth(): Promise<TargetHealthRecord[]> {
    await this.guard();
    return [...this.health.values()].map((h) => ({ ...h }));
  }

  /** What Store.recordAgentConnected writes (the sightings table is shared with the core store). */
  addSighting(agent: string, address: string, connectedAt: Date, disconnectedAt: Date | null = null, reason: string | null = null): number {
    const id = this.nextId++;
    this.sightings.push({ id, agent, address, connectedAt, disconnectedAt, reason });
    return id;
  }

  async listSightings(agent: string, since?: Date): Promise<SightingRecord[]> {
    await this.guard();
    return this.sightings
      .filter((s) => s.agent === agent && (!since || (s.disconnectedAt ?? new Date(8.64e15)) >= since))
      .sort((a, b) => a.connectedAt.getTime() - b.connectedAt.getTime())
      .map((s) => ({ ...s }));
  }

  async lastSighting(agent: string): Promise<SightingRecord | undefined> {
    const all = await this.listSightings(agent);
    return all.at(-1);
  }

  async setSightingReason(id: number, reason: string): Promise<void> {
    await this.guard();
    const s = this.sightings.find((x) => x.id === id);
    if (s) s.reason = reason;
  }

  async addAlerts(records: Array<Omit<AlertRecord, 'id' | 'attempts' | 'deliveredAt' | 'lastError'>>): Promise<void> {
    await this.guard();
    for (const r of records) this.alerts.push({ ...r, id: this.nextId++, attempts: 0, deliveredAt: null, lastError: null });
  }

  async dueAlerts(now: Date, limit: number): Promise<AlertRecord[]> {
    await this.guard();
    return this.alerts.filter((a) => a.deliveredAt === null && a.nextAttemptAt <= now).slice(0, limit).map((a) => ({ ...a }));
  }

  async markAlertDelivered(id: number, at: Date): Promise<void> {
    await this.guard();
    const a = this.alerts.find((x) => x.id === id);
    if (a) {
      a.deliveredAt = at;
      a.attempts += 1;
    }
  }

  async markAlertFailed(id: number, error: string, nextAttemptAt: Date): Promise<void> {
    await this.guard();
    const a = this.alerts.find((x) => x.id === id);
    if (a) {
      a.attempts += 1;
      a.lastError = error;
      a.nextAttemptAt = nextAttemptAt;
    }
  }

  async listAlerts(options: { undeliveredOnly?: boolean; limit?: number } = {}): Promise<AlertRecord[]> {
    await this.guard();
    return this.alerts
      .filter((a) => !options.undeliveredOnly || a.deliveredAt === null)
      .slice(-(options.limit ?? 1000))
      .map((a) => ({ ...a }));
  }

  async addAdminToken(record: Omit<AdminTokenRecord, 'id' | 'lastUsedAt'>): Promise<number> {
    await this.guard();
    const id = this.nextId++;
    this.tokens.push({ ...record, id, lastUsedAt: null });
    return id;
  }

  async useAdminToken(hash: string, at: Date): Promise<boolean> {
    await this.guard();
    this.tokenTouches += 1;
    const t = this.tokens.find((x) => x.hash === hash);
    if (!t) return false;
    t.lastUsedAt = at;
    return true;
  }

  async listAdminTokens(): Promise<AdminTokenRecord[]> {
    await this.guard();
    return this.tokens.map((t) => ({ ...t }));
  }

  async removeAdminToken(id: number): Promise<boolean> {
    await this.guard();
    const i = this.tokens.findIndex((t) => t.id === id);
    if (i < 0) return false;
    this.tokens.splice(i, 1);
    return true;
  }
}
