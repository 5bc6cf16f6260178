// `warpstone demo`: on a fresh machine, with no arguments, shows the whole path working on
// loopback: a temporary home, a relay, an agent and a small echo service, then bytes sent
// through `warpstone connect` and checked on the way back. Every command it runs is printed,
// so the demo doubles as a transcript of the quickstart. Everything stops cleanly at the end.
import type { Command } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { WarpstoneError } from '../common/errors.js';
import { freePort } from '../common/ports.js';

const out = (line: string): void => void process.stdout.write(line + '\n');

function cliArgs(): { exec: string; pre: string[] } {
  // Re-run this same program (compiled or through tsx) for each command.
  return { exec: process.execPath, pre: [...process.execArgv, process.argv[1] as string] };
}

function show(args: string[]): void {
  out(`$ warpstone ${args.map((a) => (/[\s*]/.test(a) ? `'${a}'` : a)).join(' ')}`);
}

async function runToEnd(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  show(args);
  const { exec, pre } = cliArgs();
  const child = spawn(exec, [...pre, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0) throw new WarpstoneError('WS_DEMO', `'warpstone ${args.join(' ')}' failed (${String(code)}): ${stderr.trim()}`);
  for (const line of stdout.trim().split('\n')) out(`  ${line}`);
  return stdout;
}

/** Starts a long-running command and resolves once its log shows `ready`. */
async function startUntil(args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs = 20_000): Promise<ChildProcess> {
  show([...args, '&']);
  const { exec, pre } = cliArgs();
  const child = spawn(exec, [...pre, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let seen = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new WarpstoneError('WS_DEMO', `'warpstone ${args[0]}' did not become ready: ${seen.slice(-500)}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      seen += d.toString();
      if (ready.test(seen)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new WarpstoneError('WS_DEMO', `'warpstone ${args[0]}' exited early (${String(code)}): ${seen.slice(-500)}`));
    });
  });
  return child;
}

async function stopChild(child: ChildProcess, name: string): Promise<void> {
  if (child.exitCode !== null) return;
  const code = await new Promise<number | null>((resolve) => {
    child.removeAllListeners('exit');
    child.once('exit', (c) => resolve(c));
    child.kill('SIGTERM');
  });
  out(`  ${name} stopped (exit ${String(code)})`);
}


/** The sample service: answers each line with "echo: <line>". */
function startEchoService(): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function roundTrip(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.end(payload);
  });
}

export async function runDemo(): Promise<void> {
  const home = mkdtempSync(join(tmpdir(), 'warpstone-demo-'));
  const env = { ...process.env, WARPSTONE_HOME: home, WARPSTONE_LOG_LEVEL: 'info' };
  const children: Array<[ChildProcess, string]> = [];
  const echo = await startEchoService();
  const echoPort = (echo.address() as net.AddressInfo).port;
  try {
    out(`warpstone demo: everything runs on loopback in ${home}\n`);
    out(`a sample service (echo) listens on 127.0.0.1:${echoPort}; it stands for the private host's web server or share.\n`);
    await runToEnd(['init'], env);
    await runToEnd(['issue', 'agent', 'homebox', '--out', join(home, 'homebox.pem')], env);
    await runToEnd(['issue', 'user', 'alice', '--out', join(home, 'alice.pem')], env);
    await runToEnd(['grant', 'alice', 'echo'], env);
    const relayPort = await freePort();
    const relay = await startUntil(['relay', '--listen', `127.0.0.1:${relayPort}`], env, /relay listening/);
    children.push([relay, 'relay']);
    const agent = await startUntil(
      ['agent', '--identity', join(home, 'homebox.pem'), '--relay', `127.0.0.1:${relayPort}`, '--expose', `echo=127.0.0.1:${echoPort}`],
      env,
      /tunnel registered/,
    );
    children.push([agent, 'agent']);
    const localPort = await freePort();
    const connect = await startUntil(
      ['connect', 'echo', '--identity', join(home, 'alice.pem'), '--relay', `127.0.0.1:${relayPort}`, '--listen', `127.0.0.1:${localPort}`],
      env,
      /forwarding local connections/,
    );
    children.push([connect, 'connect']);
    const payload = Buffer.concat([Buffer.from('hello through the relay\n'), randomBytes(1 << 20)]);
    out(`\nsending ${payload.length} bytes to 127.0.0.1:${localPort} (client -> relay -> agent -> echo service and back)`);
    const started = process.hrtime.bigint();
    const echoed = await roundTrip(localPort, payload);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    out(`  sent     ${payload.length} bytes, sha256 ${sha(payload).slice(0, 16)}...`);
    out(`  received ${echoed.length} bytes, sha256 ${sha(echoed).slice(0, 16)}... in ${ms.toFixed(1)} ms`);
    out(`  first line back: ${JSON.stringify(echoed.subarray(0, 24).toString())}`);
    if (!echoed.equals(payload)) throw new WarpstoneError('WS_DEMO', 'the bytes that came back differ from those sent');
    out('  round trip byte-exact: yes\n');
    await runToEnd(['status'], env);
    out('\nstopping');
    for (const [child, name] of children.reverse()) await stopChild(child, name);
    children.length = 0;
    out('demo finished: relay, agent and client stopped cleanly.');
  } finally {
    for (const [child] of children) child.kill('SIGKILL');
    echo.close();
    rmSync(home, { recursive: true, force: true });
  }
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('run a relay, an agent and a sample service on loopback and send bytes through the tunnel')
    .action(async () => {
      await runDemo();
    });
}
