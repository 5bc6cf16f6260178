// Picks the store implementation for a home directory. Today: the embedded SQLite file.
// Owns: the choice of backend. Must not: contain queries.
import type { Store } from './store.js';
import { openSqliteStore } from './sqlite.js';

export async function openStore(path: string, options: { create?: boolean } = {}): Promise<Store> {
  return openSqliteStore(path, options);
}
