// What a target health check is: the kinds (TCP connect, stone-style send/expect chat, HTTP GET
// with an expected status), their timing (every, timeout) and the up/down hysteresis (rise,
// fall), and how the `check:` block of an exposure in the agent's YAML file reads.
// Owns: the check specification, its defaults and its validation. Must not: open sockets (the
// checks run in health-checks.ts) or know about the relay.
import { z } from 'zod';

/**
 * Defaults, with the reasons:
 * - every 10 s: a dead target is noticed within ~25 s (two failed checks plus a timeout), well
 *   inside the 60 s alert budget, at the cost of one short connection per target per 10 s.
 * - timeout 5 s (never above `every`): a target that takes longer than that to accept or answer
 *   is not healthy for the people using it either.
 * - rise 2 / fall 2: one lost SYN or a service restart blip never reports "down", and a crash
 *   looping service that answers once between failures never reports "up" — a flapping line
 *   produces no state changes at all instead of one per check. Symmetric, so "down" and "back"
 *   take the same ~2 checks to believe.
 * - chat reads at most 64 KiB looking for `expect`; HTTP checks discard the body after 64 KiB.
 */
export const HEALTH_DEFAULTS = {
  everyMs: 10_000,
  timeoutMs: 5_000,
  rise: 2,
  fall: 2,
  readLimitBytes: 64 * 1024,
  httpPath: '/',
  httpStatus: 200,
} as const;

export type ChatStep = { send: string } | { expect: string | RegExp };

export type CheckKind =
  | { kind: 'tcp' }
  | { kind: 'chat'; steps: ChatStep[] }
  | { kind: 'http'; path: string; status: number; host?: string }
  | { kind: 'off' };

export type HealthCheckSpec = CheckKind & {
  everyMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
};

export function defaultCheck(): HealthCheckSpec {
  return { kind: 'tcp', everyMs: HEALTH_DEFAULTS.everyMs, timeoutMs: HEALTH_DEFAULTS.timeoutMs, rise: HEALTH_DEFAULTS.rise, fall: HEALTH_DEFAULTS.fall };
}

/** "250ms", "5s", "2m", "1h", or a bare number of seconds; undefined when it does not parse. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? Math.round(value * 1000) : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  return ms > 0 ? Math.round(ms) : undefined;
}

const MIN_EVERY_MS = 1_000;
const MAX_EVERY_MS = 3_600_000;

const Duration = z.union([z.number(), z.string()]);
const StepSchema = z.union([z.object({ send: z.string() }).strict(), z.object({ expect: z.string().min(1) }).strict()]);

/** The `check:` block of one exposure (`check: false` turns checking off). */
export const CheckSchema = z.union([
  z.literal(false),
  z
    .object({
      every: Duration.optional(),
      timeout: Duration.optional(),
      rise: z.number().int().min(1).max(100).optional(),
      fall: z.number().int().min(1).max(100).optional(),
      tcp: z.literal(true).optional(),
      send: z.string().optional(),
      expect: z.string().min(1).optional(),
      chat: z.array(StepSchema).min(1).max(20).optional(),
      regex: z.boolean().optional(),
      http: z
        .object({
          path: z.string().startsWith('/').max(2000).optional(),
          status: z.number().int().min(100).max(599).optional(),
          host: z.string().min(1).max(255).optional(),
        })
        .strict()
        .optional(),
    })
    .strict(),
]);

export type CheckInput = z.infer<typeof CheckSchema>;

/** A problem found in a `check:` block: the field (relative to `check`) and what is wrong. */
export class CheckSpecProblem extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

function durationField(value: string | number | undefined, field: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const ms = parseDuration(value);
  if (ms === undefined) throw new CheckSpecProblem(field, `'${String(value)}' is not a duration; write e.g. 500ms, 5s, 2m or 1h`);
  if (ms < min || ms > MAX_EVERY_MS) throw new CheckSpecProblem(field, `${String(value)} is out of range (${min / 1000} s to 1 h)`);
  return ms;
}

function expectation(text: string, regex: boolean, field: string): string | RegExp {
  if (!regex) return text;
  try {
    return new RegExp(text);
  } catch (err) {
    throw new CheckSpecProblem(field, `not a valid regular expression: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Turns a validated `check:` block into a spec; throws CheckSpecProblem on a contradiction. */
export function checkFromInput(input: CheckInput | undefined): HealthCheckSpec {
  const base = defaultCheck();
  if (input === undefined) return base;
  if (input === false) return { ...base, kind: 'off' };
  const everyMs = durationField(input.every, 'every', base.everyMs, MIN_EVERY_MS);
  const timeoutMs = durationField(input.timeout, 'timeout', Math.min(base.timeoutMs, everyMs), 100);
  if (timeoutMs > everyMs) throw new CheckSpecProblem('timeout', `must not be longer than every (${everyMs / 1000} s)`);
  const timing = { everyMs, timeoutMs, rise: input.rise ?? base.rise, fall: input.fall ?? base.fall };
  const chatty = input.send !== undefined || input.expect !== undefined || input.chat !== undefined;
  const kinds = [input.tcp ? 'tcp' : undefined, chatty ? 'send/expect' : undefined, input.http ? 'http' : undefined].filter(Boolean);
  if (kinds.length > 1) throw new CheckSpecProblem(String(kinds[1] === 'http' ? 'http' : 'send'), `choose one kind of check, not ${kinds.join(' and ')}`);
  if (input.regex !== undefined && !chatty) throw new CheckSpecProblem('regex', 'applies only to expect');
  if (input.http) {
    return { ...timing, kind: 'http', path: input.http.path ?? HEALTH_DEFAULTS.httpPath, status: input.http.status ?? HEALTH_DEFAULTS.httpStatus, ...(input.http.host ? { host: input.http.host } : {}) };
  }
  if (chatty) {
    if (input.chat && (input.send !== undefined || input.expect !== undefined)) {
      throw new CheckSpecProblem('chat', 'write either send/expect or a chat list, not both');
    }
    const regex = input.regex ?? false;
    const steps: ChatStep[] = [];
    if (input.chat) {
      input.chat.forEach((step, i) => steps.push('send' in step ? { send: step.send } : { expect: expectation(step.expect, regex, `chat.${i}.expect`) }));
    } else {
      if (input.send !== undefined) steps.push({ send: input.send });
      if (input.expect !== undefined) steps.push({ expect: expectation(input.expect, regex, 'expect') });
    }
    return { ...timing, kind: 'chat', steps };
  }
  return { ...timing, kind: 'tcp' };
}

/** One word for logs and the health report. */
export function describeCheck(spec: HealthCheckSpec): string {
  switch (spec.kind) {
    case 'tcp':
      return 'tcp';
    case 'chat':
      return 'chat';
    case 'http':
      return 'http';
    case 'off':
      return 'off';
  }
}
