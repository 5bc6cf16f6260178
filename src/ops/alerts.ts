// Alerts: what the relay tells its operators, and the guarantee that it reaches them.
//
// 1. Events (RelayEvents) become alerts: agent lost, target down / back up, address changed, ban
//    issued, credits exhausted. Bursts fold into one alert per subject (`coalesceMs`, 5 s from
//    the first event), repeats of a known state are dropped (a target reported "down" twice,
//    credits exhausted again before they were restored), and an agent that comes back within
//    `lostGraceMs` (10 s) was never "lost" (a flaky line's address change still alerts).
//    Not alerted: links closed by the relay's own shutdown, and stale sessions replaced by the
//    same agent's newer one (it is connected). A target's first known state alerts only if it is
//    "down" ("up" is not news).
// 2. Each alert is first written to the store's outbox, one row per destination; only then is
//    delivery tried. A row is retried until delivered: exponential backoff with jitter from 2 s
//    to at most 1 h between tries. After `maxAgeMs` (7 days) it is given up: logged as an error
//    and left in the outbox, undelivered, with the reason (never deleted, never marked delivered).
//    A row for a destination that is no longer configured is kept and tried again hourly, so it
//    goes out if the destination comes back.
// 3. The outbox is the only state that matters: a restarted relay picks up every undelivered
//    row at its next attempt time, exactly as if it had never stopped.
// Delivery is at least once: a relay stopped mid-delivery sends that alert again on restart; the
// body's `id` lets receivers drop the copy. With the default timings an alert is first tried
// within about 12 s of its event (10 s grace for agent-lost, 5 s fold for the others, 1 s poll).
// Owns: the event -> alert rules, the outbox writes and the delivery loop. Must not: know how a
// destination delivers (alert-destinations.ts), or block an event emitter (handlers only queue).
import type { Logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import type { OpsStore, AlertRecord } from '../store/ops-store.js';
import type { RelayEvents, RelayEventMap } from './events.js';
import { addressHost } from './address-stats.js';
import type { AlertDestination } from './alert-destinations.js';
import { alertBody, summaries, type AlertBody, type AlertDetails, type AlertKind } from './alert-messages.js';

export type AlertOutbox = Pick<OpsStore, 'addAlerts' | 'dueAlerts' | 'markAlertDelivered' | 'markAlertFailed' | 'listTargetHealth'>;

export interface AlerterOptions {
  events: RelayEvents;
  store: AlertOutbox;
  destinations: readonly AlertDestination[];
  log: Logger;
  /** fold events of one subject arriving within this window (default 5 s) */
  coalesceMs?: number;
  /** an agent back within this time was not lost (default 10 s) */
  lostGraceMs?: number;
  /** how often due rows are looked for (default 1 s) */
  pollMs?: number;
  /** first retry delay, doubled per attempt (default 2 s) ... */
  retryInitialMs?: number;
  /** ... up to this (default 1 h) */
  retryMaxMs?: number;
  /** after this age an undelivered row is given up (default 7 days) */
  maxAgeMs?: number;
  /** deliveries running at once (default 4) */
  concurrency?: number;
  random?: () => number;
}

export const ALERT_DEFAULTS = {
  coalesceMs: 5_000,
  lostGraceMs: 10_000,
  pollMs: 1_000,
  retryInitialMs: 2_000,
  retryMaxMs: 3_600_000,
  maxAgeMs: 7 * 86_400_000,
  concurrency: 4,
  /** rows asked for per poll */
  batch: 50,
  /** how long stop() waits for deliveries in flight before leaving them to the next start */
  stopGraceMs: 2_000,
  /** rows of destinations no longer configured are looked at again after this long */
  orphanRetryMs: 3_600_000,
} as const;

/** Far future: a given-up row is never due again, yet stays in the outbox. */
const NEVER = new Date('9999-12-31T00:00:00.000Z');

/** The delay before try `attempts + 1`: initial * 2^attempts, capped, drawn from [d/2, d]. */
export function retryDelay(attempts: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempts, 40));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

type Content = { kind: AlertKind; summary: string; details: AlertDetails };

interface Pending {
  first: Date;
  last: Date;
  count: number;
  timer: NodeJS.Timeout;
  /** what the folded events add up to so far */
  acc: unknown;
  /** the alert at flush time; undefined = nothing to say after all */
  build: (acc: unknown, count: number) => Content | undefined;
}

export class Alerter {
  private readonly o: Required<Omit<AlerterOptions, 'events' | 'store' | 'destinations' | 'log'>>;
  private readonly log: Logger;
  private readonly byId: Map<string, AlertDestination>;
  private readonly pending = new Map<string, Pending>();
  private readonly unsaved: Array<Parameters<AlertOutbox['addAlerts']>[0]> = [];
  private readonly inFlight = new Map<number, Promise<void>>();
  private readonly unsubscribe: Array<() => void> = [];
  /** last alerted target state per "agent/tunnel" */
  private readonly targetState = new Map<string, 'up' | 'down'>();
  /** "scope:name" whose credits are exhausted and alerted */
  private readonly exhausted = new Set<string>();
  private readonly warnedOrphans = new Set<string>();
  private pollTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private started = false;
  private stopped = false;

  constructor(private readonly options: AlerterOptions) {
    this.log = options.log;
    this.o = {
      coalesceMs: options.coalesceMs ?? ALERT_DEFAULTS.coalesceMs,
      lostGraceMs: options.lostGraceMs ?? ALERT_DEFAULTS.lostGraceMs,
      pollMs: options.pollMs ?? ALERT_DEFAULTS.pollMs,
      retryInitialMs: options.retryInitialMs ?? ALERT_DEFAULTS.retryInitialMs,
      retryMaxMs: options.retryMaxMs ?? ALERT_DEFAULTS.retryMaxMs,
      maxAgeMs: options.maxAgeMs ?? ALERT_DEFAULTS.maxAgeMs,
      concurrency: options.concurrency ?? ALERT_DEFAULTS.concurrency,
      random: options.random ?? Math.random,
    };
    this.byId = new Map(options.destinations.map((d) => [d.id, d]));
  }

  /** Subscribes to the events, learns the last known target states, starts delivering. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    // Seeded from the store so a relay restart does not re-announce targets that were up.
    for (const h of await this.options.store.listTargetHealth().catch((err: unknown) => {
      this.log.warn({ err: errorMessage(err) }, 'cannot read the last target states; first states will be alerted as new');
      return [];
    })) {
      this.targetState.set(`${h.agent}/${h.tunnel}`, h.state);
    }
    const { events } = this.options;
    this.unsubscribe.push(
      events.on('agent-lost', (e) => this.onAgentLost(e)),
      events.on('agent-connected', (e) => this.onAgentConnected(e)),
      events.on('target-health', (e) => this.onTargetHealth(e)),
      events.on('address-changed', (e) => this.onAddressChanged(e)),
      events.on('ban-issued', (e) => this.onBanIssued(e)),
      events.on('credits-exhausted', (e) => this.onCreditsExhausted(e)),
      events.on('credits-restored', (e) => this.exhausted.delete(`${e.scope}:${e.name}`)),
    );
    this.log.info({ destinations: this.options.destinations.map((d) => d.label) }, 'alerts on');
    this.pollTimer = setInterval(() => void this.poll(), this.o.pollMs);
    this.pollTimer.unref();
    void this.poll();
  }

  // ---- events -> pending alerts

  /**
   * Folds an event into the pending alert of `key` (`accumulate` merges it into what the earlier
   * events of the burst added up to), or opens one that flushes `waitMs` after this first event.
   */
  private fold<A>(key: string, time: Date, waitMs: number, accumulate: (previous: A | undefined) => A, build: (acc: A, count: number) => Content | undefined): void {
    if (this.stopped) return;
    const existing = this.pending.get(key);
    if (existing) {
      existing.count += 1;
      if (time > existing.last) existing.last = time;
      existing.acc = accumulate(existing.acc as A);
      return;
    }
    const timer = setTimeout(() => void this.flush(key), waitMs);
    timer.unref();
    this.pending.set(key, { first: time, last: time, count: 1, timer, acc: accumulate(undefined), build: build as Pending['build'] });
  }

  private onAgentLost(e: RelayEventMap['agent-lost']): void {
    // the relay's own shutdown, or a stale session replaced by the agent's newer one: not lost
    if (/^relay shutting down$|^replaced/.test(e.reason)) return;
    this.fold(
      `agent:${e.agent}`,
      e.time,
      this.o.lostGraceMs,
      () => e,
      (lost) => ({ kind: 'agent-lost', summary: summaries.agentLost(lost.agent, lost.address, lost.reason), details: { agent: lost.agent, address: lost.address, reason: lost.reason } }),
    );
  }

  private onAgentConnected(e: RelayEventMap['agent-connected']): void {
    const key = `agent:${e.agent}`;
    const lost = this.pending.get(key);
    if (!lost) return;
    // back within the grace period: it was a blip, not a loss
    clearTimeout(lost.timer);
    this.pending.delete(key);
    this.log.debug({ agent: e.agent }, 'agent back within the grace period; no alert');
  }

  private onTargetHealth(e: RelayEventMap['target-health']): void {
    const subject = `${e.agent}/${e.tunnel}`;
    this.fold(
      `target:${subject}`,
      e.time,
      this.o.coalesceMs,
      () => e,
      (latest) => {
        const before = this.targetState.get(subject);
        this.targetState.set(subject, latest.state);
        // the latest state of the burst decides; the state last alerted is no news, and a
        // first sighting is news only when it is down
        if (before === latest.state || (before === undefined && latest.state === 'up')) return undefined;
        return {
          kind: latest.state === 'down' ? 'target-down' : 'target-up',
          summary: latest.state === 'down' ? summaries.targetDown(latest.agent, latest.tunnel, latest.detail) : summaries.targetUp(latest.agent, latest.tunnel, latest.detail),
          details: { agent: latest.agent, tunnel: latest.tunnel, state: latest.state, detail: latest.detail },
        };
      },
    );
  }

  private onAddressChanged(e: RelayEventMap['address-changed']): void {
    if (addressHost(e.from) === addressHost(e.to)) return;
    this.fold<{ from: string; to: string }>(
      `address:${e.agent}`,
      e.time,
      this.o.coalesceMs,
      (previous) => ({ from: previous?.from ?? e.from, to: e.to }),
      (change, count) => ({
        kind: 'address-changed',
        summary: summaries.addressChanged(e.agent, change.from, change.to, count),
        details: { agent: e.agent, from: change.from, to: change.to },
      }),
    );
  }

  private onBanIssued(e: RelayEventMap['ban-issued']): void {
    this.fold<{ first: RelayEventMap['ban-issued']; addresses: string[] }>(
      'bans',
      e.time,
      this.o.coalesceMs,
      (previous) => ({ first: previous?.first ?? e, addresses: [...(previous?.addresses ?? []), e.address].slice(0, 100) }),
      ({ first, addresses }, count) => {
        const details: AlertDetails =
          count === 1
            ? { address: first.address, until: first.until.toISOString(), failures: first.failures, offence: first.offence, reason: first.reason }
            : { addresses, bans: count };
        return { kind: 'ban-issued', summary: summaries.bansIssued(addresses, count, first.reason), details };
      },
    );
  }

  private onCreditsExhausted(e: RelayEventMap['credits-exhausted']): void {
    const subject = `${e.scope}:${e.name}`;
    if (this.exhausted.has(subject)) return;
    this.exhausted.add(subject);
    this.fold(
      `credits:${subject}`,
      e.time,
      this.o.coalesceMs,
      () => e,
      (c) => ({
        kind: 'credits-exhausted',
        summary: summaries.creditsExhausted(c.scope, c.name, c.baselineBytesPerSecond),
        details: { scope: c.scope, name: c.name, baselineBytesPerSecond: c.baselineBytesPerSecond },
      }),
    );
  }

  // ---- pending -> outbox

  private async flush(key: string): Promise<void> {
    const p = this.pending.get(key);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    const content = p.build(p.acc, p.count);
    if (!content) return;
    const body = alertBody(content.kind, p.first, p.last, p.count, content.summary, content.details);
    await this.save(body);
  }

  /** Writes one row per destination; on a store error the rows wait in memory and retry. */
  private async save(body: AlertBody): Promise<void> {
    if (this.options.destinations.length === 0) return;
    const payload = JSON.stringify(body);
    const now = new Date();
    const rows = this.options.destinations.map((d) => ({ createdAt: now, kind: body.kind, payload, destination: d.id, nextAttemptAt: now }));
    this.log.info({ alert: body.id, kind: body.kind, summary: body.summary }, 'alert');
    try {
      await this.options.store.addAlerts(rows);
    } catch (err) {
      this.log.error({ alert: body.id, err: errorMessage(err) }, 'cannot write the alert to the outbox; keeping it in memory and retrying');
      this.unsaved.push(rows);
      return;
    }
    void this.poll();
  }

  private async saveUnsaved(): Promise<void> {
    while (this.unsaved.length > 0) {
      const rows = this.unsaved[0] as Parameters<AlertOutbox['addAlerts']>[0];
      await this.options.store.addAlerts(rows);
      this.unsaved.shift();
    }
  }

  // ---- outbox -> destinations

  /** One pass: due rows are handed to their destinations (skipping those in flight). */
  private poll(): Promise<void> {
    if (this.polling) return this.polling;
    this.polling = this.pollOnce()
      .catch((err: unknown) => this.log.error({ err: errorMessage(err) }, 'alert outbox poll failed; retrying'))
      .finally(() => {
        this.polling = undefined;
      });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    await this.saveUnsaved();
    if (this.stopped) return;
    const free = this.o.concurrency - this.inFlight.size;
    if (free <= 0) return;
    const due = await this.options.store.dueAlerts(new Date(), ALERT_DEFAULTS.batch + this.inFlight.size);
    let started = 0;
    for (const row of due) {
      if (started >= free) break;
      if (this.inFlight.has(row.id)) continue;
      const destination = this.byId.get(row.destination);
      if (!destination) {
        await this.orphan(row);
        continue;
      }
      started += 1;
      const attempt = this.attempt(row, destination).finally(() => {
        this.inFlight.delete(row.id);
        // a freed slot picks up the next due row at once rather than at the next poll
        if (!this.stopped) setImmediate(() => void this.poll());
      });
      this.inFlight.set(row.id, attempt);
    }
  }

  private async orphan(row: AlertRecord): Promise<void> {
    if (!this.warnedOrphans.has(row.destination)) {
      this.warnedOrphans.add(row.destination);
      this.log.warn(
        { destination: row.destination.replace(/^(webhook:[a-z]+:\/\/[^/]+).*$/i, '$1/...') },
        'undelivered alerts for a destination that is no longer configured; kept in the outbox and looked at hourly',
      );
    }
    await this.options.store.markAlertFailed(row.id, 'destination no longer configured', new Date(Date.now() + ALERT_DEFAULTS.orphanRetryMs));
  }

  private async attempt(row: AlertRecord, destination: AlertDestination): Promise<void> {
    let body: AlertBody;
    try {
      body = JSON.parse(row.payload) as AlertBody;
    } catch {
      await this.options.store.markAlertFailed(row.id, 'payload is not JSON; cannot be delivered', NEVER).catch(() => undefined);
      this.log.error({ row: row.id }, 'alert row holds no JSON; left undelivered in the outbox');
      return;
    }
    try {
      await destination.deliver(body, row.payload);
    } catch (err) {
      await this.failed(row, destination, body, errorMessage(err));
      return;
    }
    try {
      await this.options.store.markAlertDelivered(row.id, new Date());
      this.log.info({ alert: body.id, kind: body.kind, destination: destination.label, attempts: row.attempts + 1 }, 'alert delivered');
    } catch (err) {
      // delivered, but the outbox does not know: it will be sent again (receivers dedupe on id)
      this.log.error({ alert: body.id, destination: destination.label, err: errorMessage(err) }, 'alert delivered but not marked; it may be sent again');
    }
  }

  private async failed(row: AlertRecord, destination: AlertDestination, body: AlertBody, error: string): Promise<void> {
    const now = Date.now();
    const age = now - row.createdAt.getTime();
    if (age >= this.o.maxAgeMs) {
      this.log.error(
        { alert: body.id, kind: body.kind, destination: destination.label, attempts: row.attempts + 1, err: error, summary: body.summary },
        'alert given up after its maximum age; left undelivered in the outbox',
      );
      await this.options.store.markAlertFailed(row.id, `given up after ${Math.round(age / 3_600_000)} h: ${error}`, NEVER).catch(() => undefined);
      return;
    }
    const delay = retryDelay(row.attempts, this.o.retryInitialMs, this.o.retryMaxMs, this.o.random);
    this.log.warn({ alert: body.id, kind: body.kind, destination: destination.label, attempts: row.attempts + 1, err: error, retryInMs: delay }, 'alert delivery failed; will retry');
    try {
      await this.options.store.markAlertFailed(row.id, error, new Date(now + delay));
    } catch (err) {
      // the row stays due and is tried again at the next poll
      this.log.error({ alert: body.id, err: errorMessage(err) }, 'cannot record the failed alert attempt');
    }
  }

  /** Pending alerts are written out (none is dropped), then deliveries in flight get a moment. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off();
    if (this.pollTimer) clearInterval(this.pollTimer);
    for (const key of [...this.pending.keys()]) await this.flush(key).catch(() => undefined);
    await this.saveUnsaved().catch((err: unknown) => this.log.error({ err: errorMessage(err), alerts: this.unsaved.length }, 'alerts could not be written to the outbox before stopping'));
    await this.polling;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inFlight.values()]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ALERT_DEFAULTS.stopGraceMs);
      }),
    ]);
    clearTimeout(timer);
  }
}
