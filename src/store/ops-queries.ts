// The queries behind OpsStore: bans, the audit table, bandwidth limits, target health, agent
// address history, the alert outbox and admin tokens. Same Kysely queries for every dialect;
// times go in as ISO-8601 text (which sorts in time order) and come out as Dates.
// Owns: the SQL of the guard and operations tables. Must not: decide policy (when to ban, what
// to alert) or know about sockets and the CLI.
import type { Kysely, Selectable } from 'kysely';
import type { AgentSightingsTable, AlertsTable, BansTable, Database } from './schema.js';
import { META } from './schema.js';
import { bumpCounter, readCounter } from './meta.js';
import type {
  AdminTokenRecord,
  AlertRecord,
  AuditFilter,
  AuditKind,
  AuditRecord,
  BanRecord,
  LimitRecord,
  LimitScope,
  OpsStore,
  SightingRecord,
  TargetHealthRecord,
} from './ops-store.js';

const iso = (d: Date): string => d.toISOString();
const dateOrNull = (s: string | null): Date | null => (s === null ? null : new Date(s));
/** bigint columns come back as strings from some drivers (pg): always hand out numbers */
const num = (v: number | string | bigint): number => Number(v);
const numOrNull = (v: number | string | bigint | null): number | null => (v === null ? null : Number(v));

/** The default number of audit rows a query returns (newest first). */
export const AUDIT_QUERY_LIMIT = 1000;

function banFromRow(row: Selectable<BansTable>): BanRecord {
  return {
    prefix: row.prefix,
    bannedAt: new Date(row.banned_at),
    until: new Date(row.banned_until),
    offence: num(row.offence),
    failures: num(row.failures),
    reason: row.reason,
    by: row.banned_by === 'admin' ? 'admin' : 'auto',
  };
}

function sightingFromRow(row: Selectable<AgentSightingsTable>): SightingRecord {
  return {
    id: num(row.id),
    agent: row.name,
    address: row.address,
    connectedAt: new Date(row.connected_at),
    disconnectedAt: dateOrNull(row.disconnected_at),
    reason: row.reason ?? null,
  };
}

function alertFromRow(row: Selectable<AlertsTable>): AlertRecord {
  return {
    id: num(row.id),
    createdAt: new Date(row.created_at),
    kind: row.kind,
    payload: row.payload,
    destination: row.destination,
    attempts: num(row.attempts),
    nextAttemptAt: new Date(row.next_attempt_at),
    deliveredAt: dateOrNull(row.delivered_at),
    lastError: row.last_error,
  };
}

export class KyselyOpsStore implements OpsStore {
  constructor(protected readonly db: Kysely<Database>) {}

  // ---- bans

  async putBan(ban: BanRecord): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('bans')
        .set({ banned_until: iso(ban.bannedAt) })
        .where('prefix', '=', ban.prefix)
        .where('banned_until', '>', iso(ban.bannedAt))
        .execute();
      await trx
        .insertInto('bans')
        .values({
          prefix: ban.prefix,
          banned_at: iso(ban.bannedAt),
          banned_until: iso(ban.until),
          offence: ban.offence,
          failures: ban.failures,
          reason: ban.reason,
          banned_by: ban.by,
        })
        .execute();
      await bumpCounter(trx, META.banRevision);
    });
  }

  async removeBan(prefix: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const active = await trx
        .selectFrom('bans')
        .select('id')
        .where('prefix', '=', prefix)
        .where('banned_until', '>', iso(new Date()))
        .executeTakeFirst();
      const result = await trx.deleteFrom('bans').where('prefix', '=', prefix).executeTakeFirst();
      if (Number(result.numDeletedRows) > 0) await bumpCounter(trx, META.banRevision);
      return active !== undefined;
    });
  }

  async listBans(options: { all?: boolean; now?: Date } = {}): Promise<BanRecord[]> {
    let query = this.db.selectFrom('bans').selectAll();
    if (!options.all) query = query.where('banned_until', '>', iso(options.now ?? new Date()));
    const rows = await query.orderBy('prefix').orderBy('banned_at').orderBy('id').execute();
    return rows.map(banFromRow);
  }

  async lastBan(prefix: string): Promise<BanRecord | undefined> {
    const row = await this.db
      .selectFrom('bans')
      .selectAll()
      .where('prefix', '=', prefix)
      .orderBy('banned_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? banFromRow(row) : undefined;
  }

  async banRevision(): Promise<number> {
    return readCounter(this.db, META.banRevision);
  }

  // ---- audit

  async addAudit(records: AuditRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.db
      .insertInto('audit')
      .values(
        records.map((r) => ({
          at: iso(r.time),
          kind: r.kind,
          identity: r.identity,
          source: r.source,
          tunnel: r.tunnel,
          target: r.target,
          bytes_in: r.bytesIn,
          bytes_out: r.bytesOut,
          duration_ms: r.durationMs,
          reason: r.reason,
        })),
      )
      .execute();
  }

  async queryAudit(filter: AuditFilter): Promise<AuditRecord[]> {
    let query = this.db.selectFrom('audit').selectAll();
    if (filter.since) query = query.where('at', '>=', iso(filter.since));
    if (filter.until) query = query.where('at', '<=', iso(filter.until));
    if (filter.identity !== undefined) query = query.where('identity', '=', filter.identity);
    if (filter.tunnel !== undefined) query = query.where('tunnel', '=', filter.tunnel);
    if (filter.kind !== undefined) query = query.where('kind', '=', filter.kind);
    const limit = Math.max(1, Math.floor(filter.limit ?? AUDIT_QUERY_LIMIT));
    const rows = await query.orderBy('at', 'desc').orderBy('id', 'desc').limit(limit).execute();
    return rows.map((r) => ({
      time: new Date(r.at),
      kind: r.kind as AuditKind,
      identity: r.identity,
      source: r.source,
      tunnel: r.tunnel,
      target: r.target,
      bytesIn: numOrNull(r.bytes_in),
      bytesOut: numOrNull(r.bytes_out),
      durationMs: numOrNull(r.duration_ms),
      reason: r.reason,
    }));
  }

  async pruneAudit(before: Date): Promise<number> {
    const result = await this.db.deleteFrom('audit').where('at', '<', iso(before)).executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  // ---- bandwidth limits (part of the policy: bump the revision)

  async setLimit(limit: LimitRecord): Promise<void> {
    const values = {
      baseline_bps: limit.baselineBytesPerSecond,
      max_bps: limit.maxBytesPerSecond,
      credit_cap_bytes: limit.creditCapBytes,
    };
    await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('limits')
        .values({ scope: limit.scope, name: limit.name, ...values })
        .onConflict((oc) => oc.columns(['scope', 'name']).doUpdateSet(values))
        .execute();
      await bumpCounter(trx, META.revision);
    });
  }

  async removeLimit(scope: LimitScope, name: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const result = await trx.deleteFrom('limits').where('scope', '=', scope).where('name', '=', name).executeTakeFirst();
      const removed = Number(result.numDeletedRows) > 0;
      if (removed) await bumpCounter(trx, META.revision);
      return removed;
    });
  }

  async listLimits(): Promise<LimitRecord[]> {
    const rows = await this.db.selectFrom('limits').selectAll().orderBy('scope').orderBy('name').execute();
    return rows.map((r) => ({
      scope: r.scope === 'user' ? 'user' : 'tunnel',
      name: r.name,
      baselineBytesPerSecond: num(r.baseline_bps),
      maxBytesPerSecond: num(r.max_bps),
      creditCapBytes: num(r.credit_cap_bytes),
    }));
  }

  // ---- target health

  async putTargetHealth(record: TargetHealthRecord): Promise<void> {
    const values = { state: record.state, detail: record.detail, since: iso(record.since), checked_at: iso(record.checkedAt) };
    await this.db
      .insertInto('target_health')
      .values({ agent: record.agent, tunnel: record.tunnel, ...values })
      .onConflict((oc) => oc.columns(['agent', 'tunnel']).doUpdateSet(values))
      .execute();
  }

  async listTargetHealth(): Promise<TargetHealthRecord[]> {
    const rows = await this.db.selectFrom('target_health').selectAll().orderBy('agent').orderBy('tunnel').execute();
    return rows.map((r) => ({
      agent: r.agent,
      tunnel: r.tunnel,
      state: r.state === 'up' ? 'up' : 'down',
      detail: r.detail,
      since: new Date(r.since),
      checkedAt: new Date(r.checked_at),
    }));
  }

  // ---- address history

  async listSightings(agent: string, since?: Date): Promise<SightingRecord[]> {
    let query = this.db.selectFrom('agent_sightings').selectAll().where('name', '=', agent);
    if (since) {
      const from = iso(since);
      query = query.where((eb) => eb.or([eb('disconnected_at', 'is', null), eb('disconnected_at', '>=', from)]));
    }
    const rows = await query.orderBy('connected_at').orderBy('id').execute();
    return rows.map(sightingFromRow);
  }

  async lastSighting(agent: string): Promise<SightingRecord | undefined> {
    const row = await this.db
      .selectFrom('agent_sightings')
      .selectAll()
      .where('name', '=', agent)
      .orderBy('connected_at', 'desc')
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? sightingFromRow(row) : undefined;
  }

  async setSightingReason(id: number, reason: string): Promise<void> {
    await this.db.updateTable('agent_sightings').set({ reason }).where('id', '=', id).execute();
  }

  // ---- alert outbox

  async addAlerts(records: Array<Omit<AlertRecord, 'id' | 'attempts' | 'deliveredAt' | 'lastError'>>): Promise<void> {
    if (records.length === 0) return;
    await this.db
      .insertInto('alerts')
      .values(
        records.map((r) => ({
          created_at: iso(r.createdAt),
          kind: r.kind,
          payload: r.payload,
          destination: r.destination,
          attempts: 0,
          next_attempt_at: iso(r.nextAttemptAt),
          delivered_at: null,
          last_error: null,
        })),
      )
      .execute();
  }

  async dueAlerts(now: Date, limit: number): Promise<AlertRecord[]> {
    const rows = await this.db
      .selectFrom('alerts')
      .selectAll()
      .where('delivered_at', 'is', null)
      .where('next_attempt_at', '<=', iso(now))
      .orderBy('next_attempt_at')
      .orderBy('id')
      .limit(Math.max(1, Math.floor(limit)))
      .execute();
    return rows.map(alertFromRow);
  }

  async markAlertDelivered(id: number, at: Date): Promise<void> {
    await this.db
      .updateTable('alerts')
      .set((eb) => ({ delivered_at: iso(at), attempts: eb('attempts', '+', 1), last_error: null }))
      .where('id', '=', id)
      .execute();
  }

  async markAlertFailed(id: number, error: string, nextAttemptAt: Date): Promise<void> {
    await this.db
      .updateTable('alerts')
      .set((eb) => ({ attempts: eb('attempts', '+', 1), last_error: error.slice(0, 1000), next_attempt_at: iso(nextAttemptAt) }))
      .where('id', '=', id)
      .execute();
  }

  async listAlerts(options: { undeliveredOnly?: boolean; limit?: number } = {}): Promise<AlertRecord[]> {
    let query = this.db.selectFrom('alerts').selectAll();
    if (options.undeliveredOnly) query = query.where('delivered_at', 'is', null);
    const rows = await query
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(Math.max(1, Math.floor(options.limit ?? 100)))
      .execute();
    return rows.map(alertFromRow);
  }

  // ---- admin tokens

  async addAdminToken(record: Omit<AdminTokenRecord, 'id' | 'lastUsedAt'>): Promise<number> {
    const row = await this.db
      .insertInto('admin_tokens')
      .values({ hash: record.hash, label: record.label, created_at: iso(record.createdAt), last_used_at: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    return num(row.id);
  }

  async useAdminToken(hash: string, at: Date): Promise<boolean> {
    const result = await this.db.updateTable('admin_tokens').set({ last_used_at: iso(at) }).where('hash', '=', hash).executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async listAdminTokens(): Promise<AdminTokenRecord[]> {
    const rows = await this.db.selectFrom('admin_tokens').selectAll().orderBy('id').execute();
    return rows.map((r) => ({
      id: num(r.id),
      hash: r.hash,
      label: r.label,
      createdAt: new Date(r.created_at),
      lastUsedAt: dateOrNull(r.last_used_at),
    }));
  }

  async removeAdminToken(id: number): Promise<boolean> {
    const result = await this.db.deleteFrom('admin_tokens').where('id', '=', id).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }
}
