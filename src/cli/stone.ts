// `warpstone stone [--json] [--ban-home DIR [--ban-* ...]] [stone options] <stone> [-- <stone>]...`:
// stone 2.4's command line, parsed by src/repeater/grammar.ts and run by src/repeater/engine.ts.
// Every argument after `stone` and warpstone's own leading options (`--json`: JSON log lines;
// `--ban-home DIR` and its `--ban-*` settings: the relay's automatic bans for xhost denials,
// stored in DIR, repeater/stone-bans.ts) is handed to the grammar untouched (stone's own -h, -p,
// -d, -C, `--`, ...).
// Exit codes: 2 for a grammar error, a bad warpstone option or a stone this version cannot run (WS_STONE_UNSUPPORTED),
// 1 for start-up failures (names, ports, files, the --ban-home store), 0 after SIGTERM/SIGINT or -N, 1 after -h (as stone).
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { readFileSync, statSync } from 'node:fs';
import { UsageError, WarpstoneError, errorMessage } from '../common/errors.js';
import { parseStoneArguments, type ConfigFileRequest, type GrammarEnvironment } from '../repeater/grammar.js';
import { StoneGrammarError } from '../repeater/tokens.js';
import { StoneUnsupportedError } from '../repeater/support.js';
import { startStones } from '../repeater/engine.js';
import { lookupService } from '../repeater/services.js';
import { startStoneBans } from '../repeater/stone-bans.js';
import { banSettingsFromFlags, type BanFlags, type BanSettings } from '../guard/ban-settings.js';

const NAME = 'warpstone stone';


/** Reads a -C file, through stone's preprocessor unless `-P ''` (Debian: cpp -traditional). */
function readConfigFile(request: ConfigFileRequest, env: NodeJS.ProcessEnv): string {
  if (request.preprocessor === undefined) return readFileSync(request.path, 'latin1');
  readFileSync(request.path); // a missing file is reported as such, not as a cpp failure
  const host = hostname();
  const [command, ...args] = request.preprocessor.command.split(/\s+/).filter((a) => a !== '');
  if (command === undefined) return readFileSync(request.path, 'latin1');
  const extra = request.preprocessor.options?.split(/\s+/).filter((a) => a !== '') ?? [];
  const argv = [...args, ...extra, `-DHOST=${host}`, `-DHOST_${host.replace(/\./g, '_')}`, `-DHOME=${env.HOME ?? ''}`, request.path];
  try {
    return execFileSync(command, argv, { encoding: 'latin1', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`preprocessor ${request.preprocessor.command} failed on ${request.path}: ${stderr || errorMessage(err)} (give -P '' to read the file without one)`);
  }
}

export function stoneEnvironment(env: NodeJS.ProcessEnv = process.env): GrammarEnvironment {
  return {
    env,
    readConfigFile: (request) => readConfigFile(request, env),
    isDirectory: (path) => {
      try {
        return statSync(path).isDirectory();
      } catch {
        return false;
      }
    },
    lookupService,
  };
}

/**
 * The arguments after `stone` exactly as given. commander's own parsing of the parent command
 * drops a `--` that follows operands, so they are taken from the raw argv when it is there.
 */
function rawStoneArguments(command: Command, parsed: string[]): string[] {
  const raw = (command.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs;
  if (!raw) return parsed;
  const user = raw.slice(2);
  const at = user.indexOf('stone');
  if (at < 0 || user.slice(0, at).some((a) => !a.startsWith('-'))) return parsed;
  return user.slice(at + 1);
}

/** The `--ban-*` options that take a value, and the BanFlags field each fills. */
const BAN_VALUE_OPTIONS = {
  '--ban-maxretry': 'banMaxretry',
  '--ban-findtime': 'banFindtime',
  '--ban-time': 'banTime',
  '--ban-increment': 'banIncrement',
  '--ban-maxtime': 'banMaxtime',
  '--ban-prefix-v4': 'banPrefixV4',
  '--ban-prefix-v6': 'banPrefixV6',
} as const satisfies Record<string, keyof BanFlags>;

export interface OwnOptions {
  json: boolean;
  /** --ban-home DIR: bans on, kept in DIR's store; absent: no bans, no store (stone's behaviour) */
  bans?: { home: string; settings: BanSettings };
  stoneArgs: readonly string[];
}

/**
 * warpstone's own options, only before stone's: `--json` (JSON log lines), `--ban-home DIR`
 * and the relay's `--ban-*` settings (`--opt VALUE` or `--opt=VALUE`). Taken only in front,
 * because stone ends its -x/-s/-B lists at any token starting with `--`; the first token that
 * is none of them starts stone's arguments. Throws UsageError for a bad value, a missing value,
 * or `--ban-*` settings without `--ban-home`.
 */
export function ownOptions(args: readonly string[]): OwnOptions {
  let at = 0;
  let json = false;
  let home: string | undefined;
  const flags: BanFlags & { banIgnore: string[] } = { banIgnore: [] };
  const given: string[] = [];
  for (;;) {
    const token = args[at];
    if (token === '--json') {
      json = true;
      at++;
      continue;
    }
    if (token === undefined || !token.startsWith('--ban-')) break;
    const eq = token.indexOf('=');
    const name = eq < 0 ? token : token.slice(0, eq);
    if (name !== '--ban-home' && name !== '--ban-ignore' && !(name in BAN_VALUE_OPTIONS)) {
      throw new UsageError(`${name}: unknown option (warpstone stone takes --json, --ban-home, --ban-maxretry, --ban-findtime, --ban-time, --ban-increment, --ban-maxtime, --ban-ignore, --ban-prefix-v4, --ban-prefix-v6 before stone's own arguments)`);
    }
    const value = eq < 0 ? args[at + 1] : token.slice(eq + 1);
    if (value === undefined || value === '') throw new UsageError(`${name} needs a value`);
    at += eq < 0 ? 2 : 1;
    if (name === '--ban-home') home = value;
    else if (name === '--ban-ignore') flags.banIgnore.push(value);
    else flags[BAN_VALUE_OPTIONS[name as keyof typeof BAN_VALUE_OPTIONS]] = value;
    if (name !== '--ban-home') given.push(name);
  }
  if (home === undefined && given.length > 0) {
    throw new UsageError(`${given[0]} needs --ban-home DIR (the warpstone home whose store keeps the bans)`);
  }
  const settings = home === undefined ? undefined : banSettingsFromFlags(flags);
  return { json, stoneArgs: args.slice(at), ...(home !== undefined && settings !== undefined ? { bans: { home, settings } } : {}) };
}

export async function runStone(allArgs: readonly string[]): Promise<number> {
  let own: OwnOptions;
  try {
    own = ownOptions(allArgs);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${NAME}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const { json, bans, stoneArgs: args } = own;
  let parsed;
  try {
    parsed = parseStoneArguments(args, stoneEnvironment());
  } catch (err) {
    if (err instanceof StoneGrammarError) {
      process.stderr.write(`${NAME}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === 'help') {
    process.stderr.write(
      `${NAME}: a stone 2.4 compatible repeater. Usage: warpstone stone <opt>... <stone> [-- <stone>]...\n` +
        `  <stone>: host:port sport [xhost...] (relays between TCP, UDP and UNIX sockets, /ssl, /http, /base, /proxy, proxy, health, identd, -b, -B; see 'stone -h ${parsed.topic ?? ''}' for the full grammar)\n` +
        `  warpstone's own options, before stone's: --json (JSON log lines); --ban-home DIR (ban sources the xhost lists keep refusing, as the relay does; bans kept in DIR's store)\n` +
        `    with --ban-maxretry N --ban-findtime D --ban-time D --ban-increment F --ban-maxtime D --ban-ignore CIDR --ban-prefix-v4 BITS --ban-prefix-v6 BITS\n`,
    );
    return 1;
  }
  const program = parsed.program;
  for (const w of program.warnings) process.stderr.write(`${NAME}: warning: ${w.message} ('${w.token}')\n`);
  let running;
  try {
    running = await startStones(program, {
      json,
      warn: (message) => process.stderr.write(`${NAME}: warning: ${message}\n`),
      ...(bans ? { admission: (log) => startStoneBans(bans.home, bans.settings, log) } : {}),
    });
  } catch (err) {
    if (err instanceof StoneUnsupportedError) {
      process.stderr.write(`${NAME}: ${err.message}\n`);
      return 2;
    }
    if (err instanceof WarpstoneError) {
      process.stderr.write(`${NAME}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (program.globals.dryRun) {
    await running.close();
    return 0;
  }
  const stones = running;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      void stones.close({ signal: true }).finally(() => resolve(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

export function register(program: Command): void {
  program
    .command('stone')
    .description("a stone 2.4 compatible repeater: warpstone stone [--json] [--ban-home DIR [--ban-maxretry N ...]] [options] <stone> [-- <stone>]... ('warpstone stone -h' for stone's help)")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]', "stone's options and stones, passed through untouched")
    .action(async (args: string[], _options: unknown, command: Command) => {
      const code = await runStone(rawStoneArguments(command, args));
      process.exit(code);
    });
}
