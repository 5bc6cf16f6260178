// Facts about the machine and the tools, recorded with every run so figures can be compared:
// cores, CPU model, memory, kernel, Node and tool versions, load average when the run started,
// and the commit measured. Also the check that the Debian tools the bench needs are installed.
// Owns: gathering facts. Must not: measure performance.
import os from 'node:os';
import { existsSync } from 'node:fs';
import { runToEnd } from './procs.ts';

export interface MachineFacts {
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  loadAtStart: string;
  tools: Record<string, string>;
  commit: string;
}

/** Debian package for each program the bench runs. */
export const NEEDED: Record<string, string> = {
  iperf3: 'iperf3',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  '/usr/sbin/sshd': 'openssh-server',
  stone: 'stone',
};

async function which(program: string): Promise<boolean> {
  if (program.startsWith('/')) return existsSync(program);
  return (await runToEnd('bash', ['-c', `command -v ${program}`])).code === 0;
}

/** Throws naming the Debian packages to install when a needed program is missing. */
export async function checkTools(): Promise<void> {
  const missing: string[] = [];
  for (const [program, pkg] of Object.entries(NEEDED)) if (!(await which(program))) missing.push(pkg);
  if (missing.length > 0) throw new Error(`missing programs; install them with: apt-get install -y ${[...new Set(missing)].join(' ')}`);
}

async function firstLine(command: string, args: string[], pattern: RegExp): Promise<string> {
  const r = await runToEnd(command, args, { timeoutMs: 5_000 });
  const m = pattern.exec(`${r.stdout}\n${r.stderr}`);
  return m ? m[0].trim() : 'unknown';
}

async function commitOf(root: string): Promise<string> {
  const head = await runToEnd('git', ['-C', root, 'rev-parse', '--short', 'HEAD']);
  if (head.code !== 0) return 'unknown (not a git checkout)';
  const dirty = await runToEnd('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no', '--', 'src']);
  return `${head.stdout.trim()}${dirty.stdout.trim() ? ' + uncommitted changes in src/' : ''}`;
}

export async function machineFacts(root: string): Promise<MachineFacts> {
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAtStart: os.loadavg().map((l) => l.toFixed(2)).join(' '),
    tools: {
      iperf3: await firstLine('iperf3', ['--version'], /iperf \S+/),
      ssh: await firstLine('ssh', ['-V'], /OpenSSH_\S+/),
      stone: await firstLine('stone', ['-h'], /stone \d\S*/),
      openssl: await firstLine('openssl', ['version'], /OpenSSL \S+/),
    },
    commit: await commitOf(root),
  };
}
