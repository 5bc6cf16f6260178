// The relay's view of who may do what: revoked certificate serials and user->tunnel grants,
// read from the store and refreshed whenever the store's revision changes (polled every second),
// so `warpstone revoke` and `grant` in another process take effect at once.
// Owns: the in-memory policy snapshot. Must not: open sockets or close streams itself; it tells
// listeners what changed and the relay acts.
import type { Store, PolicySnapshot } from '../store/store.js';
import type { Logger } from '../common/log.js';
import { DEFAULTS } from '../wire/defaults.js';
import { errorMessage } from '../common/errors.js';

export class Policy {
  private snapshot: PolicySnapshot = { revision: -1, revokedSerials: new Set(), grants: new Map() };
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: Array<() => void> = [];
  private polling = false;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly pollMs: number = DEFAULTS.policyPollMs,
  ) {}

  async start(): Promise<void> {
    this.snapshot = await this.store.policySnapshot();
    this.timer = setInterval(() => void this.poll(), this.pollMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  isRevoked(serial: string): boolean {
    return this.snapshot.revokedSerials.has(serial);
  }

  isGranted(user: string, tunnel: string): boolean {
    const tunnels = this.snapshot.grants.get(user);
    return tunnels !== undefined && (tunnels.has(tunnel) || tunnels.has('*'));
  }

  /** The tunnels a user is granted ('*' = all), sorted; for explanations in the admin's log. */
  grantsOf(user: string): string[] {
    return [...(this.snapshot.grants.get(user) ?? [])].sort();
  }

  /** Re-reads the store now if its revision moved; also used by tests to avoid waiting. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const revision = await this.store.revision();
      if (revision === this.snapshot.revision) return;
      this.snapshot = await this.store.policySnapshot();
      this.log.info({ revision }, 'policy reloaded');
      for (const listener of this.listeners) listener();
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'policy reload failed; keeping the previous policy');
    } finally {
      this.polling = false;
    }
  }
}
