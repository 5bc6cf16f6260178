// `warpstone issue user|agent NAME --out FILE`: a new identity file, recorded in the store.
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { UsageError } from '../common/errors.js';
import { assertValidName } from '../pki/names.js';
import { issueCertificate, type Role } from '../pki/ca.js';
import { writeIdentityFile } from '../pki/pem.js';
import { withStore, loadCa, parseDays } from './shared.js';

export interface IssueResult {
  name: string;
  role: Role;
  serial: string;
  notAfter: Date;
  file: string;
}

export async function runIssue(home: string | undefined, role: string, name: string, out: string, days: number, force = false): Promise<IssueResult> {
  if (role !== 'user' && role !== 'agent') throw new UsageError(`issue: the kind must be 'user' or 'agent', not '${role}'`);
  assertValidName(name, role);
  const ca = loadCa(home);
  return withStore(home, async (store) => {
    const existing = await store.roleOf(name);
    if (existing && existing !== role) {
      throw new UsageError(`'${name}' is already the name of a ${existing}; one name, one kind of identity`, 'WS_NAME_TAKEN');
    }
    const issued = await issueCertificate(ca, { name, role, days });
    writeIdentityFile(out, { keyPem: issued.keyPem, certPem: issued.certPem, caPem: ca.certPem }, force);
    await store.addCertificate({ serial: issued.serial, name, role, notBefore: issued.notBefore, notAfter: issued.notAfter, issuedAt: new Date() });
    return { name, role, serial: issued.serial, notAfter: issued.notAfter, file: resolve(out) };
  });
}

export function register(program: Command): void {
  program
    .command('issue')
    .description('issue an identity file (key, certificate, CA certificate; mode 0600) for a user or an agent')
    .argument('<kind>', 'user or agent')
    .argument('<name>', 'the identity name (letters, digits, . _ - @)')
    .requiredOption('--out <file>', 'where to write the identity file')
    .option('--days <n>', 'validity in days', '365')
    .option('--force', 'overwrite an existing file')
    .option('--home <dir>', 'state directory')
    .action(async (kind: string, name: string, opts: { out: string; days: string; force?: boolean; home?: string }) => {
      const r = await runIssue(opts.home, kind, name, opts.out, parseDays(opts.days), opts.force);
      process.stdout.write(`issued ${r.role} '${r.name}' (serial ${r.serial}, valid until ${r.notAfter.toISOString()}) -> ${r.file}\n`);
    });
}
