// `npm run bench`: builds warpstone, starts every peer (direct, warpstone, the ssh chain, stone
// SSL pairs) on loopback, measures idle-stream memory, round trips, connection rate and
// throughput through each of them in one run, and the database relay against direct database
// access (phase db, db-phase.ts), then writes the results sections of docs/BENCHMARKS.md (and
// bench/out/results.json) and prints them. Every process and temporary file is removed at the
// end, on failure and on Ctrl-C too.
// Flags: --quick (short runs), --no-build, --keep (keep logs), --only idle,rtt,conn,tput,db (some
// phases), --root DIR (measure another checkout), --doc FILE (where to write the results). The
// doc has one block for the forwarding phases and one for db; a run rewrites the blocks of the
// phases it ran and leaves the other alone.
// Owns: the order of the run and cleanup. Must not: hold measurement or rendering logic.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Procs, runToEnd } from './procs.ts';
import { ForeignLoad } from './procfs.ts';
import { startServices, type Services } from './services.ts';
import { startWarpstone, type WarpstonePeer } from './warpstone-peer.ts';
import { startSshChain } from './ssh-peer.ts';
import { startStonePair, stoneMaterial } from './stone-peer.ts';
import { iperfArgs } from './iperf.ts';
import { idleStreams, roundTrips, connectionRate, throughput, say } from './phases.ts';
import { checkTools, machineFacts } from './sysinfo.ts';
import { renderResults, writeDoc, writeDbDoc } from './report.ts';
import { renderDbResults } from './db-report.ts';
import { databaseRelayPhase } from './db-phase.ts';
import type { Peer } from './peer.ts';
import type { BenchSettings, Results } from './results.ts';

const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(BENCH_DIR, '..');

interface Options {
  quick: boolean;
  build: boolean;
  root: string;
  doc: string;
  /** keep the temporary directory (logs of every process) for debugging */
  keep: boolean;
  /** phases to run (default all) */
  only: Set<Phase>;
}

const PHASES = ['idle', 'rtt', 'conn', 'tput', 'db'] as const;
type Phase = (typeof PHASES)[number];
/** the phases measured through the forwarding peers (direct, warpstone, ssh chain, stone) */
const FORWARDING_PHASES: readonly Phase[] = ['idle', 'rtt', 'conn', 'tput'];
const runsForwarding = (only: Set<Phase>): boolean => FORWARDING_PHASES.some((p) => only.has(p));

function parsePhases(list: string): Set<Phase> {
  const phases = list.split(',').map((p) => p.trim());
  const bad = phases.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (bad.length > 0) throw new Error(`--only: unknown phase(s) ${bad.join(', ')}; phases: ${PHASES.join(', ')}`);
  return new Set(phases as Phase[]);
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { quick: false, build: true, root: REPO, doc: join(REPO, 'docs', 'BENCHMARKS.md'), keep: false, only: new Set(PHASES) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') opts.quick = true;
    else if (a === '--no-build') opts.build = false;
    else if (a === '--keep') opts.keep = true;
    else if (a === '--only') opts.only = parsePhases(argv[++i] ?? '');
    else if (a === '--root') opts.root = resolve(argv[++i] ?? '.');
    else if (a === '--doc') opts.doc = resolve(argv[++i] ?? 'BENCHMARKS.md');
    else throw new Error(`unknown argument '${a ?? ''}'; flags: --quick --no-build --keep --only idle,rtt,conn,tput,db --root DIR --doc FILE`);
  }
  return opts;
}

const DB_QUICK = { dbRounds: 1, pgbenchSeconds: 2, mysqlslapQueries: 40_000, dbSetupCycles: 50, dbClients: 4 };
const DB_FULL = { dbRounds: 3, pgbenchSeconds: 5, mysqlslapQueries: 200_000, dbSetupCycles: 200, dbClients: 4 };

function settingsFor(quick: boolean): BenchSettings {
  return quick
    ? { rounds: 1, rttRounds: 1, iperfSeconds: 2, rttCount: 500, rttSize: 64, connWorkers: 64, connSeconds: 2, idleStreams: 1000, ...DB_QUICK }
    : { rounds: 2, rttRounds: 5, iperfSeconds: 3, rttCount: 2000, rttSize: 64, connWorkers: 64, connSeconds: 3, idleStreams: 5000, ...DB_FULL };
}

async function build(root: string, warnings: string[]): Promise<void> {
  say(`building ${root} (tsc -p tsconfig.json)`);
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = await runToEnd(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, timeoutMs: 180_000 });
  if (r.code === 0) return;
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) throw new Error(`build failed:\n${r.stdout}${r.stderr}`);
  const first = (r.stdout + r.stderr).trim().split('\n')[0] ?? '';
  warnings.push(`the build reported type errors (dist/ was emitted anyway and measured): ${first}`);
  say(`warning: build reported errors, measuring the emitted dist/ anyway: ${first}`);
}

/** Undo steps outside the temporary directory (e.g. sshd's privilege-separation directory). */
const cleanupTasks: Array<() => void> = [];

/** Relay-log lines that mean the agent link or a client session dropped during the run. */
function linkDrops(procs: Procs, ws: WarpstonePeer): string[] {
  const log = procs.log(ws.relay);
  const offline = (log.match(/"msg":"agent offline"/g) ?? []).length;
  const handshake = (log.match(/"code":"WS_HANDSHAKE"/g) ?? []).length;
  const out: string[] = [];
  if (offline > 0) out.push(`the relay logged "agent offline" ${offline} time(s) during the run: the agent link dropped and warpstone figures may include reconnects`);
  if (handshake > 0) out.push(`the relay refused ${handshake} connection(s) with WS_HANDSHAKE during the run (every connection the bench makes completes its handshake)`);
  return out;
}

async function measureAll(procs: Procs, opts: Options, dir: string, results: Results): Promise<void> {
  if (runsForwarding(opts.only)) await measureForwarding(procs, opts, dir, results);
  if (opts.only.has('db')) {
    results.db = await databaseRelayPhase(procs, {
      root: opts.root,
      benchDir: BENCH_DIR,
      dir,
      settings: results.settings,
      commit: results.machine.commit,
      addCleanup: (task) => cleanupTasks.push(task),
    });
  }
}

async function measureForwarding(procs: Procs, opts: Options, dir: string, results: Results): Promise<void> {
  const s = results.settings;
  const services: Services = await startServices(procs, BENCH_DIR, REPO);
  const direct: Peer = {
    key: 'direct',
    label: 'direct',
    iperfPort: services.iperfPort,
    echoPort: services.echoPort,
    commands: services.commands,
    // no forwarder on this path: CPU columns show only the bench's own load generator
    watched: { iperf: [], echo: [] },
  };
  say('starting warpstone relay, agent and connect');
  const ws = await startWarpstone(procs, opts.root, dir, services);
  say('starting sshd, ssh -R and ssh -L');
  const ssh = await startSshChain(procs, dir, services, (task) => cleanupTasks.push(task));
  say('starting stone SSL pairs');
  const material = stoneMaterial(join(dir, 'warpstone-home'), dir);
  const stone = await startStonePair(procs, services, material, undefined);
  const stone16k = await startStonePair(procs, services, material, 16384);
  const peers = [direct, ws, ssh, stone, stone16k];
  results.commands = [
    { label: 'Services (the "direct" peer)', lines: services.commands },
    ...[ws, ssh, stone, stone16k].map((p) => ({ label: p.label, lines: p.commands })),
    { label: 'Throughput client, for each path (PORT = its local port)', lines: [`iperf3 ${iperfArgs(0, s.iperfSeconds, false).join(' ').replace('-p 0', '-p PORT')}   # and again with -R`] },
  ];

  const foreign = new ForeignLoad();
  foreign.start();
  // memory first: a relay whose heap already grew for other work hides part of each stream's cost
  if (opts.only.has('idle')) await idleStreams([ws, ssh], results);
  if (opts.only.has('rtt')) await roundTrips(peers, results);
  if (opts.only.has('conn')) await connectionRate(peers, results);
  if (opts.only.has('tput')) await throughput(peers, results);
  results.foreignLoad = foreign.stop();
  if (results.foreignLoad.meanCores > 0.25) {
    results.warnings.push(
      `other processes kept ${results.foreignLoad.meanCores.toFixed(2)} cores busy on average (peak ${results.foreignLoad.peakCores.toFixed(2)}) while the bench measured: figures are lower and noisier than on a quiet machine`,
    );
  }
  results.warnings.push(...linkDrops(procs, ws));
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = Date.now();
  if (runsForwarding(opts.only)) await checkTools();
  const results: Results = {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    durationS: 0,
    root: opts.root,
    machine: await machineFacts(opts.root),
    settings: settingsFor(opts.quick),
    commands: [],
    throughput: [],
    rtt: [],
    connRate: [],
    idle: [],
    warnings: [],
    foreignLoad: undefined,
    raw: {},
  };
  if (opts.build) await build(opts.root, results.warnings);
  if (!existsSync(join(opts.root, 'dist', 'cli', 'main.js'))) results.warnings.push('dist/ is not built: warpstone ran from source through tsx');
  const dir = mkdtempSync(join(tmpdir(), 'warpstone-bench-'));
  const procs = new Procs(dir);
  const cleanup = async (): Promise<void> => {
    await procs.stopAll();
    for (const task of cleanupTasks.splice(0)) {
      try {
        task();
      } catch {
        // best effort
      }
    }
    if (opts.keep) say(`kept the logs in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    say(`${sig}: stopping`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await measureAll(procs, opts, dir, results);
  } finally {
    await cleanup();
  }
  results.durationS = (Date.now() - startedAt) / 1000;
  const printed: string[] = [];
  if (runsForwarding(opts.only)) {
    const section = renderResults(results);
    writeDoc(opts.doc, section);
    printed.push(section);
  }
  if (results.db) {
    const section = renderDbResults(results.db, results.machine);
    writeDbDoc(opts.doc, section);
    printed.push(section);
  }
  const outDir = join(BENCH_DIR, 'out');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(printed.join('\n'));
  say(`wrote ${opts.doc} and ${join(outDir, 'results.json')}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
