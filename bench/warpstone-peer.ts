// The path under test: a temporary home (CA, relay certificate, store), one agent identity, one
// user granted two tunnels, then `warpstone relay`, `warpstone agent` (exposing the iperf3 and
// echo services) and one `warpstone connect --listen` per tunnel, all as real processes of the
// CLI (`node bin/warpstone.js`, which runs dist/ once built).
// Owns: the warpstone processes. Must not: measure.
import { join } from 'node:path';
import type { Procs, Started } from './procs.ts';
import { freePort, runToEnd } from './procs.ts';
import type { Peer } from './peer.ts';
import type { Watched } from './procfs.ts';
import type { Services } from './services.ts';

export interface WarpstonePeer extends Peer {
  relay: Started;
}

function cliEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, WARPSTONE_HOME: home, WARPSTONE_LOG_LEVEL: 'info' };
  delete env.WARPSTONE_FROM_SOURCE;
  return env;
}

async function setupHome(root: string, env: NodeJS.ProcessEnv, dir: string): Promise<{ agentId: string; userId: string }> {
  const bin = join(root, 'bin', 'warpstone.js');
  const agentId = join(dir, 'box.pem');
  const userId = join(dir, 'alice.pem');
  const steps = [
    ['init', '--relay-host', '127.0.0.1'],
    ['issue', 'agent', 'box', '--out', agentId],
    ['issue', 'user', 'alice', '--out', userId],
    ['grant', 'alice', 'iperf'],
    ['grant', 'alice', 'echo'],
  ];
  for (const args of steps) {
    const r = await runToEnd(process.execPath, [bin, ...args], { env, cwd: root, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`warpstone ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  }
  return { agentId, userId };
}

async function startConnect(procs: Procs, root: string, env: NodeJS.ProcessEnv, tunnel: string, userId: string, relay: string): Promise<{ proc: Started; port: number }> {
  const bin = join(root, 'bin', 'warpstone.js');
  const args = ['connect', tunnel, '--identity', userId, '--relay', relay, '--listen', '127.0.0.1:0'];
  const proc = procs.start(`warpstone-connect-${tunnel}`, process.execPath, [bin, ...args], { env, cwd: root });
  const m = await procs.waitForLog(proc, /listening on [^\s]*:(\d+)/);
  return { proc, port: Number(m[1]) };
}

function path(connect: number, relay: number, agent: number): Watched[] {
  return [
    { name: 'warpstone connect', pid: connect, tree: false },
    { name: 'warpstone relay', pid: relay, tree: false },
    { name: 'warpstone agent', pid: agent, tree: false },
  ];
}

export async function startWarpstone(procs: Procs, root: string, dir: string, services: Services): Promise<WarpstonePeer> {
  const home = join(dir, 'warpstone-home');
  const env = cliEnv(home);
  const bin = join(root, 'bin', 'warpstone.js');
  const { agentId, userId } = await setupHome(root, env, dir);
  const relayPort = await freePort();
  const relayAddr = `127.0.0.1:${relayPort}`;
  const relay = procs.start('warpstone-relay', process.execPath, [bin, 'relay', '--listen', relayAddr], { env, cwd: root });
  await procs.waitForLog(relay, /relay listening/);
  const exposes = ['--expose', `iperf=127.0.0.1:${services.iperfPort}`, '--expose', `echo=127.0.0.1:${services.echoPort}`];
  const agent = procs.start('warpstone-agent', process.execPath, [bin, 'agent', '--identity', agentId, '--relay', relayAddr, ...exposes], { env, cwd: root });
  await procs.waitForLog(agent, /tunnel registered[\s\S]*tunnel registered/);
  const iperf = await startConnect(procs, root, env, 'iperf', userId, relayAddr);
  const echo = await startConnect(procs, root, env, 'echo', userId, relayAddr);
  return {
    key: 'warpstone',
    label: 'warpstone (connect → relay → agent)',
    iperfPort: iperf.port,
    echoPort: echo.port,
    relay,
    commands: [
      'warpstone init --relay-host 127.0.0.1; warpstone issue agent box --out box.pem; warpstone issue user alice --out alice.pem',
      'warpstone grant alice iperf; warpstone grant alice echo',
      'warpstone relay --listen 127.0.0.1:RELAY',
      'warpstone agent --identity box.pem --relay 127.0.0.1:RELAY --expose iperf=127.0.0.1:IPERF --expose echo=127.0.0.1:ECHO',
      'warpstone connect iperf --identity alice.pem --relay 127.0.0.1:RELAY --listen 127.0.0.1:0',
      'warpstone connect echo --identity alice.pem --relay 127.0.0.1:RELAY --listen 127.0.0.1:0',
    ],
    watched: {
      iperf: path(iperf.proc.pid, relay.pid, agent.pid),
      echo: path(echo.proc.pid, relay.pid, agent.pid),
    },
    middle: { name: 'warpstone relay', pid: relay.pid, tree: false },
  };
}
