// Creates the store's tables and brings a file written by an older warpstone up to the current
// schema: every statement is idempotent (IF NOT EXISTS, a column added only when missing), so
// opening any store, new or old, leaves it at SCHEMA_VERSION.
// Owns: DDL. Must not: hold queries that read or write rows (store.ts, ops-queries.ts).
import { Kysely, PostgresAdapter, sql, type ColumnDefinitionBuilder } from 'kysely';
import { META, SCHEMA_VERSION, type Database } from './schema.js';

/** An auto-numbered primary key: `integer ... autoincrement` in SQLite, `serial` in PostgreSQL. */
function idColumn(db: Kysely<Database>): { type: 'integer' | 'serial'; build: (c: ColumnDefinitionBuilder) => ColumnDefinitionBuilder } {
  return db.getExecutor().adapter instanceof PostgresAdapter
    ? { type: 'serial', build: (c) => c.primaryKey() }
    : { type: 'integer', build: (c) => c.primaryKey().autoIncrement() };
}

async function addColumnIfMissing(db: Kysely<Database>, table: keyof Database & string, column: string, type: 'text'): Promise<void> {
  const tables = await db.introspection.getTables();
  const found = tables.find((t) => t.name === table);
  if (!found || found.columns.some((c) => c.name === column)) return;
  try {
    await db.schema.alterTable(table).addColumn(column, type).execute();
  } catch (err) {
    // Another process (the relay and a CLI command opening an old store together) may have added
    // it between our look and our ALTER; only a column that is still missing is an error.
    const again = (await db.introspection.getTables()).find((t) => t.name === table);
    if (!again?.columns.some((c) => c.name === column)) throw err;
  }
}

async function coreTables(db: Kysely<Database>): Promise<void> {
  const id = idColumn(db);
  await db.schema
    .createTable('certificates')
    .ifNotExists()
    .addColumn('serial', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('not_before', 'text', (c) => c.notNull())
    .addColumn('not_after', 'text', (c) => c.notNull())
    .addColumn('issued_at', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'text')
    .execute();
  await db.schema.createIndex('certificates_name').ifNotExists().on('certificates').column('name').execute();
  await db.schema
    .createTable('grants')
    .ifNotExists()
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('tunnel', 'text', (c) => c.notNull())
    .addColumn('granted_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('grants_pk', ['user_name', 'tunnel'])
    .execute();
  await db.schema
    .createTable('meta')
    .ifNotExists()
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('agent_sightings')
    .ifNotExists()
    .addColumn('id', id.type, id.build)
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('address', 'text', (c) => c.notNull())
    .addColumn('connected_at', 'text', (c) => c.notNull())
    .addColumn('disconnected_at', 'text')
    .addColumn('reason', 'text')
    .execute();
  // schema 1 had no reason column: a store made by the previous version gets it here
  await addColumnIfMissing(db, 'agent_sightings', 'reason', 'text');
  await db.schema.createIndex('agent_sightings_name').ifNotExists().on('agent_sightings').columns(['name', 'connected_at']).execute();
  await db.schema
    .createTable('tunnels')
    .ifNotExists()
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('agent', 'text', (c) => c.notNull())
    .addColumn('port', 'integer', (c) => c.notNull())
    .addColumn('first_seen', 'text', (c) => c.notNull())
    .addColumn('last_seen', 'text', (c) => c.notNull())
    .execute();
}

async function opsTables(db: Kysely<Database>): Promise<void> {
  const id = idColumn(db);
  await db.schema
    .createTable('bans')
    .ifNotExists()
    .addColumn('id', id.type, id.build)
    .addColumn('prefix', 'text', (c) => c.notNull())
    .addColumn('banned_at', 'text', (c) => c.notNull())
    .addColumn('banned_until', 'text', (c) => c.notNull())
    .addColumn('offence', 'integer', (c) => c.notNull())
    .addColumn('failures', 'integer', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('banned_by', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('bans_prefix').ifNotExists().on('bans').columns(['prefix', 'banned_at']).execute();
  await db.schema.createIndex('bans_until').ifNotExists().on('bans').column('banned_until').execute();
  await db.schema
    .createTable('audit')
    .ifNotExists()
    .addColumn('id', id.type, id.build)
    .addColumn('at', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('identity', 'text')
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('tunnel', 'text')
    .addColumn('target', 'text')
    .addColumn('bytes_in', 'bigint')
    .addColumn('bytes_out', 'bigint')
    .addColumn('duration_ms', 'bigint')
    .addColumn('reason', 'text')
    .execute();
  await db.schema.createIndex('audit_at').ifNotExists().on('audit').column('at').execute();
  await db.schema.createIndex('audit_identity').ifNotExists().on('audit').columns(['identity', 'at']).execute();
  await db.schema.createIndex('audit_tunnel').ifNotExists().on('audit').columns(['tunnel', 'at']).execute();
  await db.schema
    .createTable('limits')
    .ifNotExists()
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('baseline_bps', 'bigint', (c) => c.notNull())
    .addColumn('max_bps', 'bigint', (c) => c.notNull())
    .addColumn('credit_cap_bytes', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('limits_pk', ['scope', 'name'])
    .execute();
  await db.schema
    .createTable('target_health')
    .ifNotExists()
    .addColumn('agent', 'text', (c) => c.notNull())
    .addColumn('tunnel', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('detail', 'text', (c) => c.notNull())
    .addColumn('since', 'text', (c) => c.notNull())
    .addColumn('checked_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('target_health_pk', ['agent', 'tunnel'])
    .execute();
  await db.schema
    .createTable('alerts')
    .ifNotExists()
    .addColumn('id', id.type, id.build)
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('destination', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull())
    .addColumn('next_attempt_at', 'text', (c) => c.notNull())
    .addColumn('delivered_at', 'text')
    .addColumn('last_error', 'text')
    .execute();
  await db.schema.createIndex('alerts_due').ifNotExists().on('alerts').columns(['delivered_at', 'next_attempt_at']).execute();
  await db.schema
    .createTable('admin_tokens')
    .ifNotExists()
    .addColumn('id', id.type, id.build)
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .addColumn('label', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('last_used_at', 'text')
    .execute();
}

export async function migrate(db: Kysely<Database>): Promise<void> {
  await coreTables(db);
  await opsTables(db);
  await db
    .insertInto('meta')
    .values([
      { key: META.schema, value: String(SCHEMA_VERSION) },
      { key: META.revision, value: '0' },
      { key: META.banRevision, value: '0' },
    ])
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  await db
    .updateTable('meta')
    .set({ value: String(SCHEMA_VERSION) })
    .where('key', '=', META.schema)
    .where(sql<boolean>`cast(value as integer) < ${SCHEMA_VERSION}`)
    .execute();
}
