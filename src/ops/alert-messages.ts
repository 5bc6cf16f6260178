// What an alert says: the JSON body every destination receives (webhook POST body, command
// stdin), one per alert, versioned. Each alert has an id that stays the same for every
// destination and every retry, so a receiver that sees it twice (delivery is at least once) can
// drop the copy.
// Owns: alert kinds, the body's shape and its sentences. Must not: decide when to alert
// (alerts.ts) or deliver (alert-destinations.ts).
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';

export const ALERT_BODY_VERSION = 1;

export type AlertKind = 'agent-lost' | 'target-down' | 'target-up' | 'address-changed' | 'ban-issued' | 'credits-exhausted';

export const ALERT_KINDS: readonly AlertKind[] = ['agent-lost', 'target-down', 'target-up', 'address-changed', 'ban-issued', 'credits-exhausted'];

/** Values in `details` are plain: strings, numbers, booleans, or lists of strings. */
export type AlertDetails = Record<string, string | number | boolean | string[]>;

export interface AlertBody {
  version: number;
  /** the same for every destination and retry of this alert */
  id: string;
  kind: AlertKind;
  /** the (first) event's time */
  time: string;
  /** the last folded event's time (equals `time` when count is 1) */
  lastTime: string;
  /** events folded into this alert (a burst becomes one alert) */
  count: number;
  /** the relay host's name */
  relay: string;
  /** one sentence for people */
  summary: string;
  details: AlertDetails;
}

export function alertBody(kind: AlertKind, first: Date, last: Date, count: number, summary: string, details: AlertDetails): AlertBody {
  return {
    version: ALERT_BODY_VERSION,
    id: randomUUID(),
    kind,
    time: first.toISOString(),
    lastTime: last.toISOString(),
    count,
    relay: hostname(),
    summary,
    details,
  };
}

/** Environment variables for a command hook: the body's top fields, plus plain detail fields. */
export function alertEnvironment(body: AlertBody): Record<string, string> {
  const env: Record<string, string> = {
    WARPSTONE_ALERT_ID: body.id,
    WARPSTONE_ALERT_KIND: body.kind,
    WARPSTONE_ALERT_TIME: body.time,
    WARPSTONE_ALERT_COUNT: String(body.count),
    WARPSTONE_ALERT_SUMMARY: body.summary,
    WARPSTONE_ALERT_RELAY: body.relay,
  };
  for (const [key, value] of Object.entries(body.details)) {
    if (!/^[a-zA-Z][a-zA-Z0-9]{0,30}$/.test(key)) continue;
    const name = `WARPSTONE_ALERT_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
    env[name] = (Array.isArray(value) ? value.join(' ') : String(value)).slice(0, 4_000);
  }
  return env;
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export const summaries = {
  agentLost: (agent: string, address: string, reason: string): string => `agent '${agent}' lost (${reason}); it was connected from ${address}`,
  targetDown: (agent: string, tunnel: string, detail: string): string => `target of tunnel '${tunnel}' on agent '${agent}' is down: ${detail}`,
  targetUp: (agent: string, tunnel: string, detail: string): string => `target of tunnel '${tunnel}' on agent '${agent}' is back up (${detail})`,
  addressChanged: (agent: string, from: string, to: string, count: number): string =>
    count === 1 ? `agent '${agent}' changed address from ${from} to ${to}` : `agent '${agent}' changed address ${count} times, from ${from} to ${to}`,
  bansIssued: (addresses: string[], count: number, firstReason: string): string =>
    count === 1 ? `banned ${addresses[0] ?? '?'}: ${firstReason}` : `${plural(count, 'ban')} issued: ${addresses.slice(0, 5).join(', ')}${count > 5 ? ', ...' : ''}`,
  creditsExhausted: (scope: string, name: string, baseline: number): string =>
    `burst credits of ${scope} '${name}' ran out; it is held to its baseline of ${baseline} bytes/s`,
};
