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
  /** database relay: transactions per second through the relay / direct (pgbench -S, mysqlslap) */
  dbTpsVsDirect: 0.9,
  /** database relay: time to an authenticated session through the relay minus direct, ms */
  dbSetupOverheadMs: 1,
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
  /** db phase: rounds per path (paths interleaved, order reversed every other round) */
  dbRounds: number;
  /** db phase: pgbench -T, persistent and -C runs alike */
  pgbenchSeconds: number;
  /** db phase: mysqlslap --number-of-queries */
  mysqlslapQueries: number;
  /** db phase: sequential connect → SELECT 1 → close cycles per path and round (pg, mysql2) */
  dbSetupCycles: number;
  /** db phase: concurrent clients of pgbench (-c) and mysqlslap (--concurrency) */
  dbClients: number;
}

/** The two databases and the three ways the db phase reaches each of them. */
export type DbEngine = 'postgres' | 'mysql';
/** direct; two plain forwarders as peers (stone in C, a Node pipe); the relay's two listeners */
export type DbPathKey = 'direct' | 'stone' | 'node-pipe' | 'relay-tcp' | 'relay-unix';

/** One throughput run: pgbench -S (with or without -C) or mysqlslap. */
export interface DbTpsRun {
  tps: number;
  transactions: number;
  /** pgbench's "latency average" (ms); mysqlslap reports none */
  latencyMs?: number;
  /** pgbench -C: "average connection time" (ms) */
  connMs?: number;
  /** CPU seconds of the relay (and identd) per 1,000 transactions, by process */
  cpuMsPerKTx: Record<string, number>;
}

/** One round of sequential connect → SELECT 1 → close cycles through a driver (pg, mysql2). */
export interface DbSetupRun {
  /** time until the driver had an authenticated session, ms */
  connectMedianMs: number;
  connectMeanMs: number;
  connectP90Ms: number;
  /** the whole cycle (connect, SELECT 1, close), median ms */
  cycleMedianMs: number;
  cycles: number;
  /** CPU milliseconds per connection of the relay and identd, by process */
  cpuMsPerConn: Record<string, number>;
}

/** A measurement of one path over all rounds: the best round, the median, every round. */
export interface DbSeries<T> {
  best: T | undefined;
  /** median over the rounds of the figure the best is chosen by */
  median: number | undefined;
  rounds: Array<T | { error: string }>;
}

export interface DbPathRow {
  engine: DbEngine;
  path: DbPathKey;
  label: string;
  /** pgbench -S or mysqlslap, persistent connections (best = highest TPS) */
  tps: DbSeries<DbTpsRun>;
  /** pgbench -S -C: a new connection per transaction (best = highest TPS); PostgreSQL only */
  reconnect?: DbSeries<DbTpsRun>;
  /** driver loop (best = lowest median connect time) */
  setup: DbSeries<DbSetupRun>;
  /** sessions the relay logged as allowed / denied for this listener (relay paths) */
  relaySessions?: { allowed: number; denied: number };
}

export interface DbIdentTiming {
  medianMs: number;
  meanMs: number;
  p90Ms: number;
  count: number;
}

export interface DbPhaseLoadFigures {
  foreignMeanCores: number;
  foreignPeakCores: number;
  dbServersMeanCores: number;
  /** entries of /proc/net/tcp and tcp6 (every TCP socket of the host, TIME_WAIT included): what identd reads per lookup */
  tcpSocketsMean: number;
  tcpSocketsMax: number;
}

export interface DbResults {
  date: string;
  durationS: number;
  root: string;
  commit: string;
  settings: BenchSettings;
  /** versions of the clients and servers */
  tools: Record<string, string>;
  rows: DbPathRow[];
  /**
   * IDENT lookups from the bench to `warpstone identd` (connect, query, answer), ms, at the start
   * and at the end of the phase, with the host's TCP socket count at the time
   */
  ident: Array<{ when: 'start' | 'end'; tcpSockets: number; result: DbIdentTiming | { error: string } }>;
  /** cores busy with other work and with the two database servers, TCP sockets, during the db phase */
  load: DbPhaseLoadFigures | undefined;
  commands: Array<{ label: string; lines: string[] }>;
  warnings: string[];
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
  /** the db phase (pgbench, mysqlslap, driver loops through `warpstone dbrelay`), when it ran */
  db?: DbResults;
}
