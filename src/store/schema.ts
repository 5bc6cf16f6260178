// Table layout of the store, shared by every dialect (SQLite embedded, PostgreSQL shared).
// Owns: table and column names. Must not: hold queries (store.ts does).
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
}

export interface TunnelsTable {
  name: string;
  agent: string;
  port: number;
  first_seen: string;
  last_seen: string;
}

export interface Database {
  tunnels: TunnelsTable;
  certificates: CertificatesTable;
  grants: GrantsTable;
  meta: MetaTable;
  agent_sightings: AgentSightingsTable;
}
