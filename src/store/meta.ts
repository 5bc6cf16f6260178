// The counters in the `meta` table that relays poll to notice changes made by other processes
// (the policy revision, the ban revision). A bump runs inside the caller's transaction so the
// change and its counter land together.
// Owns: reading and bumping meta counters. Must not: hold any other query.
import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';

export async function bumpCounter(db: Kysely<Database>, key: string): Promise<void> {
  await db
    .updateTable('meta')
    .set({ value: sql<string>`cast(cast(value as integer) + 1 as text)` })
    .where('key', '=', key)
    .execute();
}

export async function readCounter(db: Kysely<Database>, key: string): Promise<number> {
  const row = await db.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst();
  return Number(row?.value ?? 0);
}
