// Test harness: temporary homes, real `warpstone` processes on loopback, small real services.
// Every helper cleans up after itself through `t.after`-style disposers collected in a Cleanup.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { runInit } from '../../src/cli/init.ts';
import { runIssue } from '../../src/cli/issue.ts';
import { runGrant } from '../../src/cli/grant.ts';
import { issueCertificate, type Role } from '../../src/pki/ca.ts';
import { loadCa, withStore } from '../../src/cli/shared.ts';
import { freePort } from '../../src/common/ports.ts';
export { freePort };

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(ROOT, 'bin', 'warpstone.js');

export class Cleanup {
  private readonly tasks: Array<() => unknown> = [];
  add(task: () => unknown): void {
    this.tasks.push(task);
  }
  async run(): Promise<void> {
    for (const task of this.tasks.reverse()) {
      try {
        await task();
      } catch {
        // best effort
      }
    }
    this.tasks.length = 0;
  }
}

export function tempDir(cleanup: Cleanup, prefix = 'ws-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Home {
  dir: string;
  env: NodeJS.ProcessEnv;
  caPem: string;
  /** issue an identity file in the home dir and return its path */
  issue(role: 'user' | 'agent', name: string): Promise<string>;
  grant(user: string, tunnel: string): Promise<void>;
  /** an identity with an explicit validity window, recorded in the store */
  issueRaw(role: Role, name: string, window: { notBefore?: Date; notAfter?: Date }): Promise<string>;
}

export async function makeHome(cleanup: Cleanup): Promise<Home> {
  const dir = tempDir(cleanup, 'ws-home-');
  await runInit(dir, []);
  const env = { ...process.env, WARPSTONE_HOME: dir, WARPSTONE_FROM_SOURCE: '1', WARPSTONE_LOG_LEVEL: 'debug' };
  const caPem = loadCa(dir).certPem;
  return {
    dir,
    env,
    caPem,
    issue: async (role, name) => {
      const out = join(dir, `${name}.pem`);
      await runIssue(dir, role, name, out, 30);
      return out;
    },
    grant: async (user, tunnel) => {
      await runGrant(dir, user, tunnel, true);
    },
    issueRaw: async (role, name, window) => {
      const ca = loadCa(dir);
      const issued = await issueCertificate(ca, { name, role, days: 30, ...window });
      const out = join(dir, `${name}.pem`);
      writeFileSync(out, issued.keyPem + issued.certPem + ca.certPem, { mode: 0o600 });
      await withStore(dir, (store) =>
        store.addCertificate({ serial: issued.serial, name, role, notBefore: issued.notBefore, notAfter: issued.notAfter, issuedAt: new Date() }),
      );
      return out;
    },
  };
}

export interface Proc {
  child: ChildProcess;
  /** everything the process printed so far (stdout + stderr) */
  output(): string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** resolves with the exit code (or signal name) */
  exited: Promise<number | string>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export function startWarpstone(cleanup: Cleanup, args: string[], env: NodeJS.ProcessEnv, options: { stdin?: 'pipe' | 'ignore' } = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
  return wrapProcess(cleanup, child);
}

export function startProgram(cleanup: Cleanup, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const child = spawn(command, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  return wrapProcess(cleanup, child);
}

function wrapProcess(cleanup: Cleanup, child: ChildProcess): Proc {
  let text = '';
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer): void => {
    text += d.toString();
    for (const w of waiters.splice(0)) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  let exitedWith: number | string | undefined;
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      exitedWith = code ?? signal ?? -1;
      resolve(exitedWith);
      for (const w of waiters.splice(0)) w();
    }),
  );
  cleanup.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const proc: Proc = {
    child,
    output: () => text,
    waitFor: (pattern, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(pattern)}; output so far:\n${text.slice(-3000)}`)), timeoutMs);
        const check = (): void => {
          const m = pattern.exec(text);
          if (m) {
            clearTimeout(timer);
            resolve(m[0]);
            return;
          }
          if (exitedWith !== undefined) {
            clearTimeout(timer);
            reject(new Error(`process exited (${String(exitedWith)}) before ${String(pattern)}; output:\n${text.slice(-3000)}`));
            return;
          }
          waiters.push(check);
        };
        check();
      }),
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  return proc;
}

export async function runWarpstone(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input ?? '');
  const code = await new Promise<number>((resolve) => child.once('close', (c) => resolve(c ?? -1)));
  return { code, stdout, stderr };
}


/** An echo service: every byte comes back; half-close is honoured (allowHalfOpen). */
export async function echoServer(cleanup: Cleanup, host = '127.0.0.1'): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Sends `payload`, half-closes, collects everything until the far end closes. */
export function exchange(port: number, payload: Buffer, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks));
    });
    socket.on('error', reject);
    socket.end(payload);
  });
}

export interface Cluster {
  home: Home;
  relayPort: number;
  relay: Proc;
  agent: Proc;
  agentIdentity: string;
  userIdentity: string;
  servicePort: number;
}

/**
 * Relay + agent exposing an echo service as `tunnel`, and a user granted it. `relayArgs` go on
 * the relay's command line (e.g. `--no-ban` for tests that fail on purpose many times from
 * 127.0.0.1, which the relay would otherwise ban).
 */
export async function startCluster(
  cleanup: Cleanup,
  options: { tunnel?: string; user?: string; agent?: string; relayHost?: string; relayArgs?: string[] } = {},
): Promise<Cluster> {
  const tunnel = options.tunnel ?? 'echo';
  const home = await makeHome(cleanup);
  const agentIdentity = await home.issue('agent', options.agent ?? 'box');
  const userIdentity = await home.issue('user', options.user ?? 'alice');
  await home.grant(options.user ?? 'alice', tunnel);
  const relayHost = options.relayHost ?? '127.0.0.1';
  const relayPort = await freePort(relayHost);
  const servicePort = await echoServer(cleanup);
  const listen = relayHost.includes(':') ? `[${relayHost}]:${relayPort}` : `${relayHost}:${relayPort}`;
  const relay = startWarpstone(cleanup, ['relay', '--listen', listen, ...(options.relayArgs ?? [])], home.env);
  await relay.waitFor(/relay listening/);
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentIdentity, '--relay', listen, '--expose', `${tunnel}=127.0.0.1:${servicePort}`], home.env);
  await agent.waitFor(/tunnel registered/);
  return { home, relayPort, relay, agent, agentIdentity, userIdentity, servicePort };
}

/** Starts `warpstone connect --listen 127.0.0.1:0` and returns the local port it bound. */
export async function startConnect(cleanup: Cleanup, cluster: Cluster, target: string, identity = cluster.userIdentity, relay = `127.0.0.1:${cluster.relayPort}`): Promise<{ proc: Proc; port: number }> {
  const proc = startWarpstone(cleanup, ['connect', target, '--identity', identity, '--relay', relay, '--listen', '127.0.0.1:0'], cluster.home.env);
  const line = await proc.waitFor(/listening on [^\s]+:\d+/);
  return { proc, port: Number(line.split(':').pop()) };
}
