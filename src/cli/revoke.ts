// `warpstone revoke NAME`: every certificate of NAME stops working; a running relay applies it
// within its policy poll (1 s) and closes what the identity holds.
import type { Command } from 'commander';
import { assertValidName } from '../pki/names.js';
import { UsageError } from '../common/errors.js';
import { withStore } from './shared.js';

export async function runRevoke(home: string | undefined, name: string): Promise<number> {
  assertValidName(name, 'identity');
  return withStore(home, async (store) => {
    if ((await store.roleOf(name)) === undefined) throw new UsageError(`no identity named '${name}'`, 'WS_NO_SUCH_IDENTITY');
    return store.revokeName(name);
  });
}

export function register(program: Command): void {
  program
    .command('revoke')
    .description("revoke every certificate of NAME; a running relay closes its connections and streams within seconds")
    .argument('<name>')
    .option('--home <dir>', 'state directory')
    .action(async (name: string, opts: { home?: string }) => {
      const count = await runRevoke(opts.home, name);
      process.stdout.write(count > 0 ? `revoked ${count} certificate(s) of '${name}'\n` : `'${name}' had no valid certificate left\n`);
    });
}
