// The database relay as one object: opens the audit files and the bans' store (when a `bans:`
// section is configured), starts the known-users sources and one policy per listener, binds
// every listener (sockets are created while still root), drops privileges to the configured
// account, then dials the relays of tunnel listeners. stop() closes everything in reverse; the
// CLI calls it on SIGINT/SIGTERM.
// Owns: start order, privilege drop, shutdown. Must not: parse protocols, decide policy or
// accept connections itself (listeners.ts does).
import type { Logger } from '../common/log.js';
import { dropPrivileges, runningAsRoot } from '../common/privileges.js';
import { errorMessage } from '../common/errors.js';
import type { DbRelayConfig, ListenerConfig, TunnelListenerConfig } from './config.js';
import { AuditFile } from './audit-file.js';
import { createKnownUsers, type KnownUsers, type KnownUsersLookup } from './known-users.js';
import { DbBans } from './bans.js';
import { startListener, startTunnels, type ListenerParts, type RunningListener } from './listeners.js';
import type { DbProtocol, DbSessionHandler, Decision, DecisionInput } from './types.js';

/** createPolicy of policy.ts, as the relay calls it. */
export type PolicyFactory = (options: { strict: boolean; mapping: Map<string, string[]>; knownUsers: KnownUsersLookup }) => (input: DecisionInput) => Promise<Decision>;

export interface DbRelayOptions {
  config: DbRelayConfig;
  /** the protocol sessions (serveMysql, servePostgres) */
  handlers: Record<DbProtocol, DbSessionHandler>;
  createPolicy: PolicyFactory;
  log: Logger;
  /** called with the tunnel names each time a tunnel listener's agent registered at its relay */
  onTunnelsRegistered?: (tunnels: string[]) => void;
}

export class DbRelay {
  readonly listeners: RunningListener[] = [];
  private readonly audits = new Map<string, AuditFile>();
  private readonly knownUsers = new Map<string, KnownUsers>();
  private bans: DbBans | undefined;
  private started = false;
  private stopped = false;

  constructor(private readonly options: DbRelayOptions) {}

  private audit(path: string | undefined): AuditFile {
    const key = path ?? '';
    let sink = this.audits.get(key);
    if (!sink) {
      sink = AuditFile.open(path, this.options.log.child({ part: 'audit' }));
      this.audits.set(key, sink);
    }
    return sink;
  }

  private known(config: ListenerConfig): KnownUsers {
    // listeners with the same source share one list (and one query)
    const key = JSON.stringify(config.policy.knownUsers);
    let known = this.knownUsers.get(key);
    if (!known) {
      known = createKnownUsers(config.policy.knownUsers, this.options.log.child({ part: 'known-users' }));
      this.knownUsers.set(key, known);
    }
    return known;
  }

  private parts(config: ListenerConfig): ListenerParts {
    const { handlers, createPolicy, log } = this.options;
    return {
      config,
      handler: handlers[config.upstream.protocol],
      decide: createPolicy({ strict: config.policy.strict, mapping: config.policy.mapping, knownUsers: this.known(config) }),
      audit: this.audit(config.policy.audit),
      log: log.child({ listener: config.name }),
      // only sockets with a source address are banned (the listeners of kind tcp and tls)
      ...(this.bans && (config.kind === 'tcp' || config.kind === 'tls') ? { bans: this.bans } : {}),
    };
  }

  async start(): Promise<void> {
    if (this.started) throw new Error('DbRelay.start() called twice');
    this.started = true;
    const { config, log } = this.options;
    try {
      // Files and sockets first, while we may still be root.
      if (config.bans) {
        this.bans = await DbBans.open(config.bans, log.child({ part: 'bans' }));
        await this.bans.start();
      }
      const all = config.listeners.map((l) => this.parts(l));
      for (const known of this.knownUsers.values()) known.start();
      for (const parts of all) {
        if (parts.config.kind === 'tunnel') continue;
        const running = await startListener(parts);
        this.listeners.push(running);
        log.info({ listener: running.name, on: running.addresses, upstream: parts.config.upstream.url }, 'dbrelay listening');
      }
      this.dropPrivileges();
      const tunnels = all.filter((p): p is ListenerParts<TunnelListenerConfig> => p.config.kind === 'tunnel');
      if (tunnels.length > 0) {
        const running = startTunnels(tunnels, log.child({ part: 'agent' }), this.options.onTunnelsRegistered);
        this.listeners.push(...running);
        for (const r of running) log.info({ listener: r.name, on: r.addresses }, 'dbrelay tunnel listener dialling its relay');
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private dropPrivileges(): void {
    const { config, log } = this.options;
    const account = config.user;
    if (account && runningAsRoot()) {
      dropPrivileges(account, []);
      log.info({ user: account.name, uid: account.uid, gid: account.gid }, 'dropped privileges');
    } else if (account && process.getuid?.() !== account.uid) {
      log.warn({ user: account.name }, `not running as root, so 'user: ${account.name}' is not applied`);
    } else if (!account && runningAsRoot()) {
      log.warn("running as root; set 'user: NAME' in the config to drop privileges after the sockets are created");
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.allSettled(this.listeners.map((l) => l.stop()));
    await this.bans?.stop().catch((err: unknown) => this.options.log.error({ err: errorMessage(err) }, 'stopping the bans failed'));
    await Promise.allSettled([...this.knownUsers.values()].map((k) => k.stop()));
    for (const sink of this.audits.values()) sink.close();
  }
}
