// The embedded default store: one SQLite file in the home directory, WAL mode so the relay and
// CLI commands (grant, revoke, status) can use it at the same time.
// Owns: opening SQLite. Must not: contain queries (store.ts does).
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { KyselyStore, type Store } from './store.js';
import type { Database } from './schema.js';
import { StateError, errorMessage } from '../common/errors.js';

export async function openSqliteStore(path: string, options: { create?: boolean } = {}): Promise<Store> {
  let sqlite: BetterSqlite3.Database;
  try {
    sqlite = new BetterSqlite3(path, { fileMustExist: !options.create });
  } catch (err) {
    throw new StateError(
      `store ${path} cannot be opened (${errorMessage(err)}); run 'warpstone init' first or pass --home`,
      'WS_NO_STORE',
    );
  }
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  await KyselyStore.migrate(db);
  return new KyselyStore(db);
}
