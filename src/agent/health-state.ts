// The up/down state of one target with hysteresis: `rise` consecutive good probes to believe a
// down target is back, `fall` consecutive bad ones to believe an up target is down. The very
// first probe decides at once (there is nothing to flap against yet), so the relay learns a
// state within one check of the agent starting.
// Owns: the state transitions. Must not: probe, schedule or log (pure, testable).

export type HealthStateName = 'unknown' | 'up' | 'down';

export interface HealthSnapshot {
  state: HealthStateName;
  /** when the current state began (null while unknown) */
  since: Date | null;
  /** when the last probe finished (null before the first) */
  checkedAt: Date | null;
  /** the last probe's detail: why it is down, or how the last good probe went */
  detail: string;
  /** good (positive) or bad (negative) probes in a row */
  streak: number;
}

export interface HealthTransition {
  from: HealthStateName;
  to: 'up' | 'down';
  at: Date;
  detail: string;
}

export class HealthState {
  private state: HealthStateName = 'unknown';
  private since: Date | null = null;
  private checkedAt: Date | null = null;
  private detail = 'not checked yet';
  private good = 0;
  private bad = 0;

  constructor(
    private readonly rise: number,
    private readonly fall: number,
  ) {}

  /** Feeds one probe result; returns the transition it caused, if any. */
  apply(ok: boolean, detail: string, at: Date): HealthTransition | undefined {
    this.checkedAt = at;
    this.detail = detail;
    if (ok) {
      this.good += 1;
      this.bad = 0;
    } else {
      this.bad += 1;
      this.good = 0;
    }
    const to: 'up' | 'down' | undefined =
      this.state === 'unknown' ? (ok ? 'up' : 'down') : this.state === 'down' && this.good >= this.rise ? 'up' : this.state === 'up' && this.bad >= this.fall ? 'down' : undefined;
    if (!to) return undefined;
    const from = this.state;
    this.state = to;
    this.since = at;
    return { from, to, at, detail };
  }

  snapshot(): HealthSnapshot {
    return { state: this.state, since: this.since, checkedAt: this.checkedAt, detail: this.detail, streak: this.good > 0 ? this.good : -this.bad };
  }
}
