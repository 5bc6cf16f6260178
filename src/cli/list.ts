// `warpstone list`: identities issued and grants, from the store.
import type { Command } from 'commander';
import { withStore } from './shared.js';

export function register(program: Command): void {
  program
    .command('list')
    .description('identities and grants in the store')
    .option('--home <dir>', 'state directory')
    .action(async (opts: { home?: string }) => {
      await withStore(opts.home, async (store) => {
        const ids = await store.listIdentities();
        const grants = await store.listGrants();
        let out = 'identities\n';
        for (const i of ids) {
          out += `  ${i.role.padEnd(6)} ${i.name.padEnd(24)} ${i.revoked ? 'REVOKED' : `valid until ${i.newestNotAfter.toISOString()}`}\n`;
        }
        out += 'grants\n';
        for (const g of grants) out += `  ${g.user} -> ${g.tunnel}\n`;
        process.stdout.write(out);
      });
    });
}
