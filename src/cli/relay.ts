// `warpstone relay`: serve agents and clients on one TLS port, with the guard around it: bans
// (fail2ban semantics; --ban-* flags, --no-ban), the audit log (--audit-file, the store) and
// alerts (--alert-webhook, --alert-command; delivered from the store's outbox) and the admin
// HTTP listener (metrics, /healthz, /readyz, dashboard; --admin-listen, --no-admin-http).
// Owns: the relay's flags and the order things start and stop in. Must not: hold relay logic.
import type { Command } from 'commander';
import { join } from 'node:path';
import { chownSync, existsSync } from 'node:fs';
import { createLogger } from '../common/log.js';
import { formatHostPort, parseHostPort, type HostPort } from '../common/hostport.js';
import { homePaths } from '../common/home.js';
import { openStore } from '../store/open.js';
import { Relay } from '../relay/relay.js';
import { RelayEvents } from '../ops/events.js';
import { BanGuard } from '../guard/bans.js';
import { BAN_DEFAULTS, banSettingsFromFlags, defaultBanSettings, type BanFlags } from '../guard/ban-settings.js';
import { AUDIT_DEFAULTS, AuditLog } from '../guard/audit.js';
import { parseDuration } from '../guard/duration.js';
import { Alerter } from '../ops/alerts.js';
import { parseDestinations } from '../ops/alert-destinations.js';
import { ADMIN_HTTP_DEFAULT, AdminHttp } from '../ops/admin-http.js';
import { errorMessage } from '../common/errors.js';
import { DEFAULTS } from '../wire/defaults.js';
import { collect, onShutdown, parseSeconds } from './shared.js';
import { dropPrivileges, lookupAccount, runningAsRoot } from '../common/privileges.js';

interface RelayFlags extends BanFlags {
  home?: string;
  listen: string[];
  idleTimeout: string;
  user?: string;
  /** a path, or false with --no-audit-file */
  auditFile?: string | false;
  auditRetention: string;
  alertWebhook: string[];
  alertCommand: string[];
  adminListen?: string;
  /** false with --no-admin-http */
  adminHttp: boolean;
}

export function register(program: Command): void {
  program
    .command('relay')
    .description(`serve agents and clients on one TLS port (default [::]:${DEFAULTS.relayPort})`)
    .option('--home <dir>', 'state directory')
    .option('--listen <host:port>', 'address to listen on (repeatable; IPv6 as [::1]:7443)', collect, [])
    .option('--idle-timeout <seconds>', 'close streams idle this long (0 = never)', String(DEFAULTS.streamIdleTimeoutMs / 1000))
    .option('--user <user[:group]>', 'after binding, drop root privileges to this account')
    .option('--no-ban', 'never ban sources automatically (bans added with `warpstone ban add` still apply)')
    .option('--ban-maxretry <n>', `failures that ban a source (default ${BAN_DEFAULTS.maxRetry})`)
    .option('--ban-findtime <duration>', `the window in which --ban-maxretry failures ban (default ${BAN_DEFAULTS.findTime})`)
    .option('--ban-time <duration>', `length of a first ban (default ${BAN_DEFAULTS.banTime})`)
    .option('--ban-increment <factor>', `each repeat ban of a source lasts this many times longer (default ${BAN_DEFAULTS.increment})`)
    .option('--ban-maxtime <duration>', `longest ban (default ${BAN_DEFAULTS.maxBanTime})`)
    .option('--ban-ignore <cidr>', 'never ban this address or block (repeatable; loopback is not ignored by default)', collect, [])
    .option('--ban-prefix-v4 <bits>', `IPv4 sources are counted and banned per /bits (default ${BAN_DEFAULTS.prefixLengths.v4})`)
    .option('--ban-prefix-v6 <bits>', `IPv6 sources are counted and banned per /bits (default ${BAN_DEFAULTS.prefixLengths.v6})`)
    .option('--audit-file <path>', 'append the audit log as JSON lines here (default <home>/audit.jsonl)')
    .option('--no-audit-file', 'keep the audit log in the store only')
    .option('--audit-retention <duration>', 'delete audit rows older than this from the store (0s = keep them all)', AUDIT_DEFAULTS.retention)
    .option('--alert-webhook <url>', 'POST alerts as JSON to this URL (repeatable)', collect, [])
    .option('--alert-command <path>', 'run this program for each alert, the JSON on its stdin (repeatable; no shell)', collect, [])
    .option('--admin-listen <host:port>', `admin HTTP (metrics, /healthz, /readyz, dashboard) on this address (default ${formatHostPort(ADMIN_HTTP_DEFAULT)}); loopback needs no credentials, anything else an admin token`)
    .option('--no-admin-http', 'do not serve the admin HTTP listener')
    .action(async (opts: RelayFlags) => {
      const log = createLogger({ name: 'relay' });
      const listen: HostPort[] =
        opts.listen.length > 0 ? opts.listen.map((l) => parseHostPort(l, '--listen', '::', true)) : [{ host: '::', port: DEFAULTS.relayPort }];
      const idleTimeoutMs = parseSeconds(opts.idleTimeout, '--idle-timeout') * 1000;
      const banSettings = banSettingsFromFlags({ ...opts, banIgnore: opts.banIgnore ?? [] });
      const retentionMs = parseDuration(opts.auditRetention, '--audit-retention', { allowZero: true });
      const paths = homePaths(opts.home);
      const auditFile = opts.auditFile === false ? undefined : (opts.auditFile ?? join(paths.dir, 'audit.jsonl'));
      const alertDestinations = parseDestinations(opts.alertWebhook, opts.alertCommand);
      const adminListen = opts.adminListen ? parseHostPort(opts.adminListen, '--admin-listen') : ADMIN_HTTP_DEFAULT;

      const store = await openStore(paths.store);
      const events = new RelayEvents();
      // --no-ban turns off automatic bans only: the admin's `warpstone ban add` must still hold
      const bans = new BanGuard(store, events, log.child({ part: 'bans' }), banSettings ?? { ...defaultBanSettings(), automatic: false });
      const audit = new AuditLog(store, events, log.child({ part: 'audit' }), { ...(auditFile ? { file: auditFile } : {}), retentionMs });
      const alerts = alertDestinations.length > 0 ? new Alerter({ events, store, destinations: alertDestinations, log: log.child({ part: 'alerts' }) }) : undefined;
      const relay = new Relay({ home: opts.home, listen, store, log, idleTimeoutMs, events, admission: bans });
      let adminHttp: AdminHttp | undefined;
      onShutdown(async () => {
        log.info('stopping');
        await adminHttp?.stop();
        await relay.stop();
        // after the relay (its last events are folded in), before the store closes
        await alerts?.stop();
        await audit.stop();
        await bans.stop();
        await store.close();
      });
      const account = opts.user ? lookupAccount(opts.user) : undefined;
      await bans.start();
      if (!banSettings) log.warn('automatic bans are off (--no-ban); bans added with `warpstone ban add` still apply');
      await audit.start();
      await alerts?.start();
      await relay.start();
      if (opts.adminHttp) {
        // After the relay (a second relay on this home stops at the admin socket first), before
        // dropping privileges (an admin port below 1024 needs root). The default port may be
        // taken by another relay on this host: then warn and run without it; an address given
        // with --admin-listen must work.
        const candidate = new AdminHttp({ view: relay, events, log: log.child({ part: 'admin-http' }), listen: adminListen });
        try {
          await candidate.start();
          adminHttp = candidate;
        } catch (err) {
          await candidate.stop();
          if (opts.adminListen) throw err;
          log.warn({ err: errorMessage(err) }, 'admin HTTP is off; pass --admin-listen HOST:PORT for another address, or --no-admin-http');
        }
      }
      if (account) {
        chownSync(paths.adminSocket, account.uid, account.gid);
        if (auditFile && existsSync(auditFile)) chownSync(auditFile, account.uid, account.gid);
        dropPrivileges(account, [paths.dir, paths.store, ...(auditFile ? [auditFile] : [])]);
        log.info({ user: account.name, uid: account.uid, gid: account.gid }, 'dropped privileges');
      } else if (runningAsRoot()) {
        log.warn('running as root; pass --user NAME to drop privileges after binding');
      }
    });
}
