// `warpstone init`: creates the home directory: CA, relay certificate, store.
import type { Command } from 'commander';
import { mkdirSync, existsSync, writeFileSync, chmodSync } from 'node:fs';
import { homePaths } from '../common/home.js';
import { StateError } from '../common/errors.js';
import { createCa, issueCertificate } from '../pki/ca.js';
import { openStore } from '../store/open.js';
import { collect } from './shared.js';

export interface InitResult {
  home: string;
  caCert: string;
  relayNames: string[];
}

export async function runInit(home: string | undefined, relayHosts: string[]): Promise<InitResult> {
  const paths = homePaths(home);
  if (existsSync(paths.caKey) || existsSync(paths.caCert)) {
    throw new StateError(`${paths.dir} already has a CA (${paths.caCert}); refusing to overwrite it. Use another --home to start afresh.`, 'WS_CA_EXISTS');
  }
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  chmodSync(paths.dir, 0o700);
  const ca = await createCa();
  const names = [...new Set([...relayHosts, 'localhost', '127.0.0.1', '::1'])];
  const relay = await issueCertificate(ca, { name: relayHosts[0] ?? 'localhost', role: 'relay', days: 825, altNames: names });
  writeFileSync(paths.caKey, ca.keyPem, { mode: 0o600 });
  writeFileSync(paths.caCert, ca.certPem, { mode: 0o644 });
  writeFileSync(paths.relayIdentity, relay.keyPem + relay.certPem + ca.certPem, { mode: 0o600 });
  const store = await openStore(paths.store, { create: true });
  try {
    await store.addCertificate({ serial: relay.serial, name: 'relay', role: 'relay', notBefore: relay.notBefore, notAfter: relay.notAfter, issuedAt: new Date() });
  } finally {
    await store.close();
  }
  return { home: paths.dir, caCert: paths.caCert, relayNames: names };
}

export function register(program: Command): void {
  program
    .command('init')
    .description('create the state directory: a CA, the relay certificate and the store')
    .option('--home <dir>', 'state directory (default $WARPSTONE_HOME or ~/.warpstone)')
    .option('--relay-host <name>', 'a name or address clients use for the relay (repeatable)', collect, [])
    .action(async (opts: { home?: string; relayHost: string[] }) => {
      const result = await runInit(opts.home, opts.relayHost);
      process.stdout.write(
        `initialised ${result.home}\n` +
          `  CA certificate: ${result.caCert} (give it to users and agents with their identity)\n` +
          `  relay certificate names: ${result.relayNames.join(', ')}\n` +
          `next: warpstone issue agent NAME --out agent.pem; warpstone issue user NAME --out user.pem; warpstone relay\n`,
      );
    });
}
