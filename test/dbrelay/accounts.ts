// Accounts for the database relay's tests: throw-away UNIX users (useradd -M, removed by the
// Cleanup), matching MariaDB and PostgreSQL users on the local servers, and running a program
// as one of those UNIX users (setpriv, no supplementary groups).
// Owns: test accounts. Must not: be imported by anything under src/.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Cleanup } from '../helpers/harness.ts';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

export interface UnixUser {
  name: string;
  uid: number;
  gid: number;
}

/** A fresh UNIX user `ws_<tag>_<random>` (≤ 32 characters), deleted at cleanup. */
export function createUnixUser(cleanup: Cleanup, tag: string): UnixUser {
  const name = `ws_${tag}_${randomBytes(3).toString('hex')}`.slice(0, 32);
  execFileSync('useradd', ['-M', '-N', '-g', 'nogroup', '-s', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  cleanup.add(() => execFileSync('userdel', [name], { stdio: 'pipe' }));
  const fields = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
}

export interface Ran {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs `command` as `user` (setpriv, no groups, HOME=/tmp) to completion, with a time limit. */
export function runAs(user: UnixUser | 'root', command: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Ran> {
  const argv = user === 'root' ? [command, ...args] : ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', command, ...args];
  return new Promise((resolve) => {
    const child = spawn(argv[0] as string, argv.slice(1), { env: { ...process.env, HOME: '/tmp', ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}\n[spawn error: ${err.message}]` });
    });
  });
}

/** MariaDB as root over TCP (`-h localhost` would silently use the socket). */
export function mariadbRoot(sql: string): string {
  return execFileSync('mariadb', ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', '3306', '-u', 'root', '-N', '-B', '-e', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** psql as postgres (trust on 127.0.0.1). */
export function psqlAdmin(sql: string): string {
  return execFileSync('psql', ['-X', '-w', '-q', '-t', '-A', 'host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable', '-c', sql], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A MariaDB user 'name'@'127.0.0.1' with a password, dropped at cleanup. */
export function createMariadbUser(cleanup: Cleanup, name: string, password: string): void {
  mariadbRoot(`CREATE USER '${name}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  cleanup.add(() => mariadbRoot(`DROP USER IF EXISTS '${name}'@'127.0.0.1'`));
}

/** A PostgreSQL login role (the server trusts 127.0.0.1, so the password is not checked there). */
export function createPostgresUser(cleanup: Cleanup, name: string, password: string): void {
  psqlAdmin(`CREATE ROLE "${name}" LOGIN PASSWORD '${password}'`);
  cleanup.add(() => psqlAdmin(`DROP ROLE IF EXISTS "${name}"`));
}
