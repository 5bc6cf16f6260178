// Real third-party clients of the relay's VPN-Warp text mode: Debian's `stone`, `openssl
// s_client` and `curl`. Each runs as a child process whose stdout is kept as bytes and whose
// stderr (where stone and s_client log) as text; every process is killed by the Cleanup.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { Cleanup } from './harness.ts';

/** Fails with a readable message when a program the compat tests drive is not installed. */
export function requireProgram(name: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (found.status !== 0) {
    throw new Error(`'${name}' is not installed; the compatibility tests drive the real program (apt-get install ${name}; .ci/run installs it)`);
  }
}

export interface Program {
  child: ChildProcess;
  stdout(): Buffer;
  stderr(): string;
  /** resolves with the exit code (or signal name) */
  exited: Promise<number | string>;
  hasExited(): boolean;
  /** waits until `test` holds for stdout/stderr, or fails with both in the message */
  waitUntil(test: (stdout: Buffer, stderr: string) => boolean, what: string, timeoutMs?: number): Promise<void>;
  kill(): Promise<number | string>;
}

export function spawnProgram(cleanup: Cleanup, command: string, args: string[], options: { cwd?: string } = {}): Program {
  const child = spawn(command, args, { cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let outLength = 0;
  let err = '';
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout?.on('data', (d: Buffer) => {
    out.push(d);
    outLength += d.length;
    wake();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
    wake();
  });
  child.stdin?.on('error', () => undefined);
  let exitedWith: number | string | undefined;
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (e) => {
      err += `\n[spawn error: ${e.message}]`;
      exitedWith = -1;
      resolve(-1);
      wake();
    });
    child.once('close', (code, signal) => {
      exitedWith = code ?? signal ?? -1;
      resolve(exitedWith);
      wake();
    });
  });
  const kill = async (): Promise<number | string> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  };
  cleanup.add(kill);
  const stdout = (): Buffer => (out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out, outLength));
  return {
    child,
    stdout,
    stderr: () => err,
    exited,
    hasExited: () => exitedWith !== undefined,
    waitUntil: (test, what, timeoutMs = 10_000) =>
      new Promise<void>((resolve, reject) => {
        const describe = (): string =>
          `${command} ${what}; exit=${String(exitedWith)}\nstdout: ${JSON.stringify(stdout().toString('latin1').slice(-1500))}\nstderr: ${err.slice(-3000)}`;
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting: ${describe()}`));
        }, timeoutMs);
        function check(): void {
          if (test(stdout(), err)) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve();
          } else if (exitedWith !== undefined) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new Error(`exited before: ${describe()}`));
          }
        }
        waiters.add(check);
        check();
      }),
    kill,
  };
}

/**
 * Starts Debian's stone with `args` (its last stone definition must listen on `localPort`) and
 * resolves once stone has logged its `dst <- src` line, which it prints right after listen(2).
 */
export async function startStone(cleanup: Cleanup, args: string[], localPort: number, cwd?: string): Promise<Program> {
  const stone = spawnProgram(cleanup, 'stone', args, { cwd });
  await stone.waitUntil((_out, err) => new RegExp(`<- [^\\s]*:${localPort}\\b`).test(err), `listening on port ${localPort}`);
  return stone;
}

export interface Conversation {
  socket: net.Socket;
  /** everything received so far */
  received(): Buffer;
  /** waits until at least `n` bytes arrived */
  waitForBytes(n: number, timeoutMs?: number): Promise<Buffer>;
  /** resolves with everything received once the far end ended (or closed) the connection */
  ended: Promise<Buffer>;
}

/** A plain TCP client kept open (no half-close until the test says so). */
export function converse(port: number, host = '127.0.0.1'): Promise<Conversation> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let length = 0;
    const waiters = new Set<() => void>();
    const wake = (): void => {
      for (const w of [...waiters]) w();
    };
    const received = (): Buffer => Buffer.concat(chunks, length);
    let finished = false;
    const ended = new Promise<Buffer>((done, fail) => {
      socket.on('end', () => {
        finished = true;
        done(received());
        wake();
      });
      socket.on('close', () => {
        finished = true;
        done(received());
        wake();
      });
      socket.on('error', (err) => {
        finished = true;
        fail(err);
        wake();
      });
    });
    ended.catch(() => undefined);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      length += c.length;
      wake();
    });
    socket.once('connect', () =>
      resolve({
        socket,
        received,
        ended,
        waitForBytes: (n, timeoutMs = 10_000) =>
          new Promise<Buffer>((ok, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`timed out waiting for ${n} bytes; got ${length}`));
            }, timeoutMs);
            function check(): void {
              if (length >= n) {
                clearTimeout(timer);
                waiters.delete(check);
                ok(received());
              } else if (finished) {
                clearTimeout(timer);
                waiters.delete(check);
                fail(new Error(`connection ended after ${length} of ${n} bytes: ${JSON.stringify(received().subarray(0, 200).toString('latin1'))}`));
              }
            }
            waiters.add(check);
            check();
          }),
      }),
    );
    socket.once('error', reject);
  });
}

/** Resolves with the value of `promise`, or rejects after `ms` with `what` in the message. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface RunResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (with a time limit) and returns its exit code and output. */
export async function runProgram(cleanup: Cleanup, command: string, args: string[], timeoutMs = 20_000): Promise<RunResult> {
  const program = spawnProgram(cleanup, command, args);
  program.child.stdin?.end();
  const timer = setTimeout(() => void program.kill(), timeoutMs);
  const code = await program.exited;
  clearTimeout(timer);
  return { code, stdout: program.stdout().toString(), stderr: program.stderr() };
}
