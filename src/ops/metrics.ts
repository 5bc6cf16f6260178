// Prometheus metrics of the relay, in their own Registry (never prom-client's global one, so two
// relays in one process or a test never share counters). Counters follow the event bus; gauges
// are read from the OpsView when Prometheus scrapes.
// Label sets are bounded: tunnels and agents come from registrations and are capped (beyond the
// cap they count under "_other"); failure reasons are the fixed FailureReason list; identities
// (user names) are never labels, and shaping buckets only exist for configured limits (capped).
// Owns: metric names, help texts and label rules. Must not: change anything in the relay.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import type { FailureReason, RelayEvents } from './events.js';
import type { OpsView } from './view.js';

/** Every FailureReason, at run time, so each reason's counter exists (as 0) from the start. */
export const FAILURE_REASONS = [
  'tls-no-certificate',
  'tls-unknown-ca',
  'tls-expired',
  'tls-not-yet-valid',
  'tls-revoked',
  'tls-unknown-certificate',
  'tls-handshake',
  'unknown-tunnel',
  'not-granted',
  'tunnel-offline',
  'target-refused',
  'bad-request',
  'db-mismatch',
  'db-unknown-user',
  'xhost-denied',
] as const satisfies readonly FailureReason[];
// Fails to compile when events.ts gains a reason this list lacks.
type MissingReason = Exclude<FailureReason, (typeof FAILURE_REASONS)[number]>;
const reasonsComplete: [MissingReason] extends [never] ? true : MissingReason = true;
void reasonsComplete;

const KNOWN_REASONS = new Set<string>(FAILURE_REASONS);
const KNOWN_ROLES = new Set(['user', 'agent', 'admin', 'relay']);
export const OVERFLOW_LABEL = '_other';

/** Hands out label values up to a fixed number of distinct ones; the rest share one value. */
export class BoundedLabels {
  private readonly seen = new Set<string>();
  constructor(readonly max: number) {}
  label(value: string): string {
    if (this.seen.has(value)) return value;
    if (this.seen.size >= this.max) return OVERFLOW_LABEL;
    this.seen.add(value);
    return value;
  }
}

export interface OpsMetricsOptions {
  /** distinct tunnel label values at most (default 500) */
  maxTunnels?: number;
  /** distinct agent label values at most (default 500) */
  maxAgents?: number;
  /** distinct shaping buckets at most (default 500) */
  maxBuckets?: number;
  /** process_* and nodejs_* metrics (default true) */
  processMetrics?: boolean;
  log?: Logger;
}

export class OpsMetrics {
  readonly registry = new Registry();
  private readonly tunnels: BoundedLabels;
  private readonly agents: BoundedLabels;
  private readonly buckets: BoundedLabels;
  private readonly unsubscribe: Array<() => void> = [];
  private readonly log: Logger | undefined;
  /** the newest target state per tunnel seen on the bus, merged with the store at scrape */
  private readonly healthSeen = new Map<string, { up: boolean; at: number }>();

  private readonly bytes: Counter<'tunnel' | 'direction'>;
  private readonly streamsOpened: Counter<'tunnel'>;
  private readonly streamsClosed: Counter<'tunnel'>;
  private readonly streamsOpen: Gauge<'tunnel'>;
  private readonly streamsRefused: Counter<'reason'>;
  private readonly handshakes: Counter<'result' | 'role'>;
  private readonly failures: Counter<'reason'>;
  private readonly bansActive: Gauge;
  private readonly bansIssued: Counter;
  private readonly bansLifted: Counter<'by'>;
  private readonly bannedDrops: Counter;
  private readonly agentsOnline: Gauge;
  private readonly agentConnects: Counter<'agent'>;
  private readonly agentLosses: Counter<'agent'>;
  private readonly addressChanges: Counter<'agent'>;
  private readonly tunnelOnline: Gauge<'tunnel'>;
  private readonly targetUp: Gauge<'tunnel'>;
  private readonly credits: Gauge<'scope' | 'name'>;
  private readonly creditCap: Gauge<'scope' | 'name'>;
  private readonly rate: Gauge<'scope' | 'name'>;
  private readonly creditsExhausted: Counter<'scope'>;
  private readonly scrapeErrors: Counter<'source'>;

  constructor(
    private readonly view: OpsView,
    options: OpsMetricsOptions = {},
  ) {
    this.log = options.log;
    this.tunnels = new BoundedLabels(options.maxTunnels ?? 500);
    this.agents = new BoundedLabels(options.maxAgents ?? 500);
    this.buckets = new BoundedLabels(options.maxBuckets ?? 500);
    const registers = [this.registry];
    this.bytes = new Counter({
      name: 'warpstone_tunnel_bytes_total',
      help: 'Bytes carried per tunnel; direction "in" is client to service, "out" is service to client',
      labelNames: ['tunnel', 'direction'],
      registers,
    });
    this.streamsOpened = new Counter({ name: 'warpstone_streams_opened_total', help: 'Streams opened per tunnel', labelNames: ['tunnel'], registers });
    this.streamsClosed = new Counter({ name: 'warpstone_streams_closed_total', help: 'Streams closed per tunnel', labelNames: ['tunnel'], registers });
    this.streamsOpen = new Gauge({ name: 'warpstone_streams_open', help: 'Streams open now per tunnel', labelNames: ['tunnel'], registers });
    this.streamsRefused = new Counter({ name: 'warpstone_streams_refused_total', help: 'Stream opens refused, by reason', labelNames: ['reason'], registers });
    this.handshakes = new Counter({
      name: 'warpstone_handshakes_total',
      help: 'Finished TLS handshakes: result "ok" (by role) or "refused" (role "unknown")',
      labelNames: ['result', 'role'],
      registers,
    });
    this.failures = new Counter({ name: 'warpstone_failures_total', help: 'Failures that count towards a ban, by reason', labelNames: ['reason'], registers });
    this.bansActive = new Gauge({ name: 'warpstone_bans_active', help: 'Source prefixes banned now', registers });
    this.bansIssued = new Counter({ name: 'warpstone_bans_issued_total', help: 'Bans issued', registers });
    this.bansLifted = new Counter({ name: 'warpstone_bans_lifted_total', help: 'Bans lifted, by expiry or by an admin', labelNames: ['by'], registers });
    this.bannedDrops = new Counter({ name: 'warpstone_banned_drops_total', help: 'Connections dropped at accept because their source is banned', registers });
    this.agentsOnline = new Gauge({ name: 'warpstone_agents_online', help: 'Agents connected now', registers });
    this.agentConnects = new Counter({ name: 'warpstone_agent_connects_total', help: 'Agent links established', labelNames: ['agent'], registers });
    this.agentLosses = new Counter({ name: 'warpstone_agent_losses_total', help: 'Agent links lost', labelNames: ['agent'], registers });
    this.addressChanges = new Counter({ name: 'warpstone_agent_address_changes_total', help: 'Times an agent came back from another address', labelNames: ['agent'], registers });
    this.tunnelOnline = new Gauge({ name: 'warpstone_tunnel_online', help: '1 if an agent serves the tunnel now, else 0', labelNames: ['tunnel'], registers });
    this.targetUp = new Gauge({ name: 'warpstone_target_up', help: "1 if the agent's last health check of the tunnel's target passed, else 0", labelNames: ['tunnel'], registers });
    this.credits = new Gauge({ name: 'warpstone_shaping_credits_bytes', help: 'Burst credits left per bucket', labelNames: ['scope', 'name'], registers });
    this.creditCap = new Gauge({ name: 'warpstone_shaping_credit_cap_bytes', help: 'Burst credit cap per bucket', labelNames: ['scope', 'name'], registers });
    this.rate = new Gauge({ name: 'warpstone_shaping_rate_bytes_per_second', help: 'Rate used over the last second per bucket', labelNames: ['scope', 'name'], registers });
    this.creditsExhausted = new Counter({ name: 'warpstone_shaping_credits_exhausted_total', help: 'Times a bucket ran out of credits and fell back to its baseline', labelNames: ['scope'], registers });
    this.scrapeErrors = new Counter({ name: 'warpstone_metrics_source_errors_total', help: 'Scrapes where a source (status, store, shaping) could not be read', labelNames: ['source'], registers });

    for (const reason of FAILURE_REASONS) {
      this.failures.inc({ reason }, 0);
      this.streamsRefused.inc({ reason }, 0);
    }
    this.handshakes.inc({ result: 'refused', role: 'unknown' }, 0);
    this.bannedDrops.inc(0);
    this.bansIssued.inc(0);
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Subscribes the counters to the bus; `detach` undoes it. */
  attach(events: RelayEvents): void {
    const reason = (r: string): string => (KNOWN_REASONS.has(r) ? r : 'other');
    this.unsubscribe.push(
      events.on('bytes', (t) => {
        const tunnel = this.tunnels.label(t.tunnel);
        if (t.up > 0) this.bytes.inc({ tunnel, direction: 'in' }, t.up);
        if (t.down > 0) this.bytes.inc({ tunnel, direction: 'out' }, t.down);
      }),
      events.on('stream-open', (s) => this.streamsOpened.inc({ tunnel: this.tunnels.label(s.tunnel) })),
      events.on('stream-close', (s) => this.streamsClosed.inc({ tunnel: this.tunnels.label(s.tunnel) })),
      events.on('stream-refused', (s) => this.streamsRefused.inc({ reason: reason(s.reason) })),
      events.on('failure', (f) => {
        this.failures.inc({ reason: reason(f.reason) });
        if (f.reason.startsWith('tls-')) this.handshakes.inc({ result: 'refused', role: 'unknown' });
      }),
      events.on('handshake-ok', (h) => this.handshakes.inc({ result: 'ok', role: KNOWN_ROLES.has(h.role) ? h.role : 'other' })),
      events.on('banned-drop', () => this.bannedDrops.inc()),
      events.on('ban-issued', () => this.bansIssued.inc()),
      events.on('ban-lifted', (b) => this.bansLifted.inc({ by: b.by === 'admin' ? 'admin' : 'expiry' })),
      events.on('agent-connected', (a) => this.agentConnects.inc({ agent: this.agents.label(a.agent) })),
      events.on('agent-lost', (a) => this.agentLosses.inc({ agent: this.agents.label(a.agent) })),
      events.on('address-changed', (a) => this.addressChanges.inc({ agent: this.agents.label(a.agent) })),
      events.on('target-health', (h) => this.healthSeen.set(h.tunnel, { up: h.state === 'up', at: h.time.getTime() })),
      events.on('credits-exhausted', (c) => this.creditsExhausted.inc({ scope: c.scope === 'user' ? 'user' : 'tunnel' })),
    );
  }

  detach(): void {
    for (const off of this.unsubscribe.splice(0)) off();
  }

  /** Reads the gauges' sources once per scrape. A source that fails keeps its last values. */
  async refresh(): Promise<void> {
    await Promise.all([this.refreshStatus(), this.refreshBans(), this.refreshHealth()]);
    this.refreshShaping();
  }

  private sourceFailed(source: string, err: unknown): void {
    this.scrapeErrors.inc({ source });
    this.log?.warn({ source, err: errorMessage(err) }, 'metrics source could not be read; keeping its last values');
  }

  private async refreshStatus(): Promise<void> {
    try {
      const status = await this.view.status();
      this.agentsOnline.set(status.agents.length);
      this.tunnelOnline.reset();
      this.streamsOpen.reset();
      const open = new Map<string, number>();
      for (const t of status.tunnels) {
        const tunnel = this.tunnels.label(t.name);
        this.tunnelOnline.set({ tunnel }, t.online ? 1 : 0);
        open.set(tunnel, 0);
      }
      for (const s of status.streams) {
        const tunnel = this.tunnels.label(s.tunnel);
        open.set(tunnel, (open.get(tunnel) ?? 0) + 1);
      }
      for (const [tunnel, count] of open) this.streamsOpen.set({ tunnel }, count);
    } catch (err) {
      this.sourceFailed('status', err);
    }
  }

  private async refreshBans(): Promise<void> {
    try {
      this.bansActive.set((await this.view.store.listBans({ now: new Date() })).length);
    } catch (err) {
      this.sourceFailed('bans', err);
    }
  }

  private async refreshHealth(): Promise<void> {
    try {
      const merged = new Map(this.healthSeen);
      for (const record of await this.view.store.listTargetHealth()) {
        const seen = merged.get(record.tunnel);
        if (!seen || seen.at < record.checkedAt.getTime()) merged.set(record.tunnel, { up: record.state === 'up', at: record.checkedAt.getTime() });
      }
      this.targetUp.reset();
      for (const [tunnel, h] of merged) this.targetUp.set({ tunnel: this.tunnels.label(tunnel) }, h.up ? 1 : 0);
    } catch (err) {
      this.sourceFailed('health', err);
    }
  }

  private refreshShaping(): void {
    try {
      const buckets = this.view.shaping?.() ?? [];
      // Buckets past the cap add up under one "_other" series per scope.
      const sums = new Map<string, { scope: string; name: string; credits: number; cap: number; rate: number }>();
      for (const b of buckets) {
        const scope = b.scope === 'user' ? 'user' : 'tunnel';
        const name = this.buckets.label(`${scope}:${b.name}`) === OVERFLOW_LABEL ? OVERFLOW_LABEL : b.name;
        const key = `${scope}:${name}`;
        const sum = sums.get(key) ?? { scope, name, credits: 0, cap: 0, rate: 0 };
        sum.credits += b.credits;
        sum.cap += b.creditCap;
        sum.rate += b.rateBytesPerSecond;
        sums.set(key, sum);
      }
      this.credits.reset();
      this.creditCap.reset();
      this.rate.reset();
      for (const s of sums.values()) {
        const labels = { scope: s.scope, name: s.name };
        this.credits.set(labels, s.credits);
        this.creditCap.set(labels, s.cap);
        this.rate.set(labels, s.rate);
      }
    } catch (err) {
      this.sourceFailed('shaping', err);
    }
  }

  /** The exposition text, after refreshing the gauges. */
  async render(): Promise<string> {
    await this.refresh();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
