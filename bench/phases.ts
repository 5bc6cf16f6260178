// The four measurement phases over a set of started peers: idle-stream memory, round trips,
// connection rate, throughput. Each fills its part of Results (best round shown, every round
// kept in `raw`) and never throws: a failed peer is recorded as failed and the run goes on.
// Owns: which measurement runs through which peer, with what settings. Must not: start peers.
import type { Peer } from './peer.ts';
import type { Results } from './results.ts';
import { measureCpu, type CpuMeasured } from './procfs.ts';
import { runIperf, type IperfResult } from './iperf.ts';
import { measureRtt } from './rtt.ts';
import { measureConnRate, type ConnRateResult } from './connrate.ts';
import { measureIdle } from './idle.ts';
import { attempt, bestOfRounds } from './rounds.ts';

type EchoPeer = Peer & { echoPort: number };

export const say = (line: string): void => void process.stderr.write(`bench: ${line}\n`);

function echoPeers(peers: Peer[]): EchoPeer[] {
  return peers.filter((p): p is EchoPeer => p.echoPort !== undefined);
}

export async function idleStreams(peers: Peer[], results: Results): Promise<void> {
  const n = results.settings.idleStreams;
  for (const p of echoPeers(peers)) {
    const middle = p.middle;
    if (!middle) continue;
    say(`${n} idle streams through ${p.label}`);
    const r = await attempt(() => measureIdle(p.echoPort, middle, n, 2_000), (m) => say(`idle streams failed: ${m}`));
    results.idle.push({ peer: p.key, label: p.label, middle: middle.name, ...r });
  }
}

export async function roundTrips(peers: Peer[], results: Results): Promise<void> {
  const s = results.settings;
  const runs = await bestOfRounds(
    echoPeers(peers),
    s.rttRounds,
    (p) => {
      say(`round trips through ${p.label}`);
      return attempt(() => measureRtt(p.echoPort, { size: s.rttSize, warmup: 200, count: s.rttCount }), (m) => say(`round trips failed: ${m}`));
    },
    (r) => -r.p50,
  );
  results.rtt = runs.map(({ peer, best }) => ({ peer: peer.key, label: peer.label, ...best }));
  results.raw.rtt = runs.map((r) => ({ peer: r.peer.key, rounds: r.all }));
}

export async function connectionRate(peers: Peer[], results: Results): Promise<void> {
  const s = results.settings;
  const runs = await bestOfRounds(
    echoPeers(peers),
    s.rounds,
    (p) => {
      say(`connection rate through ${p.label}`);
      const work = (): Promise<ConnRateResult> => measureConnRate(p.echoPort, { workers: s.connWorkers, seconds: s.connSeconds, size: 64 });
      return attempt(() => measureCpu(p.watched.echo, work), (m) => say(`connection rate failed: ${m}`));
    },
    (r) => r.result.perSecond,
  );
  results.connRate = runs.map(({ peer, best }) => {
    const m = best.result;
    const completed = m?.result.completed ?? 0;
    return {
      peer: peer.key,
      label: peer.label,
      result: m?.result,
      cpu: m?.cpu,
      ...(m && completed > 0 ? { cpuMsPerConn: (1000 * m.pathCpuSeconds) / completed } : {}),
      ...(best.error ? { error: best.error } : {}),
    };
  });
  results.raw.connRate = runs.map((r) => ({ peer: r.peer.key, rounds: r.all }));
}

async function iperfBothWays(p: Peer, seconds: number): Promise<{ up: CpuMeasured<IperfResult>; down: CpuMeasured<IperfResult> }> {
  say(`throughput through ${p.label}`);
  return { up: await measureIperf(p, seconds, false), down: await measureIperf(p, seconds, true) };
}

function measureIperf(p: Peer, seconds: number, reverse: boolean): Promise<CpuMeasured<IperfResult>> {
  return measureCpu(p.watched.iperf, () => runIperf(p.iperfPort, seconds, reverse));
}

function cpuPerGb(m: CpuMeasured<IperfResult>): number | undefined {
  return m.result.bytes ? m.pathCpuSeconds / (m.result.bytes / 1e9) : undefined;
}

function processCpuPerGb(m: CpuMeasured<IperfResult>): Record<string, number> {
  const gb = (m.result.bytes ?? 0) / 1e9;
  const out: Record<string, number> = {};
  if (gb === 0) return out;
  for (const [name, pct] of Object.entries(m.cpu)) if (!name.startsWith('bench')) out[name] = ((pct / 100) * m.wallSeconds) / gb;
  return out;
}

export async function throughput(peers: Peer[], results: Results): Promise<void> {
  const s = results.settings;
  const runs = await bestOfRounds(peers, s.rounds, async (p) => ({ result: await iperfBothWays(p, s.iperfSeconds) }), (t) => t.up.result.bps ?? 0);
  results.throughput = runs.map(({ peer, all }) => {
    const ok = all.flatMap((a) => (a.result ? [a.result] : []));
    const best = (dir: 'up' | 'down'): (typeof ok)[number]['up'] =>
      ok.map((o) => o[dir]).reduce((x, y) => ((y.result.bps ?? 0) > (x.result.bps ?? 0) ? y : x));
    const up = best('up');
    const down = best('down');
    return {
      peer: peer.key,
      label: peer.label,
      up: up.result,
      down: down.result,
      cpuUp: up.cpu,
      cpuDown: down.cpu,
      cpuPerGbUp: cpuPerGb(up),
      cpuPerGbDown: cpuPerGb(down),
      processCpuPerGbUp: processCpuPerGb(up),
    };
  });
  results.raw.throughput = runs.map((r) => ({ peer: r.peer.key, rounds: r.all }));
}
