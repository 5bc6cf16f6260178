// Address history statistics of one agent, from its sightings (one row per agent link: address,
// connected, disconnected, reason) — what operators of a flaky line tabulate by hand: how often
// the public address changed, how long each address lasted (mean, standard deviation, median,
// shortest, longest), disconnects and their reasons, and the time the agent was connected.
//
// Definitions (docs/OPERATIONS.md repeats them):
// - An address is the host part of the recorded `host:port`; the port changes with every TCP
//   connection and means nothing here. A reconnect from the same host is not a change.
// - An address "lasts" from the first connection with it until the first connection with a
//   different address. Gaps while the agent was disconnected count towards the address they
//   follow: the line may have kept it, and nobody can tell (the next connection says).
// - The last address is open-ended (`open`): it lasts until now while the agent is connected,
//   else until its last disconnect (the last moment it was known to be in use). Open durations
//   are lower bounds and are left out of the statistics; they are shown on their own.
// - The period is [since, now]. A change counts when the new address's first connection is in
//   the period. The statistics cover the addresses that ended in the period, each with its full
//   length (so the address in use when the period began is not cut short).
// - Disconnects count when the link ended in the period. A sighting never closed although a later
//   one exists (the relay stopped without recording it) ends where the next one begins, with
//   the reason "end not recorded".
// - Errors are disconnects whose reason says the link failed (ping timeout, reset, ...): not an
//   agent that closed its connection, a relay shutting down, a stale session replaced by the
//   agent's newer one, a revoked certificate, or an unrecorded reason.
// - The standard deviation is the sample one (n − 1), as in a spreadsheet's STDEV; null below 2.
// Owns: the arithmetic. Must not: read the store or print (`warpstone agent stats`, cli/agent.ts).
import type { SightingRecord } from '../store/ops-store.js';

export interface AddressSpan {
  address: string;
  from: Date;
  /** the first connection with the next address; for the open span, now or the last disconnect */
  to: Date;
  lastedMs: number;
  /** the last address: `to` is a lower bound */
  open: boolean;
  /** agent links with this address */
  connections: number;
  /** time connected within [from, to] */
  connectedMs: number;
  /** time disconnected within [from, to] */
  offlineMs: number;
}

export interface DurationSummary {
  count: number;
  meanMs: number;
  /** sample standard deviation; null with fewer than two values */
  stdMs: number | null;
  medianMs: number;
  shortestMs: number;
  longestMs: number;
}

export interface ReasonCount {
  reason: string;
  count: number;
  error: boolean;
}

export interface AddressStats {
  agent: string;
  since: Date;
  now: Date;
  /** the newest sighting's address and whether that link is still up; null if never seen */
  current: { address: string; connected: boolean; addressSince: Date; lastConnectedAt: Date; lastDisconnectedAt: Date | null } | null;
  /** address changes whose new address appeared within the period */
  changes: number;
  /** the addresses in use at some time in the period, oldest first */
  spans: AddressSpan[];
  /** over the addresses that ended within the period (closed spans); null when none did */
  lasted: DurationSummary | null;
  /** agent links begun within the period */
  connections: number;
  disconnects: number;
  errors: number;
  reasons: ReasonCount[];
  /** connected time within the period, and the period's length */
  connectedMs: number;
  periodMs: number;
  /** the part of the period since the agent's first connection (for an uptime ratio) */
  observedMs: number;
}

export const UNRECORDED_END = 'end not recorded (relay stopped?)';
const NO_REASON = 'not recorded';

/** Reasons that mean an orderly end, not a failing link (see the header). */
const ORDERLY = [/^agent closed the connection$/, /^relay shutting down$/, /^replaced/, /^certificate revoked$/, /^closed by agent/];

export function isErrorReason(reason: string | null): boolean {
  if (reason === null || reason === NO_REASON || reason === UNRECORDED_END) return false;
  return !ORDERLY.some((re) => re.test(reason));
}

/** "198.51.100.4:50122" -> "198.51.100.4", "[2001:db8::1]:443" -> "2001:db8::1"; others as given. */
export function addressHost(address: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (v6) return (v6[1] as string).replace(/^::ffff:/i, '');
  const colons = address.split(':').length - 1;
  const host = colons === 1 ? address.slice(0, address.indexOf(':')) : address;
  return host.replace(/^::ffff:/i, '');
}

export function summarize(values: number[]): DurationSummary | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  const mean = sorted.reduce((a, b) => a + b, 0) / n;
  const std = n < 2 ? null : Math.sqrt(sorted.reduce((acc, v) => acc + (v - mean) ** 2, 0) / (n - 1));
  const mid = Math.floor(n / 2);
  const median = n % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { count: n, meanMs: mean, stdMs: std, medianMs: median, shortestMs: sorted[0] as number, longestMs: sorted[n - 1] as number };
}

interface Link {
  host: string;
  start: number;
  /** null: still connected */
  end: number | null;
  reason: string | null;
}

const overlap = (a0: number, a1: number, b0: number, b1: number): number => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));

/**
 * Computes the statistics of `agent` over [since, now] from ALL its sightings (the ones before
 * `since` are needed to know which address was in use when the period began).
 */
export function addressStats(agent: string, sightings: readonly SightingRecord[], since: Date, now: Date): AddressStats {
  const t0 = since.getTime();
  const t1 = now.getTime();
  const sorted = [...sightings].sort((a, b) => a.connectedAt.getTime() - b.connectedAt.getTime() || a.id - b.id);
  const links: Link[] = sorted.map((s, i) => {
    const start = s.connectedAt.getTime();
    const next = sorted[i + 1];
    if (s.disconnectedAt) return { host: addressHost(s.address), start, end: Math.max(start, s.disconnectedAt.getTime()), reason: s.reason ?? NO_REASON };
    if (next) return { host: addressHost(s.address), start, end: Math.max(start, next.connectedAt.getTime()), reason: UNRECORDED_END };
    return { host: addressHost(s.address), start, end: null, reason: null };
  });

  // Spans over the whole history: a new span at each connection from another host.
  interface Building {
    address: string;
    from: number;
    links: Link[];
  }
  const building: Building[] = [];
  for (const link of links) {
    const last = building.at(-1);
    if (last && last.address === link.host) last.links.push(link);
    else building.push({ address: link.host, from: link.start, links: [link] });
  }
  const allSpans: AddressSpan[] = building.map((b, i) => {
    const next = building[i + 1];
    const lastLink = b.links.at(-1) as Link;
    const open = next === undefined;
    const to = next ? next.from : lastLink.end === null ? t1 : lastLink.end;
    const connectedMs = b.links.reduce((acc, l) => acc + overlap(l.start, l.end ?? t1, b.from, to), 0);
    return { address: b.address, from: new Date(b.from), to: new Date(to), lastedMs: to - b.from, open, connections: b.links.length, connectedMs, offlineMs: Math.max(0, to - b.from - connectedMs) };
  });

  const spans = allSpans.filter((s) => s.to.getTime() > t0 || s.from.getTime() >= t0);
  const changes = allSpans.filter((s, i) => i > 0 && s.from.getTime() >= t0 && s.from.getTime() <= t1).length;
  const lasted = summarize(allSpans.filter((s) => !s.open && s.to.getTime() > t0 && s.to.getTime() <= t1).map((s) => s.lastedMs));

  const reasonCounts = new Map<string, number>();
  let disconnects = 0;
  for (const link of links) {
    if (link.end === null || link.end < t0 || link.end > t1) continue;
    disconnects += 1;
    const reason = link.reason ?? NO_REASON;
    reasonCounts.set(reason, (reasonCounts.get(reason) ?? 0) + 1);
  }
  const reasons = [...reasonCounts.entries()]
    .map(([reason, count]) => ({ reason, count, error: isErrorReason(reason) }))
    .sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));

  const newest = links.at(-1);
  const newestSpan = allSpans.at(-1);
  const lastEnded = [...links].reverse().find((l) => l.end !== null);
  return {
    agent,
    since,
    now,
    current:
      newest && newestSpan
        ? {
            address: newest.host,
            connected: newest.end === null,
            addressSince: newestSpan.from,
            lastConnectedAt: new Date(newest.start),
            lastDisconnectedAt: lastEnded && lastEnded.end !== null ? new Date(lastEnded.end) : null,
          }
        : null,
    changes,
    spans,
    lasted,
    connections: links.filter((l) => l.start >= t0 && l.start <= t1).length,
    disconnects,
    errors: reasons.filter((r) => r.error).reduce((acc, r) => acc + r.count, 0),
    reasons,
    connectedMs: links.reduce((acc, l) => acc + overlap(l.start, l.end ?? t1, t0, t1), 0),
    periodMs: Math.max(0, t1 - t0),
    observedMs: links[0] ? Math.max(0, t1 - Math.max(t0, links[0].start)) : 0,
  };
}
