// The state directory (`--home`, $WARPSTONE_HOME, else ~/.warpstone) and the files in it.
// Owns: file names under home. Must not: read or write the files (pki/ and store/ do).
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export interface HomePaths {
  dir: string;
  caCert: string;
  caKey: string;
  relayIdentity: string;
  store: string;
  adminSocket: string;
}

export function resolveHome(explicit?: string): string {
  if (explicit) return resolve(explicit);
  if (process.env.WARPSTONE_HOME) return resolve(process.env.WARPSTONE_HOME);
  return join(homedir(), '.warpstone');
}

export function homePaths(explicit?: string): HomePaths {
  const dir = resolveHome(explicit);
  return {
    dir,
    caCert: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    relayIdentity: join(dir, 'relay.pem'),
    store: join(dir, 'store.sqlite'),
    adminSocket: join(dir, 'relay.sock'),
  };
}
