// Dropping root after the privileged work (binding ports below 1024, creating sockets) is done.
// Owns: the switch of uid/gid. Must not: bind or open anything itself.
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { UsageError, StateError, errorMessage } from './errors.js';

export interface Account {
  name: string;
  uid: number;
  gid: number;
}

/** Looks up `user[:group]` through getent, so NSS users (LDAP, sssd) work too. */
export function lookupAccount(spec: string): Account {
  const [user, group] = spec.split(':', 2) as [string, string | undefined];
  const passwd = getent('passwd', user);
  if (!passwd) throw new UsageError(`--user: no such user '${user}'`);
  const fields = passwd.split(':');
  let gid = Number(fields[3]);
  if (group) {
    const entry = getent('group', group);
    if (!entry) throw new UsageError(`--user: no such group '${group}'`);
    gid = Number(entry.split(':')[2]);
  }
  return { name: user, uid: Number(fields[2]), gid };
}

function getent(db: string, key: string): string | undefined {
  try {
    return execFileSync('getent', [db, key], { encoding: 'utf8' }).trim().split('\n')[0];
  } catch {
    return undefined;
  }
}

/**
 * Switches to `account` for good (groups, gid, then uid). Before switching, checks that every
 * path in `writable` will still be writable, so the relay does not die on its first write.
 */
export function dropPrivileges(account: Account, writable: string[]): void {
  if (typeof process.getuid !== 'function' || typeof process.setuid !== 'function') {
    throw new StateError('--user: this platform cannot switch users', 'WS_PRIVILEGES');
  }
  if (process.getuid() !== 0) {
    if (process.getuid() === account.uid) return;
    throw new StateError(`--user ${account.name}: only root can switch users; run without --user`, 'WS_PRIVILEGES');
  }
  const withGroups = process as NodeJS.Process & { initgroups?: (user: string, gid: number) => void };
  withGroups.initgroups?.(account.name, account.gid);
  process.setgid?.(account.gid);
  process.setuid(account.uid);
  for (const path of writable) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK);
    } catch (err) {
      throw new StateError(`after dropping to '${account.name}', ${path} is not writable (${errorMessage(err)}); run 'chown -R ${account.name} <home>' once`, 'WS_PRIVILEGES');
    }
  }
}

export function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
