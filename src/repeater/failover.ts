// `-b` backups and `-B` balance groups as stone 2.4 runs them (mkBackup, lbsopts, stone_dsts,
// findBackup, findLBSet, modPairDest, scanBackups, asyncHealthCheck):
//   - A stone whose resolved destination equals the first member of a `-B` group given before it
//     (newest group first) spreads new connections over the members, round robin; the counter
//     is stone's 8-bit state, so it wraps at 256 like stone's does.
//   - For each member, the newest `-b` rule given before the stone whose master equals it is its
//     backup. A member whose rule is failing is skipped; when the member picked is failing
//     (a single destination, or every member failing) the connection goes to the rule's backup.
//   - A rule is checked (health.ts) only once a connection has been routed through it (stone's
//     `used = 2`), every `interval` seconds, scanned every gcd(all intervals) seconds, with the
//     interval as the check's time limit. `interval <= 0`: failing from the start, never checked.
//   - Lines as stone: `LB set: A B C` and `master M backup B interval N` at -dd when a stone is
//     made, `MinInterval: N` at -dd after start-up, `health check: connect ADDR getsockopt err=E`
//     (always), `health check ADDR fail` (-d, when it starts failing), `health check ADDR success`
//     (-dd, when it recovers).
// UDP-to-UDP stones ignore all of this, as in stone (they always send to the first destination);
// engine.ts warns about it.
// Owns: backup state, the per-stone router, the check schedule. Must not: resolve names or print
// addresses itself (engine.ts hands in resolved, printed addresses), or touch relayed sockets.
import { healthCheck, type HealthResult } from './health.js';
import { sameAddress, type Address, type Route } from './route.js';
import type { BackupRule, BalanceGroup, ChatStep } from './types.js';

/** What the failover code logs through (StoneLog satisfies it). */
export interface FailoverLog {
  readonly debug: number;
  message(text: string): void;
}

/** One `-b` rule, shared by every stone that uses it (stone's Backup struct). */
export class Backup {
  /** stone's `bn`: the master failed its last check (or the interval is <= 0) */
  failing: boolean;
  /** 0 = no stone uses it, 1 = a stone could, 2 = a connection went through it (checks run) */
  used: 0 | 1 | 2 = 0;
  /** when the last check started (seconds); stone's `last` */
  last = 0;
  checking = false;

  constructor(
    readonly rule: BackupRule,
    readonly master: Address,
    readonly backup: Address,
    readonly check: Address,
    /** master, backup and check as stone prints them in its -b lines (no extensions) */
    readonly printed: { readonly master: string; readonly backup: string; readonly check: string },
  ) {
    this.failing = rule.intervalSeconds <= 0;
  }

  get intervalSeconds(): number {
    return this.rule.intervalSeconds;
  }

  get chat(): readonly ChatStep[] {
    return this.rule.chat;
  }
}

/** A resolved `-B` group: members in order, the first is the one a stone's destination matches. */
export interface ResolvedGroup {
  readonly group: BalanceGroup;
  readonly members: readonly Address[];
  /** `LB set: A B C` as stone logs it */
  readonly line: string;
}

/** Picks the destination of each new connection of one stone (stone's modPairDest). */
export class Router {
  private roundRobin = 0;
  private readonly backupRoutes = new Map<Backup, Route>();

  constructor(
    readonly members: readonly Route[],
    /** per member, its -b rule; undefined when no member has one (stone's `backups == NULL`) */
    readonly backups: readonly (Backup | undefined)[] | undefined,
    /** how this stone prints a backup in its `connecting to` line */
    private readonly print: (address: Address) => string,
  ) {
    if (members.length === 0) throw new Error('a router needs at least one destination');
  }

  private backupRoute(b: Backup): Route {
    let route = this.backupRoutes.get(b);
    if (!route) {
      route = { address: b.backup, printed: this.print(b.backup) };
      this.backupRoutes.set(b, route);
    }
    return route;
  }

  /** The route of one new connection; marks the rule it went through as used. */
  next(): Route {
    const n = this.members.length;
    let offset = -1;
    if (n > 1) {
      offset = this.roundRobin % n;
      if (this.backups) {
        for (let i = 0; i < n; i++) {
          const b = this.backups[(offset + i) % n];
          if (!b || !b.failing) {
            offset = (offset + i) % n;
            break;
          }
        }
      }
      this.roundRobin = (offset + 1) & 0xff;
    }
    let route = this.members[Math.max(offset, 0)] as Route;
    if (this.backups) {
      const b = this.backups[Math.max(offset, 0)];
      if (b) {
        b.used = 2;
        if (b.failing) route = this.backupRoute(b);
      }
    }
    return route;
  }
}

/** The router of one stone, and the -dd lines stone logs while making it. */
export interface StoneRouting {
  readonly router: Router;
  /** `LB set: ...` (logged before the stone's xhost and listen lines) */
  readonly groupLine: string | undefined;
  /** `master M backup B interval N` per member with a rule (logged after the listen line) */
  readonly backupLines: readonly string[];
}

/**
 * Builds a stone's router. `destination`: its resolved destination; `groups` / `rules`: the -B
 * groups and -b rules given before it (newest first), already resolved; `print`: how this stone
 * prints an address in its `connecting to` line.
 */
export function routeStone(
  destination: Route,
  groups: readonly ResolvedGroup[],
  rules: readonly Backup[],
  print: (address: Address) => string,
): StoneRouting {
  const group = groups.find((g) => g.members[0] !== undefined && sameAddress(g.members[0], destination.address));
  const members = group ? group.members.map((m) => ({ address: m, printed: print(m) })) : [destination];
  const found = members.map((m) => rules.find((b) => sameAddress(b.master, m.address)));
  const backupLines: string[] = [];
  for (const b of found) {
    if (!b) continue;
    if (b.used === 0) b.used = 1;
    backupLines.push(`master ${b.printed.master} backup ${b.printed.backup} interval ${b.intervalSeconds}`);
  }
  return {
    router: new Router(members, found.some((b) => b !== undefined) ? found : undefined, print),
    groupLine: group?.line,
    backupLines,
  };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** stone's MinInterval: the gcd of the positive -b intervals; 0 when there are none. */
export function minimumInterval(rules: readonly { intervalSeconds: number }[]): number {
  let m = 0;
  for (const r of rules) if (r.intervalSeconds > 0) m = m === 0 ? r.intervalSeconds : gcd(m, r.intervalSeconds);
  return m;
}

export type Checker = (address: Address, timeoutMs: number, chat: readonly ChatStep[]) => Promise<HealthResult>;

/** Runs the checks of every rule (stone's scanBackups on its one-second loop). */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private lastScan = 0;
  private stopped = false;
  readonly minInterval: number;

  constructor(
    /** every -b rule of the program (stone checks them all once used, newest first) */
    private readonly backups: readonly Backup[],
    private readonly log: FailoverLog,
    private readonly checker: Checker = healthCheck,
    private readonly clock: () => number = () => Math.floor(Date.now() / 1000),
  ) {
    this.minInterval = minimumInterval(backups);
  }

  /** Starts the one-second loop (nothing to do without a positive interval). */
  start(): void {
    if (this.minInterval <= 0 || this.timer) return;
    this.timer = setInterval(() => this.scan(), 1000);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One pass of stone's loop: checks the rules that are used and due. Exposed for tests. */
  scan(): void {
    const now = this.clock();
    if (now - this.lastScan < this.minInterval) return;
    this.lastScan = now;
    for (const b of this.backups) {
      if (b.used < 2 || b.intervalSeconds <= 0 || b.checking || now - b.last < b.intervalSeconds) continue;
      void this.runCheck(b, now);
    }
  }

  private async runCheck(b: Backup, now: number): Promise<void> {
    b.checking = true;
    let result: HealthResult;
    try {
      result = await this.checker(b.check, b.intervalSeconds * 1000, b.chat);
    } catch {
      result = { healthy: false, reason: 'connect' };
    }
    b.checking = false;
    b.last = now;
    if (this.stopped) return;
    const address = b.printed.check;
    if (result.healthy) {
      if (this.log.debug > 3 || (b.failing && this.log.debug > 1)) this.log.message(`health check ${address} success`);
      b.failing = false;
      return;
    }
    if (result.reason === 'connect') this.log.message(`health check: connect ${address} getsockopt err=${result.errno ?? 0}`);
    else if (result.reason === 'send') this.log.message(`health check: send ${address} err=${result.errno ?? 0}`);
    else if (result.reason === 'recv') this.log.message(`health check: recv from ${address} err=${result.errno ?? 0}`);
    else if (this.log.debug > 8) this.log.message(`health check: ${address} timeout`);
    if (this.log.debug > 3 || (!b.failing && this.log.debug > 0)) this.log.message(`health check ${address} fail`);
    b.failing = true;
  }
}
