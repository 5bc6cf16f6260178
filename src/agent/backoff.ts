// Jittered exponential backoff for the agent's reconnect loop: delays grow from `initialMs`
// doubling up to `maxMs`, each one drawn in [delay*(1-jitter), delay], so a fleet of agents
// that lost the relay at the same moment does not come back in lockstep.
// Owns: the delay sequence. Must not: sleep or touch sockets (pure, testable).

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  jitter: number;
}

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; grows with each call until reset(). */
  next(): number {
    const ceiling = Math.min(this.options.maxMs, this.options.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    const low = ceiling * (1 - this.options.jitter);
    return Math.round(low + (ceiling - low) * this.random());
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
