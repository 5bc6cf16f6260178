// The `warpstone` command line: one file per command under src/cli, registered here.
// Owns: the program and its error handling. Must not: hold any command's logic.
import { Command, CommanderError } from 'commander';
import { register as init } from './init.js';
import { register as issue } from './issue.js';
import { register as grant } from './grant.js';
import { register as revoke } from './revoke.js';
import { register as relay } from './relay.js';
import { register as agent } from './agent.js';
import { register as connect } from './connect.js';
import { register as status } from './status.js';
import { register as list } from './list.js';
import { register as demo } from './demo.js';
import { register as identd } from './identd.js';
import { register as stone } from './stone.js';
import { register as dbrelay } from './dbrelay.js';
import { register as ban } from './ban.js';
import { register as audit } from './audit.js';
import { register as limit } from './limit.js';
import { register as admin } from './admin.js';
import { reportAndExit } from './shared.js';

const program = new Command();
program
  .name('warpstone')
  .description('reach private services through a relay with certificate identity')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

for (const add of [init, issue, grant, revoke, relay, agent, connect, status, list, demo, identd, stone, dbrelay, ban, audit, limit, admin]) add(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  reportAndExit(err);
}
