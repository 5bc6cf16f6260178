// Table layout of the store, shared by every dialect (SQLite embedded, PostgreSQL shared).
// Owns: table and column names. Must not: hold queries (store.ts, ops-queries.ts) or DDL
// (migrate.ts).
import type { Generated } from 'kysely';

export interface CertificatesTable {
  serial: string;
  name: string;
  role: string;
  not_before: string;
  not_after: string;
  issued_at: string;
  revoked_at: string | null;
}

export interface GrantsTable {
  user_name: string;
  tunnel: string;
  granted_at: string;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface AgentSightingsTable {
  id: Generated<number>;
  name: string;
  address: string;
  connected_at: string;
  disconnected_at: string | null;
  /** why the link ended; added in schema 2 (null on rows written before, and while connected) */
  reason: string | null;
}

export interface TunnelsTable {
  name: string;
  agent: string;
  port: number;
  first_seen: string;
  last_seen: string;
}

/** One row per ban ever issued; history stays so a repeat offender's next ban grows. */
export interface BansTable {
  id: Generated<number>;
  prefix: string;
  banned_at: string;
  banned_until: string;
  offence: number;
  failures: number;
  reason: string;
  banned_by: string;
}

export interface AuditTable {
  id: Generated<number>;
  at: string;
  kind: string;
  identity: string | null;
  source: string;
  tunnel: string | null;
  target: string | null;
  bytes_in: number | null;
  bytes_out: number | null;
  duration_ms: number | null;
  reason: string | null;
}

export interface LimitsTable {
  scope: string;
  name: string;
  baseline_bps: number;
  max_bps: number;
  credit_cap_bytes: number;
}

export interface TargetHealthTable {
  agent: string;
  tunnel: string;
  state: string;
  detail: string;
  since: string;
  checked_at: string;
}

export interface AlertsTable {
  id: Generated<number>;
  created_at: string;
  kind: string;
  payload: string;
  destination: string;
  attempts: number;
  next_attempt_at: string;
  delivered_at: string | null;
  last_error: string | null;
}

export interface AdminTokensTable {
  id: Generated<number>;
  hash: string;
  label: string;
  created_at: string;
  last_used_at: string | null;
}

export interface Database {
  tunnels: TunnelsTable;
  certificates: CertificatesTable;
  grants: GrantsTable;
  meta: MetaTable;
  agent_sightings: AgentSightingsTable;
  bans: BansTable;
  audit: AuditTable;
  limits: LimitsTable;
  target_health: TargetHealthTable;
  alerts: AlertsTable;
  admin_tokens: AdminTokensTable;
}

/** Keys of the `meta` table. */
export const META = {
  schema: 'schema',
  /** bumped by every change to revocations, grants and bandwidth limits */
  revision: 'revision',
  /** bumped by every ban added or removed, so running relays reload their ban list */
  banRevision: 'ban_revision',
} as const;

/** The schema version this code writes; `migrate` brings older files up to it. */
export const SCHEMA_VERSION = 2;
