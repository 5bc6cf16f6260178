// The warpstone wire protocol, version 1 (see docs/PROTOCOL.md). HTTP/2 over mutual TLS; Node's
// http2 does the framing and flow control, this file names what travels in it.
// Owns: ALPN ids, paths, header names, status meanings, the target syntax. Must not: open sockets.
import { nameProblem } from '../pki/names.js';

/** ALPN of the HTTP/2-based protocol. A TLS client that offers no ALPN gets VPN-Warp text mode. */
export const ALPN_V1 = 'warpstone/1';
export const PROTOCOL_VERSION = 1;

/** Relay -> agent: returns the agent's hello (its tunnels) as JSON. */
export const PATH_HELLO = '/v1/hello';

export const HEADER_USER = 'warpstone-user';
export const HEADER_SOURCE = 'warpstone-source';
export const HEADER_REASON = 'warpstone-reason';
export const HEADER_CODE = 'warpstone-code';

/** Header values may not carry CR/LF or other controls; reasons are cut to a readable length. */
export function headerSafe(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 500);
}

export const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  408: 'Request Timeout',
  403: 'Forbidden',
  404: 'Not Found',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

export interface TunnelInfo {
  name: string;
  /** Port of the target, so `CONNECT name:port` can be checked. Host stays private to the agent. */
  port: number;
}

export interface AgentHello {
  version: number;
  agent: string;
  tunnels: TunnelInfo[];
}

export interface Target {
  tunnel: string;
  port: number | undefined;
}

/**
 * Parses `tunnel` or `tunnel:port` (the CONNECT authority / request-target). Returns an error
 * sentence instead of throwing, so callers can answer 400 with it.
 */
export function parseTarget(text: string): Target | string {
  const colon = text.lastIndexOf(':');
  const tunnel = colon < 0 ? text : text.slice(0, colon);
  let port: number | undefined;
  if (colon >= 0) {
    const portText = text.slice(colon + 1);
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      return `'${portText}' is not a port number (in '${text.slice(0, 80)}')`;
    }
    port = Number(portText);
  }
  const problem = nameProblem(tunnel, 'tunnel');
  if (problem) return problem;
  return { tunnel, port };
}

export function formatTarget(target: Target): string {
  return target.port === undefined ? target.tunnel : `${target.tunnel}:${target.port}`;
}

export function parseHello(text: string): AgentHello | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'hello is not JSON';
  }
  if (!value || typeof value !== 'object') return 'hello is not an object';
  const v = value as Record<string, unknown>;
  if (v.version !== PROTOCOL_VERSION) return `hello has protocol version ${String(v.version)}, this relay speaks ${PROTOCOL_VERSION}`;
  if (typeof v.agent !== 'string') return 'hello has no agent name';
  if (!Array.isArray(v.tunnels)) return 'hello has no tunnel list';
  const tunnels: TunnelInfo[] = [];
  for (const t of v.tunnels as unknown[]) {
    if (!t || typeof t !== 'object') return 'hello tunnel entry is not an object';
    const { name, port } = t as Record<string, unknown>;
    if (typeof name !== 'string' || nameProblem(name, 'tunnel')) return `hello names a bad tunnel ${JSON.stringify(name)}`;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return `hello gives tunnel ${name} a bad port`;
    tunnels.push({ name, port });
  }
  return { version: PROTOCOL_VERSION, agent: v.agent, tunnels };
}

/** Relay -> agent: which of the agent's tunnels were registered, and why others were refused. */
export const PATH_REGISTRATION = '/v1/registration';

export interface Registration {
  accepted: string[];
  refused: Array<{ name: string; reason: string }>;
}

/**
 * Relay -> agent: the current state of every exposed target (PROTOCOL §3.5). The relay polls it;
 * the agent answers from memory (its checks run on their own schedule), so the answer is cheap.
 */
export const PATH_HEALTH = '/v1/health';
export const HEALTH_REPORT_VERSION = 1;

export type TargetHealthState = 'unknown' | 'up' | 'down';

export interface TargetHealthReport {
  tunnel: string;
  /** tcp | chat | http | off */
  check: string;
  state: TargetHealthState;
  /** ISO time the state began; null while unknown */
  since: string | null;
  /** ISO time of the last finished check; null before the first */
  checkedAt: string | null;
  /** a sentence for people (at most 300 characters) */
  detail: string;
}

export interface HealthReport {
  version: number;
  agent: string;
  /** the agent's clock when it answered, so the relay can correct `since` for clock skew */
  now: string;
  targets: TargetHealthReport[];
}

const HEALTH_STATES: readonly string[] = ['unknown', 'up', 'down'];

function isoOrNull(value: unknown): value is string | null {
  return value === null || (typeof value === 'string' && value.length <= 40 && !Number.isNaN(Date.parse(value)));
}

/** Validates an agent's health answer; returns an error sentence instead of throwing. */
export function parseHealthReport(text: string): HealthReport | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'health report is not JSON';
  }
  if (!value || typeof value !== 'object') return 'health report is not an object';
  const v = value as Record<string, unknown>;
  if (v.version !== HEALTH_REPORT_VERSION) return `health report has version ${String(v.version)}, this relay reads ${HEALTH_REPORT_VERSION}`;
  if (typeof v.agent !== 'string') return 'health report has no agent name';
  if (typeof v.now !== 'string' || Number.isNaN(Date.parse(v.now))) return 'health report has no valid now';
  if (!Array.isArray(v.targets)) return 'health report has no target list';
  const targets: TargetHealthReport[] = [];
  for (const t of v.targets as unknown[]) {
    if (!t || typeof t !== 'object') return 'health report target is not an object';
    const { tunnel, check, state, since, checkedAt, detail } = t as Record<string, unknown>;
    if (typeof tunnel !== 'string' || nameProblem(tunnel, 'tunnel')) return `health report names a bad tunnel ${JSON.stringify(tunnel)}`;
    if (typeof state !== 'string' || !HEALTH_STATES.includes(state)) return `health report gives tunnel ${tunnel} a bad state`;
    if (!isoOrNull(since) || !isoOrNull(checkedAt)) return `health report gives tunnel ${tunnel} a bad time`;
    targets.push({
      tunnel,
      check: typeof check === 'string' ? check.slice(0, 20) : 'unknown',
      state: state as TargetHealthState,
      since,
      checkedAt,
      detail: typeof detail === 'string' ? headerSafe(detail).slice(0, 300) : '',
    });
  }
  return { version: HEALTH_REPORT_VERSION, agent: v.agent, now: v.now, targets };
}
