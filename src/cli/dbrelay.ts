// `warpstone dbrelay --config FILE`: the identity-aware database relay, and
// `warpstone dbrelay check --config FILE`: validate the config and say in plain words what each
// listener will do.
// Owns: the command's flags, printing the check, wiring the relay to signals. Must not: hold
// relay logic (src/dbrelay/ does).
import type { Command } from 'commander';
import { createLogger, type Logger } from '../common/log.js';
import { formatHostPort } from '../common/hostport.js';
import { UsageError } from '../common/errors.js';
import { loadDbRelayConfig, type DbBanConfig, type DbRelayConfig, type ListenerConfig } from '../dbrelay/config.js';
import { describeKnownUsers } from '../dbrelay/known-users.js';
import { formatDuration as formatBanDuration } from '../guard/duration.js';
import type { DbRelay } from '../dbrelay/server.js';
import { onShutdown } from './shared.js';

export function formatDuration(ms: number): string {
  if (ms === 0) return 'never';
  if (ms < 1000) return `${ms} ms`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

function where(listener: ListenerConfig): string {
  switch (listener.kind) {
    case 'tcp':
      if (listener.identity === 'certificate') {
        const c = listener.clientCert;
        return (
          `on ${formatHostPort(listener.listen)}: identity from the CN of the client certificate sent inside the protocol's TLS upgrade, ` +
          `verified against ${c.caFile}${c.requiredOu ? ` (role OU=${c.requiredOu} required)` : ''}` +
          (c.revocationStore ? `, recorded and not revoked in ${c.revocationStore}` : ', revocations not checked') +
          '; a client that does not start TLS has no identity'
        );
      }
      return `on ${formatHostPort(listener.listen)}: identity from IDENT (port ${listener.ident.port}, ${formatDuration(listener.ident.timeoutMs)})`;
    case 'tls':
      return (
        `on ${formatHostPort(listener.listen)} (TLS with ${listener.files.cert}): identity from the CN of a client certificate ` +
        `verified against ${listener.files.ca}${listener.requiredOu ? ` (role OU=${listener.requiredOu} required)` : ''}` +
        (listener.revocationStore ? `, recorded and not revoked in ${listener.revocationStore}` : ', revocations not checked')
      );
    case 'unix':
      return `on unix:${listener.path} (mode ${listener.mode.toString(8).padStart(4, '0')}${listener.group ? `, group ${listener.group.name}` : ''}): identity from the peer's uid (SO_PEERCRED)`;
    case 'per-user': {
      const shown = listener.sockets.slice(0, 4).map((s) => `${s.path} for ${s.user}`);
      const more = listener.sockets.length > 4 ? `, and ${listener.sockets.length - 4} more` : '';
      return `on ${listener.sockets.length} per-user socket${listener.sockets.length === 1 ? '' : 's'} (mode 0600: ${shown.join(', ')}${more}): identity = the socket's owner`;
    }
    case 'tunnel':
      return `as agent '${listener.identity.name}' of relay ${formatHostPort(listener.relay)}, tunnel '${listener.tunnel}': identity = the warpstone user of each stream`;
  }
}

/** The `bans:` section in words. */
function describeBans(bans: DbBanConfig): string {
  const s = bans.settings;
  const ignore = s.ignore.size > 0 ? `; never banned: ${s.ignore.toStrings().join(', ')}` : '';
  return (
    `${s.maxRetry} failures within ${formatBanDuration(s.findTimeMs)} ban a source (/${s.prefixLengths.v4} IPv4, /${s.prefixLengths.v6} IPv6) ` +
    `for ${formatBanDuration(s.banTimeMs)}, x${s.increment} per repeat up to ${formatBanDuration(s.maxBanTimeMs)}${ignore}; kept in ${bans.store}, shared with 'warpstone ban' and the relay of that home`
  );
}

function describeMapping(mapping: Map<string, string[]>): string {
  if (mapping.size === 0) return 'none (each identity may use the DB user of its own name)';
  const listed = [...mapping].map(([identity, users]) => `${identity} → ${users.join(', ')}`).join('; ');
  return `${listed}; any other identity → the DB user of its own name`;
}

/** What each listener will do, in plain words (the output of `dbrelay check`). */
export function describeDbRelayConfig(config: DbRelayConfig): string {
  const lines: string[] = [];
  lines.push(`${config.file}: ${config.listeners.length} listener${config.listeners.length === 1 ? '' : 's'}`);
  for (const l of config.listeners) {
    const p = l.policy;
    lines.push(
      `listener '${l.name}' ${where(l)}, upstream ${l.upstream.url}, strict: ${p.strict ? 'yes' : 'no'}, ` +
        `client TLS: ${p.clientTls.mode === 'terminate' ? `terminated here (${p.clientTls.certFile})` : 'refused'}`,
    );
    if (l.kind === 'tcp' && l.identity === 'ident') {
      lines.push(`  IDENT believed only from (ident_from): ${l.identFrom.toStrings().join(', ')}; clients from elsewhere have no identity and are refused`);
    }
    lines.push(`  mapping: ${describeMapping(p.mapping)}`);
    lines.push(`  known DB users: ${describeKnownUsers(p.knownUsers)}`);
    lines.push(
      `  decisions: no identity → denied; a DB user the identity may use → allowed; any other existing DB user → denied; ` +
        `unreadable first packet or a DB user the database does not have → ${p.strict ? 'denied (strict)' : 'logged and allowed'}`,
    );
    lines.push(
      `  timeouts: handshake ${formatDuration(p.handshakeTimeoutMs)}, idle ${formatDuration(p.idleTimeoutMs)}, database connect ${formatDuration(p.connectTimeoutMs)}; at most ${p.maxConnections} clients`,
    );
    lines.push(`  audit: ${p.audit ? `${p.audit} (one JSON line per decision) and the log` : 'the log only'}`);
    if (l.upstream.transport === 'unix') lines.push('  warning: UNIX-socket upstream allowed by allow_unix_upstream: true; the database must not trust socket peers');
  }
  if (config.bans) {
    const banned = config.listeners.filter((l) => l.kind === 'tcp' || l.kind === 'tls').map((l) => `'${l.name}'`);
    lines.push(`bans: ${describeBans(config.bans)}`);
    lines.push(
      `  counted: refused DB users (mismatch; unknown users when strict) and client certificate problems on ${banned.length > 0 ? banned.join(', ') : 'no listener (only tcp and tls listeners have source addresses)'}; ` +
        'a banned MySQL client gets ERR 1129 in place of the greeting, a PostgreSQL client FATAL 28000, a TLS-first client is dropped',
    );
  } else {
    lines.push('bans: none (add a bans: section to ban sources after repeated refusals)');
  }
  if (config.user) lines.push(`after creating the sockets, drops privileges to ${config.user.name} (uid ${config.user.uid}, gid ${config.user.gid}) when started as root`);
  else lines.push("no 'user:' set: a relay started as root stays root");
  return `${lines.join('\n')}\n`;
}

export interface RunDbRelayOptions {
  log?: Logger;
  /** register SIGINT/SIGTERM handlers that stop the relay and exit (the command does; tests do not) */
  handleSignals?: boolean;
}

/** Loads the config and starts the relay with the real protocol sessions and policy. */
export async function runDbRelay(configFile: string, options: RunDbRelayOptions = {}): Promise<DbRelay> {
  const config = loadDbRelayConfig(configFile);
  const log = options.log ?? createLogger({ name: 'dbrelay' });
  // Loaded only when serving: `check` needs none of this.
  const [{ DbRelay }, { serveMysql }, { servePostgres }, { createPolicy }] = await Promise.all([
    import('../dbrelay/server.js'),
    import('../dbrelay/mysql-session.js'),
    import('../dbrelay/postgres-session.js'),
    import('../dbrelay/policy.js'),
  ]);
  const relay = new DbRelay({ config, handlers: { mysql: serveMysql, postgres: servePostgres }, createPolicy, log });
  if (options.handleSignals) {
    onShutdown(async () => {
      log.info('stopping');
      await relay.stop();
    });
  }
  await relay.start();
  return relay;
}

function configOf(opts: { config?: string }, command: Command): string {
  // `--config` may be written before or after `check`; commander may give it to either command
  const file = opts.config ?? (command.optsWithGlobals() as { config?: string }).config;
  if (!file) throw new UsageError('dbrelay: --config FILE is required (a dbrelay.yaml; see docs/OPERATIONS.md)');
  return file;
}

export function register(program: Command): void {
  const dbrelay = program
    .command('dbrelay')
    .description('identity-aware database relay: a database user only for the person it belongs to')
    .option('--config <file>', 'the dbrelay YAML config')
    .action(async (opts: { config?: string }, command: Command) => {
      await runDbRelay(configOf(opts, command), { handleSignals: true });
    });
  dbrelay
    .command('check')
    .description('validate the config and print what each listener will do')
    .option('--config <file>', 'the dbrelay YAML config')
    .action((opts: { config?: string }, command: Command) => {
      process.stdout.write(describeDbRelayConfig(loadDbRelayConfig(configOf(opts, command))));
    });
}
