// Target health of one agent, as the relay learns it: on an agent link the relay is the HTTP/2
// client (reversed roles), so it asks `GET /v1/health` every few seconds (PROTOCOL §3.5) and
// calls `onChange` for each target whose state changed since the last answer. The agent runs
// its checks on its own schedule and answers from memory, so a poll costs one small stream.
// Why polling rather than a long-lived pushed stream: a poll heals itself (a lost or reset
// stream is simply the next poll), needs no keep-alive of its own, and 5 s of extra latency is
// small next to the checks' own rise/fall delay and the 60 s alert budget.
// Owns: polling one agent link and spotting transitions. Must not: write the store or emit
// relay events (the caller's onChange does), or close the link (AgentHub owns it).
import http2 from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import type { Logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import { DEFAULTS } from '../wire/defaults.js';
import { PATH_HEALTH, parseHealthReport, type TargetHealthReport } from '../wire/protocol.js';

/** Default poll interval: a state change reaches the relay within 5 s of the agent seeing it. */
export const HEALTH_POLL_MS = 5_000;

export interface TargetHealthChange {
  agent: string;
  tunnel: string;
  state: 'up' | 'down';
  /** what the relay knew before: 'unknown' on the first answer of a link (unless seeded) */
  previous: 'up' | 'down' | 'unknown';
  detail: string;
  /** when the agent saw the change, corrected for the difference between the two clocks */
  since: Date;
  /** when the agent last checked, corrected the same way */
  checkedAt: Date;
}

export interface HealthPollerOptions {
  log?: Logger;
  /** per-poll deadline (default min(interval, 15 s)) */
  timeoutMs?: number;
  /** last known states (tunnel -> state), e.g. from the store, so a reconnecting agent whose
   * targets did not change produces no changes */
  initial?: ReadonlyMap<string, 'up' | 'down'>;
}

export class HealthPoller {
  private readonly timer: NodeJS.Timeout;
  private readonly known = new Map<string, 'up' | 'down'>();
  private latest: TargetHealthReport[] = [];
  private inFlight: Promise<void> | undefined;
  private stopped = false;
  private readonly timeoutMs: number;
  private readonly log: Logger | undefined;

  constructor(
    private readonly session: ClientHttp2Session,
    private readonly agentName: string,
    intervalMs: number,
    private readonly onChange: (change: TargetHealthChange) => void,
    options: HealthPollerOptions = {},
  ) {
    this.log = options.log;
    this.timeoutMs = options.timeoutMs ?? Math.min(intervalMs, DEFAULTS.streamOpenTimeoutMs);
    for (const [tunnel, state] of options.initial ?? []) this.known.set(tunnel, state);
    this.timer = setInterval(() => void this.pollNow(), intervalMs);
    this.timer.unref();
    session.once('close', () => this.stop());
    // First answer right away: the agent has usually checked its targets by the time it is
    // registered, and the relay should not wait an interval to know.
    void this.pollNow();
  }

  /** The targets as the last answer gave them (for status pages). */
  targets(): TargetHealthReport[] {
    return this.latest;
  }

  /** One poll now (skipped if one is still running); resolves when it is done. Never rejects. */
  pollNow(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.inFlight) {
      this.inFlight = this.poll()
        .catch((err: unknown) => this.log?.debug({ agent: this.agentName, err: errorMessage(err) }, 'health poll failed'))
        .finally(() => {
          this.inFlight = undefined;
        });
    }
    return this.inFlight;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private async poll(): Promise<void> {
    if (this.session.closed || this.session.destroyed) {
      this.stop();
      return;
    }
    const { status, body } = await this.fetch();
    if (status === 400 || status === 404) {
      // An agent from before health reporting answers "unknown request": nothing to poll.
      this.log?.info({ agent: this.agentName, status }, 'agent does not report target health (older version); not polling it');
      this.stop();
      return;
    }
    if (status !== 200) throw new Error(`agent answered ${status}`);
    const report = parseHealthReport(body);
    if (typeof report === 'string') throw new Error(report);
    if (report.agent !== this.agentName) throw new Error(`health report names agent '${report.agent}'`);
    if (this.stopped) return;
    // The agent's clock may be off; keep its intervals, not its absolute times.
    const skewMs = Date.now() - Date.parse(report.now);
    const local = (iso: string | null): Date => new Date(iso === null ? Date.now() : Date.parse(iso) + skewMs);
    this.latest = report.targets;
    for (const t of report.targets) {
      if (t.state === 'unknown') continue;
      const previous = this.known.get(t.tunnel) ?? 'unknown';
      if (previous === t.state) continue;
      this.known.set(t.tunnel, t.state);
      const change: TargetHealthChange = {
        agent: this.agentName,
        tunnel: t.tunnel,
        state: t.state,
        previous,
        detail: t.detail,
        since: local(t.since),
        checkedAt: local(t.checkedAt),
      };
      try {
        this.onChange(change);
      } catch (err) {
        this.log?.error({ agent: this.agentName, err: errorMessage(err) }, 'health change handler failed');
      }
    }
  }

  private fetch(): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const stream = this.session.request({ ':method': 'GET', ':path': PATH_HEALTH }, { endStream: true });
      const chunks: Buffer[] = [];
      let size = 0;
      let status = 0;
      const fail = (err: Error): void => {
        clearTimeout(timer);
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error(`no health answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      stream.once('response', (headers) => {
        status = Number(headers[':status']);
      });
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > DEFAULTS.controlBodyMaxBytes) fail(new Error(`health answer longer than ${DEFAULTS.controlBodyMaxBytes} bytes`));
        else chunks.push(chunk);
      });
      stream.once('end', () => {
        clearTimeout(timer);
        resolve({ status, body: Buffer.concat(chunks).toString('utf8') });
      });
      stream.once('error', fail);
    });
  }
}
