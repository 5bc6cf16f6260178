// Target health in the agent: one probe loop per exposed target (every `every`, default 10 s;
// probes of one target never overlap), the up/down state with rise/fall hysteresis, a log line
// on every state change, and the report the relay reads with `GET /v1/health`.
// Owns: scheduling the checks and the agent's view of target health. Must not: talk to the relay
// (agent.ts answers the request with `report()`), or refuse streams because a target is down
// (the check may be wrong; the user's connection attempt decides).
import type { Logger } from '../common/log.js';
import type { HostPort } from '../common/hostport.js';
import { HEALTH_REPORT_VERSION, type HealthReport } from '../wire/protocol.js';
import { defaultCheck, describeCheck, HEALTH_DEFAULTS, type HealthCheckSpec } from './health-config.js';
import { probe, type ProbeResult } from './health-checks.js';
import { HealthState, type HealthTransition } from './health-state.js';

export interface HealthTarget {
  /** the tunnel name */
  name: string;
  target: HostPort;
  check: HealthCheckSpec;
}

/**
 * The exposures that have a network target, each with its check (the default TCP one if none).
 * In-process exposures (a `handler`) have no target to probe and are left out.
 */
export function healthTargets(exposures: ReadonlyArray<{ name: string; target?: HostPort; check?: HealthCheckSpec; handler?: unknown }>): HealthTarget[] {
  const out: HealthTarget[] = [];
  for (const e of exposures) if (e.target && !e.handler) out.push({ name: e.name, target: e.target, check: e.check ?? defaultCheck() });
  return out;
}

interface Watched {
  spec: HealthTarget;
  state: HealthState;
  timer: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
}

export class HealthMonitor {
  private readonly watched: Watched[];
  private stopped = true;
  private readonly listeners = new Set<(tunnel: string, transition: HealthTransition) => void>();

  constructor(
    targets: HealthTarget[],
    private readonly log: Logger,
    private readonly readLimit: number = HEALTH_DEFAULTS.readLimitBytes,
  ) {
    this.watched = targets.map((spec) => ({ spec, state: new HealthState(spec.check.rise, spec.check.fall), timer: undefined, running: undefined }));
  }

  /** Starts every target's probe loop; the first probe runs at once. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    for (const w of this.watched) if (w.spec.check.kind !== 'off') this.schedule(w, 0);
  }

  /** Called on every state change (after the log line). Returns an unsubscribe function. */
  onTransition(listener: (tunnel: string, transition: HealthTransition) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private schedule(w: Watched, delayMs: number): void {
    if (this.stopped) return;
    w.timer = setTimeout(() => {
      w.timer = undefined;
      const started = Date.now();
      w.running = this.runOnce(w).finally(() => {
        w.running = undefined;
        this.schedule(w, Math.max(0, w.spec.check.everyMs - (Date.now() - started)));
      });
    }, delayMs);
    w.timer.unref();
  }

  private async runOnce(w: Watched): Promise<void> {
    let result: ProbeResult;
    try {
      result = await probe(w.spec.target, w.spec.check, this.readLimit);
    } catch (err) {
      // probe() never rejects by design; if it does, that is a failed check, not a crash
      result = { ok: false, detail: `check failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (this.stopped) return;
    const transition = w.state.apply(result.ok, result.detail, new Date());
    if (!transition) return;
    const fields = { tunnel: w.spec.name, check: describeCheck(w.spec.check), from: transition.from, to: transition.to, detail: transition.detail };
    if (transition.to === 'down') this.log.warn(fields, 'target down');
    else this.log.info(fields, 'target up');
    for (const listener of this.listeners) {
      try {
        listener(w.spec.name, transition);
      } catch (err) {
        this.log.error({ err: err instanceof Error ? err.message : String(err) }, 'health listener failed');
      }
    }
  }

  /** What `GET /v1/health` answers. */
  report(agent: string): HealthReport {
    return {
      version: HEALTH_REPORT_VERSION,
      agent,
      now: new Date().toISOString(),
      targets: this.watched.map((w) => {
        const s = w.state.snapshot();
        const off = w.spec.check.kind === 'off';
        return {
          tunnel: w.spec.name,
          check: describeCheck(w.spec.check),
          state: off ? 'unknown' : s.state,
          since: off ? null : (s.since?.toISOString() ?? null),
          checkedAt: off ? null : (s.checkedAt?.toISOString() ?? null),
          detail: off ? 'checks are off for this target' : s.detail,
        };
      }),
    };
  }

  /** Stops the loops and waits for probes in flight (each is bounded by its timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watched) if (w.timer) clearTimeout(w.timer);
    await Promise.all(this.watched.map((w) => w.running));
  }
}
