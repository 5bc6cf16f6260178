// Child processes of the benchmark: every program the bench starts goes through `Procs`, which
// raises the descriptor limit (bash `ulimit -n`), sends its output to a log file in the bench's
// temporary directory, waits for it to be ready and stops all of them at the end, even after a
// failure. Also: free ports and "is this port listening" without connecting to it.
// Owns: spawning, readiness, shutdown. Must not: know what the programs are for.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../src/common/ports.ts';
export { freePort };

export interface Started {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** the command line as a user would type it (for the report) */
  display: string;
}

const ULIMIT = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class Procs {
  private readonly started: Started[] = [];

  constructor(private readonly logDir: string) {}

  /** Starts `command args...` under a raised descriptor limit; output goes to <logDir>/<name>.log. */
  start(name: string, command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; display?: string } = {}): Started {
    const logFile = join(this.logDir, `${name}.log`);
    const fd = openSync(logFile, 'a');
    const child = spawn('bash', ['-c', ULIMIT, 'bench-ulimit', command, ...args], {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    if (child.pid === undefined) throw new Error(`could not start ${name} (${command})`);
    child.on('error', () => undefined);
    const started: Started = { name, pid: child.pid, child, logFile, display: options.display ?? [command, ...args].join(' ') };
    this.started.push(started);
    return started;
  }

  log(p: Started): string {
    try {
      return readFileSync(p.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Resolves with the first match of `pattern` in the process's log; rejects on exit or timeout. */
  async waitForLog(p: Started, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.log(p));
      if (m) return m;
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        throw new Error(`${p.name} exited before ${String(pattern)}:\n${this.log(p).slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error(`${p.name}: timed out waiting for ${String(pattern)}:\n${this.log(p).slice(-2000)}`);
      await sleep(50);
    }
  }

  /** Waits until something listens on 127.0.0.1:port (read from /proc/net/tcp: no test connection). */
  async waitListening(p: Started, port: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!isListening(port)) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        throw new Error(`${p.name} exited before listening on ${port}:\n${this.log(p).slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error(`${p.name}: nothing listens on 127.0.0.1:${port}:\n${this.log(p).slice(-2000)}`);
      await sleep(50);
    }
  }

  /** SIGTERM to every process still running, SIGKILL after a grace period. Never throws. */
  async stopAll(graceMs = 1_500): Promise<void> {
    const running = this.started.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    const exited = running.map((p) => new Promise<void>((resolve) => p.child.once('exit', () => resolve())));
    for (const p of running) signal(p.pid, 'SIGTERM');
    await Promise.race([Promise.all(exited), sleep(graceMs)]);
    for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) signal(p.pid, 'SIGKILL');
    await Promise.race([Promise.all(exited), sleep(500)]);
    this.started.length = 0;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** True if a TCP socket on 127.0.0.1:port (or 0.0.0.0:port) is in LISTEN state. */
export function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const text = readFileSync('/proc/net/tcp', 'utf8');
  return text.split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return (f[1] === `0100007F:${hex}` || f[1] === `00000000:${hex}`) && f[3] === '0A';
  });
}


/** Runs a command to its end; resolves with its exit code and output, killing it after `timeoutMs`. */
export function runToEnd(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (err) => (stderr += err.message));
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}
