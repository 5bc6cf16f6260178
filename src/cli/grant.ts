// `warpstone grant|ungrant USER TUNNEL`: who may open which tunnel (deny by default).
import type { Command } from 'commander';
import { assertValidName } from '../pki/names.js';
import { UsageError } from '../common/errors.js';
import { withStore } from './shared.js';

export async function runGrant(home: string | undefined, user: string, tunnel: string, add: boolean): Promise<boolean> {
  assertValidName(user, 'user');
  if (tunnel !== '*') assertValidName(tunnel, 'tunnel');
  return withStore(home, async (store) => {
    const role = await store.roleOf(user);
    if (add && role === undefined) throw new UsageError(`no identity named '${user}'; issue it first with 'warpstone issue user ${user} --out FILE'`, 'WS_NO_SUCH_USER');
    if (add && role !== 'user') throw new UsageError(`'${user}' is an ${role}, not a user; only users are granted tunnels`, 'WS_NOT_A_USER');
    return add ? store.grant(user, tunnel) : store.ungrant(user, tunnel);
  });
}

export function register(program: Command): void {
  program
    .command('grant')
    .description("allow USER to open TUNNEL ('*' for every tunnel)")
    .argument('<user>')
    .argument('<tunnel>')
    .option('--home <dir>', 'state directory')
    .action(async (user: string, tunnel: string, opts: { home?: string }) => {
      const changed = await runGrant(opts.home, user, tunnel, true);
      process.stdout.write(changed ? `granted: ${user} -> ${tunnel}\n` : `${user} already had ${tunnel}\n`);
    });
  program
    .command('ungrant')
    .description('take back a grant')
    .argument('<user>')
    .argument('<tunnel>')
    .option('--home <dir>', 'state directory')
    .action(async (user: string, tunnel: string, opts: { home?: string }) => {
      const changed = await runGrant(opts.home, user, tunnel, false);
      process.stdout.write(changed ? `ungranted: ${user} -> ${tunnel}\n` : `${user} had no grant for ${tunnel}\n`);
    });
}
