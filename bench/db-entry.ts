// A stand-in for `warpstone dbrelay` for a measured tree whose src/cli/main.ts does not register
// the command (an older checkout given with --root): the same program setup and error handling
// as main.ts, with only the dbrelay command, loaded from that tree's dist/ when it is built (else
// its sources, through tsx). The bench uses it only when `node bin/warpstone.js dbrelay --help`
// fails (see db-peer.ts).
// Usage: node --import tsx bench/db-entry.ts ROOT dbrelay --config FILE
// Owns: nothing under src/. Must not: be imported by anything.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';

const root = resolve(process.argv[2] ?? '.');
const argv = [process.argv[0] ?? 'node', 'warpstone', ...process.argv.slice(3)];
const built = join(root, 'dist', 'cli', 'dbrelay.js');
const cliDir = existsSync(built) ? join(root, 'dist', 'cli') : join(root, 'src', 'cli');
const ext = existsSync(built) ? 'js' : 'ts';

const { register } = (await import(pathToFileURL(join(cliDir, `dbrelay.${ext}`)).href)) as { register: (program: Command) => void };
const { reportAndExit } = (await import(pathToFileURL(join(cliDir, `shared.${ext}`)).href)) as { reportAndExit: (err: unknown) => never };

const program = new Command();
program.name('warpstone').showHelpAfterError('(run with --help for usage)').exitOverride();
register(program);
try {
  await program.parseAsync(argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  reportAndExit(err);
}
