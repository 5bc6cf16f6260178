// `warpstone relay`: serve agents and clients on one TLS port.
import type { Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseHostPort, type HostPort } from '../common/hostport.js';
import { homePaths } from '../common/home.js';
import { openStore } from '../store/open.js';
import { Relay } from '../relay/relay.js';
import { DEFAULTS } from '../wire/defaults.js';
import { collect, onShutdown, parseSeconds } from './shared.js';
import { chownSync } from 'node:fs';
import { dropPrivileges, lookupAccount, runningAsRoot } from '../common/privileges.js';

export function register(program: Command): void {
  program
    .command('relay')
    .description(`serve agents and clients on one TLS port (default [::]:${DEFAULTS.relayPort})`)
    .option('--home <dir>', 'state directory')
    .option('--listen <host:port>', 'address to listen on (repeatable; IPv6 as [::1]:7443)', collect, [])
    .option('--idle-timeout <seconds>', 'close streams idle this long (0 = never)', String(DEFAULTS.streamIdleTimeoutMs / 1000))
    .option('--user <user[:group]>', 'after binding, drop root privileges to this account')
    .action(async (opts: { home?: string; listen: string[]; idleTimeout: string; user?: string }) => {
      const log = createLogger({ name: 'relay' });
      const listen: HostPort[] =
        opts.listen.length > 0 ? opts.listen.map((l) => parseHostPort(l, '--listen', '::', true)) : [{ host: '::', port: DEFAULTS.relayPort }];
      const store = await openStore(homePaths(opts.home).store);
      const relay = new Relay({ home: opts.home, listen, store, log, idleTimeoutMs: parseSeconds(opts.idleTimeout, '--idle-timeout') * 1000 });
      onShutdown(async () => {
        log.info('stopping');
        await relay.stop();
        await store.close();
      });
      const account = opts.user ? lookupAccount(opts.user) : undefined;
      await relay.start();
      const paths = homePaths(opts.home);
      if (account) {
        chownSync(paths.adminSocket, account.uid, account.gid);
        dropPrivileges(account, [paths.dir, paths.store]);
        log.info({ user: account.name, uid: account.uid, gid: account.gid }, 'dropped privileges');
      } else if (runningAsRoot()) {
        log.warn('running as root; pass --user NAME to drop privileges after binding');
      }
    });
}
