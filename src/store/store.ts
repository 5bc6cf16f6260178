// The store: certificates issued, revocations, grants, and where agents were seen, plus (through
// OpsStore, ops-queries.ts) bans, audit, limits, health, alerts and admin tokens. One interface
// over Kysely so SQLite (embedded default) and PostgreSQL (shared by several relays) run the
// same queries. A `revision` counter bumps on every policy change so relays can poll cheaply.
// Owns: the Store interface and the core queries. Must not: know about sockets, TLS or the CLI.
import type { Kysely } from 'kysely';
import { META, type Database } from './schema.js';
import type { OpsStore } from './ops-store.js';
import { KyselyOpsStore } from './ops-queries.js';
import { bumpCounter, readCounter } from './meta.js';
import { migrate } from './migrate.js';

export interface CertificateRecord {
  serial: string;
  name: string;
  role: string;
  notBefore: Date;
  notAfter: Date;
  issuedAt: Date;
  revokedAt: Date | null;
}

export interface GrantRecord {
  user: string;
  tunnel: string;
  grantedAt: Date;
}

export interface IdentitySummary {
  name: string;
  role: string;
  certificates: number;
  newestNotAfter: Date;
  revoked: boolean;
}

export interface TunnelRecord {
  name: string;
  agent: string;
  port: number;
  firstSeen: Date;
  lastSeen: Date;
}

export interface PolicySnapshot {
  revision: number;
  revokedSerials: Set<string>;
  /** user -> tunnels */
  grants: Map<string, Set<string>>;
}

export interface Store extends OpsStore {
  addCertificate(record: Omit<CertificateRecord, 'revokedAt'>): Promise<void>;
  findCertificate(serial: string): Promise<CertificateRecord | undefined>;
  /** Role of a name already in use, if any. */
  roleOf(name: string): Promise<string | undefined>;
  /** Revokes every certificate of `name`; returns how many were newly revoked. */
  revokeName(name: string): Promise<number>;
  listIdentities(): Promise<IdentitySummary[]>;
  grant(user: string, tunnel: string): Promise<boolean>;
  ungrant(user: string, tunnel: string): Promise<boolean>;
  listGrants(): Promise<GrantRecord[]>;
  revision(): Promise<number>;
  policySnapshot(): Promise<PolicySnapshot>;
  /** Remembers that `agent` serves `name`, so a later absence reads "offline", not "unknown". */
  recordTunnel(name: string, agent: string, port: number): Promise<void>;
  listTunnels(): Promise<TunnelRecord[]>;
  recordAgentConnected(name: string, address: string): Promise<number>;
  /** Ends a sighting; `reason` says why the link ended ("ping timeout", "agent closed the connection"). */
  recordAgentDisconnected(id: number, reason?: string): Promise<void>;
  close(): Promise<void>;
}

const iso = (d: Date): string => d.toISOString();

export class KyselyStore extends KyselyOpsStore implements Store {
  constructor(db: Kysely<Database>) {
    super(db);
  }

  /** Creates missing tables and upgrades an older file (see migrate.ts). */
  static async migrate(db: Kysely<Database>): Promise<void> {
    await migrate(db);
  }

  private async bumpRevision(trx: Kysely<Database>): Promise<void> {
    await bumpCounter(trx, META.revision);
  }

  async addCertificate(r: Omit<CertificateRecord, 'revokedAt'>): Promise<void> {
    await this.db
      .insertInto('certificates')
      .values({
        serial: r.serial,
        name: r.name,
        role: r.role,
        not_before: iso(r.notBefore),
        not_after: iso(r.notAfter),
        issued_at: iso(r.issuedAt),
        revoked_at: null,
      })
      .execute();
  }

  async findCertificate(serial: string): Promise<CertificateRecord | undefined> {
    const row = await this.db.selectFrom('certificates').selectAll().where('serial', '=', serial).executeTakeFirst();
    if (!row) return undefined;
    return {
      serial: row.serial,
      name: row.name,
      role: row.role,
      notBefore: new Date(row.not_before),
      notAfter: new Date(row.not_after),
      issuedAt: new Date(row.issued_at),
      revokedAt: row.revoked_at ? new Date(row.revoked_at) : null,
    };
  }

  async roleOf(name: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('certificates').select('role').where('name', '=', name).executeTakeFirst();
    return row?.role;
  }

  async revokeName(name: string): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const result = await trx
        .updateTable('certificates')
        .set({ revoked_at: iso(new Date()) })
        .where('name', '=', name)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      const count = Number(result.numUpdatedRows);
      if (count > 0) await this.bumpRevision(trx);
      return count;
    });
  }

  async listIdentities(): Promise<IdentitySummary[]> {
    const rows = await this.db.selectFrom('certificates').selectAll().orderBy('name').orderBy('issued_at').execute();
    const byName = new Map<string, IdentitySummary>();
    for (const row of rows) {
      const entry = byName.get(row.name) ?? {
        name: row.name,
        role: row.role,
        certificates: 0,
        newestNotAfter: new Date(0),
        revoked: true,
      };
      entry.certificates += 1;
      const notAfter = new Date(row.not_after);
      if (notAfter > entry.newestNotAfter) entry.newestNotAfter = notAfter;
      if (row.revoked_at === null) entry.revoked = false;
      byName.set(row.name, entry);
    }
    return [...byName.values()];
  }

  async grant(user: string, tunnel: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const result = await trx
        .insertInto('grants')
        .values({ user_name: user, tunnel, granted_at: iso(new Date()) })
        .onConflict((oc) => oc.columns(['user_name', 'tunnel']).doNothing())
        .executeTakeFirst();
      const added = Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
      if (added) await this.bumpRevision(trx);
      return added;
    });
  }

  async ungrant(user: string, tunnel: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const result = await trx.deleteFrom('grants').where('user_name', '=', user).where('tunnel', '=', tunnel).executeTakeFirst();
      const removed = Number(result.numDeletedRows) > 0;
      if (removed) await this.bumpRevision(trx);
      return removed;
    });
  }

  async listGrants(): Promise<GrantRecord[]> {
    const rows = await this.db.selectFrom('grants').selectAll().orderBy('user_name').orderBy('tunnel').execute();
    return rows.map((r) => ({ user: r.user_name, tunnel: r.tunnel, grantedAt: new Date(r.granted_at) }));
  }

  async revision(): Promise<number> {
    return readCounter(this.db, META.revision);
  }

  async policySnapshot(): Promise<PolicySnapshot> {
    return this.db.transaction().execute(async (trx) => {
      const rev = await trx.selectFrom('meta').select('value').where('key', '=', META.revision).executeTakeFirst();
      const revoked = await trx.selectFrom('certificates').select('serial').where('revoked_at', 'is not', null).execute();
      const grants = await trx.selectFrom('grants').select(['user_name', 'tunnel']).execute();
      const map = new Map<string, Set<string>>();
      for (const g of grants) {
        const set = map.get(g.user_name) ?? new Set<string>();
        set.add(g.tunnel);
        map.set(g.user_name, set);
      }
      return { revision: Number(rev?.value ?? 0), revokedSerials: new Set(revoked.map((r) => r.serial)), grants: map };
    });
  }

  async recordTunnel(name: string, agent: string, port: number): Promise<void> {
    const now = iso(new Date());
    await this.db
      .insertInto('tunnels')
      .values({ name, agent, port, first_seen: now, last_seen: now })
      .onConflict((oc) => oc.column('name').doUpdateSet({ agent, port, last_seen: now }))
      .execute();
  }

  async listTunnels(): Promise<TunnelRecord[]> {
    const rows = await this.db.selectFrom('tunnels').selectAll().orderBy('name').execute();
    return rows.map((r) => ({
      name: r.name,
      agent: r.agent,
      port: Number(r.port),
      firstSeen: new Date(r.first_seen),
      lastSeen: new Date(r.last_seen),
    }));
  }

  async recordAgentConnected(name: string, address: string): Promise<number> {
    const row = await this.db
      .insertInto('agent_sightings')
      .values({ name, address, connected_at: iso(new Date()), disconnected_at: null, reason: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    return Number(row.id);
  }

  async recordAgentDisconnected(id: number, reason?: string): Promise<void> {
    await this.db
      .updateTable('agent_sightings')
      .set({ disconnected_at: iso(new Date()), ...(reason === undefined ? {} : { reason: reason.slice(0, 500) }) })
      .where('id', '=', id)
      .execute();
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}
