// `warpstone identd`: an honest RFC 1413 (IDENT) server for this host's TCP connections, so the
// database relay (and any other IDENT client) can learn which UNIX user opened a connection.
// Owns: the command's flags, default listeners, dropping privileges after binding.
// Must not: hold identd logic (src/identity/identd.ts does).
import type { Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseHostPort, type HostPort } from '../common/hostport.js';
import { dropPrivileges, lookupAccount, runningAsRoot } from '../common/privileges.js';
import { UsageError, errorCode } from '../common/errors.js';
import { Identd, IDENTD_DEFAULTS } from '../identity/identd.js';
import { collect, onShutdown, parseSeconds } from './shared.js';

export function register(program: Command): void {
  program
    .command('identd')
    .description(`answer IDENT (RFC 1413) queries about this host's TCP connections (default [::]:${IDENTD_DEFAULTS.port})`)
    .option('--listen <host:port>', 'address to listen on (repeatable; IPv6 as [::1]:113)', collect, [])
    .option('--user <user[:group]>', 'after binding, drop root privileges to this account (port 113 needs root to bind)')
    .option('--idle-timeout <seconds>', 'close a connection when no complete query arrives for this long', String(IDENTD_DEFAULTS.idleTimeoutMs / 1000))
    .action(async (opts: { listen: string[]; user?: string; idleTimeout: string }) => {
      const log = createLogger({ name: 'identd' });
      const idleTimeoutMs = parseSeconds(opts.idleTimeout, '--idle-timeout') * 1000;
      if (idleTimeoutMs <= 0) throw new UsageError('--idle-timeout: must be more than 0 seconds');
      const account = opts.user ? lookupAccount(opts.user) : undefined;
      const explicit = opts.listen.length > 0;
      const listen: HostPort[] = explicit
        ? opts.listen.map((l) => parseHostPort(l, '--listen', '::', true))
        : [{ host: '::', port: IDENTD_DEFAULTS.port }];
      let identd = new Identd({ listen, log, idleTimeoutMs });
      try {
        await identd.start();
      } catch (err) {
        // [::] needs IPv6; without it, the default falls back to IPv4 only
        const code = errorCode(err);
        if (explicit || (code !== 'WS_LISTEN_EAFNOSUPPORT' && code !== 'WS_LISTEN_EADDRNOTAVAIL')) throw err;
        log.warn('IPv6 is not available; listening on 0.0.0.0 only');
        identd = new Identd({ listen: [{ host: '0.0.0.0', port: IDENTD_DEFAULTS.port }], log, idleTimeoutMs });
        await identd.start();
      }
      const running = identd;
      onShutdown(async () => {
        log.info('stopping');
        await running.stop();
      });
      if (account) {
        dropPrivileges(account, []);
        log.info({ user: account.name, uid: account.uid, gid: account.gid }, 'dropped privileges');
      } else if (runningAsRoot()) {
        log.warn('running as root; pass --user NAME to drop privileges after binding (netlink sock_diag and /proc/net/tcp need none)');
      }
    });
}
