// What the guard and the operations parts keep in the store: bans, the audit table, bandwidth
// limits, target health, the address history of agents, the alert outbox and admin tokens.
// The interface is the contract; KyselyStore implements it with the same queries for SQLite and
// PostgreSQL. Times are Dates here and ISO-8601 text in the tables.
// Owns: these record shapes and method signatures. Must not: hold queries or policy.

/** A ban on one source prefix ("203.0.113.7/32", "2001:db8:1:2::/64"). Kept after expiry so a
 * repeat offender's next ban can grow; a ban is active while `until` is in the future. */
export interface BanRecord {
  prefix: string;
  bannedAt: Date;
  until: Date;
  /** 1 for the first ban of this prefix, 2 for the next, ... */
  offence: number;
  failures: number;
  reason: string;
  by: 'auto' | 'admin';
}

export type AuditKind = 'stream-open' | 'stream-refused' | 'stream-close' | 'handshake-refused' | 'banned' | 'db-allow' | 'db-deny';

export interface AuditRecord {
  time: Date;
  kind: AuditKind;
  identity: string | null;
  source: string;
  tunnel: string | null;
  target: string | null;
  bytesIn: number | null;
  bytesOut: number | null;
  durationMs: number | null;
  reason: string | null;
}

export interface AuditFilter {
  since?: Date;
  until?: Date;
  identity?: string;
  tunnel?: string;
  kind?: AuditKind;
  /** newest first; default 1000 */
  limit?: number;
}

export type LimitScope = 'tunnel' | 'user';

/** Token bucket with burst credits: `baseline` always, up to `max` while credits last. */
export interface LimitRecord {
  scope: LimitScope;
  name: string;
  baselineBytesPerSecond: number;
  maxBytesPerSecond: number;
  creditCapBytes: number;
}

export interface TargetHealthRecord {
  agent: string;
  tunnel: string;
  state: 'up' | 'down';
  detail: string;
  since: Date;
  checkedAt: Date;
}

export interface SightingRecord {
  id: number;
  agent: string;
  address: string;
  connectedAt: Date;
  disconnectedAt: Date | null;
  /** why the link ended ("closed by agent", "ping timeout", ...); null while connected */
  reason: string | null;
}

export interface AlertRecord {
  id: number;
  createdAt: Date;
  kind: string;
  /** the JSON body delivered */
  payload: string;
  /** "webhook:https://..." or "command:/path" */
  destination: string;
  attempts: number;
  nextAttemptAt: Date;
  deliveredAt: Date | null;
  lastError: string | null;
}

export interface AdminTokenRecord {
  id: number;
  /** SHA-256 hex of the token; the token itself is never stored */
  hash: string;
  label: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface OpsStore {
  // bans
  /** records a ban; a ban of the same prefix still active ends where this one begins */
  putBan(ban: BanRecord): Promise<void>;
  /** lifts the prefix's active ban and forgets its history (the next offence counts from 1);
   * true when an active ban was lifted */
  removeBan(prefix: string): Promise<boolean>;
  /** active bans only unless `all` */
  listBans(options?: { all?: boolean; now?: Date }): Promise<BanRecord[]>;
  /** the most recent ban of a prefix, active or not */
  lastBan(prefix: string): Promise<BanRecord | undefined>;
  /** bumped by putBan and removeBan: relays poll it to pick up bans made elsewhere */
  banRevision(): Promise<number>;

  // audit
  addAudit(records: AuditRecord[]): Promise<void>;
  queryAudit(filter: AuditFilter): Promise<AuditRecord[]>;
  /** deletes audit rows older than `before`; returns how many */
  pruneAudit(before: Date): Promise<number>;

  // bandwidth limits (bump the policy revision so relays reload them)
  setLimit(limit: LimitRecord): Promise<void>;
  removeLimit(scope: LimitScope, name: string): Promise<boolean>;
  listLimits(): Promise<LimitRecord[]>;

  // target health (latest state per agent+tunnel)
  putTargetHealth(record: TargetHealthRecord): Promise<void>;
  listTargetHealth(): Promise<TargetHealthRecord[]>;

  // address history (rows written by recordAgentConnected / recordAgentDisconnected)
  /** oldest first; with `since`, only sightings still open or ended at or after it */
  listSightings(agent: string, since?: Date): Promise<SightingRecord[]>;
  /** the agent's most recent sighting (the link now up, or the last one that ended) */
  lastSighting(agent: string): Promise<SightingRecord | undefined>;
  setSightingReason(id: number, reason: string): Promise<void>;

  // alert outbox: nothing is lost; delivery marks rows
  addAlerts(records: Array<Omit<AlertRecord, 'id' | 'attempts' | 'deliveredAt' | 'lastError'>>): Promise<void>;
  dueAlerts(now: Date, limit: number): Promise<AlertRecord[]>;
  markAlertDelivered(id: number, at: Date): Promise<void>;
  markAlertFailed(id: number, error: string, nextAttemptAt: Date): Promise<void>;
  listAlerts(options?: { undeliveredOnly?: boolean; limit?: number }): Promise<AlertRecord[]>;

  // admin tokens
  addAdminToken(record: Omit<AdminTokenRecord, 'id' | 'lastUsedAt'>): Promise<number>;
  /** true and touches lastUsedAt when the hash belongs to a token */
  useAdminToken(hash: string, at: Date): Promise<boolean>;
  listAdminTokens(): Promise<AdminTokenRecord[]>;
  removeAdminToken(id: number): Promise<boolean>;
}
