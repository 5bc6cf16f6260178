// A stand-in for src/cli/main.ts until `dbrelay` is registered there: the same program setup
// and error handling, with only the dbrelay command, so the tests run it as a real process.
// Owns: nothing under src/. Must not: be imported by anything under src/.
import { Command, CommanderError } from 'commander';
import { register } from '../../src/cli/dbrelay.ts';
import { reportAndExit } from '../../src/cli/shared.ts';

const program = new Command();
program.name('warpstone').showHelpAfterError('(run with --help for usage)').exitOverride();
register(program);
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  reportAndExit(err);
}
