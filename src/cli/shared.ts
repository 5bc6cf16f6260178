// Helpers every command uses: opening the home's store and CA, signals, error exit codes.
// Owns: CLI plumbing. Must not: hold command logic.
import { readFileSync } from 'node:fs';
import type { Store } from '../store/store.js';
import { openStore } from '../store/open.js';
import { homePaths } from '../common/home.js';
import { StateError, UsageError, ConfigError, WarpstoneError, errorMessage } from '../common/errors.js';
import type { CaMaterial } from '../pki/ca.js';

export async function withStore<T>(home: string | undefined, fn: (store: Store) => Promise<T>): Promise<T> {
  const paths = homePaths(home);
  const store = await openStore(paths.store);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function loadCa(home: string | undefined): CaMaterial {
  const paths = homePaths(home);
  try {
    return { keyPem: readFileSync(paths.caKey, 'utf8'), certPem: readFileSync(paths.caCert, 'utf8') };
  } catch (err) {
    throw new StateError(`no CA in ${paths.dir} (${errorMessage(err)}); run 'warpstone init' first or pass --home`, 'WS_NO_CA');
  }
}

/** Prints an error the way a person wants to read it and picks the exit code. */
export function reportAndExit(err: unknown): never {
  if (err instanceof UsageError || err instanceof ConfigError) {
    process.stderr.write(`warpstone: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof WarpstoneError) {
    process.stderr.write(`warpstone: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`warpstone: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}

/** Runs `stop` once on SIGINT/SIGTERM, then exits 0. */
export function onShutdown(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) return;
    stopping = true;
    stop()
      .catch((err: unknown) => process.stderr.write(`warpstone: error while stopping: ${errorMessage(err)}\n`))
      .finally(() => process.exit(0));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function parseSeconds(text: string, flag: string): number {
  if (!/^\d+(\.\d+)?$/.test(text)) throw new UsageError(`${flag}: '${text}' should be a number of seconds (0 = never)`);
  return Number(text);
}

export function parseDays(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 36500) {
    throw new UsageError(`--days: '${text}' should be a whole number of days between 1 and 36500`);
  }
  return Number(text);
}
