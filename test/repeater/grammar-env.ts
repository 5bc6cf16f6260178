// Test helpers for the stone grammar: a GrammarEnvironment backed by a map of -C files, the
// real file system for directories, and /etc/services for service names; and a runner for
// Debian's stone in configuration-check mode (-N).
import { statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { StoneGrammarError } from '../../src/repeater/tokens.ts';
import { parseStoneArguments, type ConfigFileRequest, type GrammarEnvironment } from '../../src/repeater/grammar.ts';
import type { StoneProgram, StoneCommandLine } from '../../src/repeater/types.ts';
import { lookupService } from '../../src/repeater/services.ts';

export { lookupService };

export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}


export interface TestEnvironment extends GrammarEnvironment {
  readonly requests: ConfigFileRequest[];
}

/** -C files come from `files` (path → text); reading any other path throws ENOENT. */
export function testEnvironment(files: Record<string, string> = {}, env: Record<string, string | undefined> = {}): TestEnvironment {
  const requests: ConfigFileRequest[] = [];
  return {
    env,
    requests,
    readConfigFile(request) {
      requests.push(request);
      const text = Object.hasOwn(files, request.path) ? files[request.path] : undefined;
      if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${request.path}'`);
      return text;
    },
    isDirectory,
    lookupService,
  };
}

export function parseProgram(args: string[], environment: GrammarEnvironment = testEnvironment()): StoneProgram {
  const result = parseStoneArguments(args, environment);
  if (result.kind !== 'program') throw new Error(`expected a program, got ${JSON.stringify(result)}`);
  return result.program;
}

export function parseError(args: string[], environment: GrammarEnvironment = testEnvironment()): StoneGrammarError {
  let result: StoneCommandLine;
  try {
    result = parseStoneArguments(args, environment);
  } catch (err) {
    if (err instanceof StoneGrammarError) return err;
    throw err;
  }
  throw new Error(`expected a StoneGrammarError for ${JSON.stringify(args)}, got ${JSON.stringify(result).slice(0, 300)}`);
}

export function stoneInstalled(): boolean {
  return spawnSync('sh', ['-c', 'command -v stone'], { encoding: 'utf8' }).status === 0;
}

export interface StoneRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs Debian's stone with these arguments (add -N yourself) in `cwd`. */
export function runStone(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): StoneRun {
  const run = spawnSync('stone', args, {
    cwd: options.cwd,
    env: options.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    encoding: 'latin1',
    timeout: 20_000,
  });
  return { status: run.status, signal: run.signal, stderr: run.stderr ?? '' };
}
