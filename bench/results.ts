// The shape of one bench run's results: what run.ts collects, report.ts renders and
// bench/out/results.json keeps. Targets are the acceptance figures.
// Owns: result types and the targets. Must not: measure or render.
import type { PeerKey } from './peer.ts';
import type { IperfResult } from './iperf.ts';
import type { RttResult } from './rtt.ts';
import type { ConnRateResult } from './connrate.ts';
import type { IdleResult } from './idle.ts';
import type { MachineFacts } from './sysinfo.ts';

export const TARGETS = {
  /** warpstone single-stream throughput / ssh chain's, both directions */
  throughputVsSsh: 1.5,
  /** warpstone p50 round trip minus direct p50, microseconds */
  rttOverheadUs: 150,
  /** new tunnelled connections per second through warpstone connect */
  connPerSecond: 3000,
  /** relay resident memory per idle stream, KiB */
  kibPerIdleStream: 16,
} as const;

export type Cpu = Record<string, number>;

export interface PeerRow<T> {
  peer: PeerKey;
  label: string;
  result: T | undefined;
  error?: string;
  cpu?: Cpu;
  /** CPU milliseconds the path's processes spent per completed connection */
  cpuMsPerConn?: number;
}

export interface ThroughputRow {
  peer: PeerKey;
  label: string;
  up: IperfResult;
  down: IperfResult;
  cpuUp: Cpu;
  cpuDown: Cpu;
  /** CPU seconds the path's processes spent per GB carried (10^9 bytes), each direction */
  cpuPerGbUp: number | undefined;
  cpuPerGbDown: number | undefined;
  /** the same, process by process, client → server */
  processCpuPerGbUp: Record<string, number>;
}

export interface BenchSettings {
  /** each measurement runs this many times per peer, peers interleaved; the best run is shown */
  rounds: number;
  /** round trips are cheap and noisy: more rounds */
  rttRounds: number;
  iperfSeconds: number;
  rttCount: number;
  rttSize: number;
  connWorkers: number;
  connSeconds: number;
  idleStreams: number;
}

export interface Results {
  date: string;
  durationS: number;
  root: string;
  machine: MachineFacts;
  settings: BenchSettings;
  commands: Array<{ label: string; lines: string[] }>;
  throughput: ThroughputRow[];
  rtt: Array<PeerRow<RttResult>>;
  connRate: Array<PeerRow<ConnRateResult>>;
  idle: Array<PeerRow<IdleResult> & { middle: string }>;
  warnings: string[];
  /** cores kept busy by processes other than the bench's during the measurements */
  foreignLoad: { meanCores: number; peakCores: number } | undefined;
  /** every round of every measurement, for results.json */
  raw: Record<string, unknown>;
}
