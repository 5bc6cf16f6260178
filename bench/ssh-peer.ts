// The chain a user builds without warpstone: the private host runs `ssh -R` to a public sshd,
// the user runs `ssh -L` to the same sshd, and the two forwards meet on the sshd host's
// loopback. Here the "public sshd" is our own sshd on a loopback port with a temporary host
// key, config and authorized key; the system's sshd and its config are never touched.
// Owns: the sshd and the two ssh clients. Must not: measure.
import { existsSync, mkdirSync, rmdirSync, readdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import type { Procs, Started } from './procs.ts';
import { freePort, runToEnd } from './procs.ts';
import type { Peer } from './peer.ts';
import type { Services } from './services.ts';

const PRIVSEP_DIR = '/run/sshd';

export interface SshPeer extends Peer {
  sshd: Started;
}

async function keygen(file: string): Promise<void> {
  const r = await runToEnd('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
}

function sshdConfig(dir: string, port: number): string {
  return [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(dir, 'host_ed25519')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'AllowTcpForwarding yes',
    'PrintMotd no',
    'MaxStartups 100:30:200',
    '',
  ].join('\n');
}

/** sshd refuses to start as root without its privilege-separation directory; make it if absent. */
function ensurePrivsepDir(onCleanup: (task: () => void) => void): void {
  if (process.getuid?.() !== 0 || existsSync(PRIVSEP_DIR)) return;
  mkdirSync(PRIVSEP_DIR, { mode: 0o755 });
  onCleanup(() => {
    if (existsSync(PRIVSEP_DIR) && readdirSync(PRIVSEP_DIR).length === 0) rmdirSync(PRIVSEP_DIR);
  });
}

function clientArgs(dir: string, sshdPort: number): string[] {
  return [
    '-F', '/dev/null',
    '-i', join(dir, 'user_ed25519'),
    '-p', String(sshdPort),
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'ExitOnForwardFailure=yes',
    '-o', 'LogLevel=ERROR',
    '-N',
  ];
}

export async function startSshChain(procs: Procs, baseDir: string, services: Services, onCleanup: (task: () => void) => void): Promise<SshPeer> {
  const dir = join(baseDir, 'ssh');
  mkdirSync(dir, { mode: 0o700 });
  await keygen(join(dir, 'host_ed25519'));
  await keygen(join(dir, 'user_ed25519'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'user_ed25519.pub'), 'utf8'));
  chmodSync(join(dir, 'authorized_keys'), 0o600);
  const sshdPort = await freePort();
  writeFileSync(join(dir, 'sshd_config'), sshdConfig(dir, sshdPort));
  ensurePrivsepDir(onCleanup);
  const sshd = procs.start('sshd', '/usr/sbin/sshd', ['-f', join(dir, 'sshd_config'), '-D', '-e', '-p', String(sshdPort)]);
  await procs.waitListening(sshd, sshdPort);

  const user = `${userInfo().username}@127.0.0.1`;
  const [rIperf, rEcho, lIperf, lEcho] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const remote = procs.start('ssh-R', 'ssh', [
    ...clientArgs(dir, sshdPort),
    '-R', `127.0.0.1:${rIperf}:127.0.0.1:${services.iperfPort}`,
    '-R', `127.0.0.1:${rEcho}:127.0.0.1:${services.echoPort}`,
    user,
  ]);
  await procs.waitListening(remote, rIperf);
  await procs.waitListening(remote, rEcho);
  const local = procs.start('ssh-L', 'ssh', [
    ...clientArgs(dir, sshdPort),
    '-L', `127.0.0.1:${lIperf}:127.0.0.1:${rIperf}`,
    '-L', `127.0.0.1:${lEcho}:127.0.0.1:${rEcho}`,
    user,
  ]);
  await procs.waitListening(local, lIperf);
  await procs.waitListening(local, lEcho);

  const common = clientArgs('.', 0).join(' ').replace(/-i \S+/, '-i user_key').replace('-p 0', '-p SSHD');
  const path = [
    { name: 'ssh -L (user)', pid: local.pid, tree: false },
    { name: 'sshd (all its processes)', pid: sshd.pid, tree: true },
    { name: 'ssh -R (private host)', pid: remote.pid, tree: false },
  ];
  return {
    key: 'ssh',
    label: 'ssh chain (ssh -L → sshd → ssh -R)',
    iperfPort: lIperf,
    echoPort: lEcho,
    sshd,
    commands: [
      `/usr/sbin/sshd -f sshd_config -D -e -p SSHD   # temporary host key, AuthorizedKeysFile, UsePAM no, StrictModes no`,
      `ssh ${common} -R 127.0.0.1:R1:127.0.0.1:IPERF -R 127.0.0.1:R2:127.0.0.1:ECHO ${userInfo().username}@127.0.0.1   # on the "private host"`,
      `ssh ${common} -L 127.0.0.1:L1:127.0.0.1:R1 -L 127.0.0.1:L2:127.0.0.1:R2 ${userInfo().username}@127.0.0.1   # on the user's machine`,
    ],
    watched: { iperf: path, echo: path },
    middle: { name: 'sshd (all its processes)', pid: sshd.pid, tree: true },
  };
}
