// The db phase of `npm run bench`: the identity-aware database relay against talking to the
// database directly, in one run. Prepares a throw-away database `ws_bench` on PostgreSQL
// (pgbench -i -s 1) and MariaDB, starts `warpstone identd` and `warpstone dbrelay` (db-peer.ts),
// then measures every path in rounds, paths taking turns (order reversed every other round):
// pgbench -S with persistent connections, pgbench -S -C (a new connection per transaction),
// mysqlslap SELECT 1, and sequential driver connections (pg, mysql2) for the setup time; plus
// the IDENT lookup on its own. CPU of the relay and identd is read around every run. The
// databases are dropped at the end, on failure and on Ctrl-C too (through `addCleanup`).
// Never throws: what fails is recorded as failed (or as a warning) and the run goes on.
// Owns: the db phase's order and its results. Must not: render markdown.
import { execFileSync } from 'node:child_process';
import type { Procs } from './procs.ts';
import { runToEnd } from './procs.ts';
import { measureCpu, type Watched } from './procfs.ts';
import { say } from './phases.ts';
import { startDbRelay, DB_NAME, DB_USER, PG_DIRECT, MY_DIRECT, type DbPath, type DbRelayPeer } from './db-peer.ts';
import { mysqlslapArgs, pgbenchArgs, runMysqlslap, runPgbench, runSetupLoop, type ClientRun, type SetupLoop } from './db-clients.ts';
import { measureIdent } from './db-ident.ts';
import { DbPhaseLoad, tcpSockets } from './db-load.ts';
import type { BenchSettings, DbPathRow, DbResults, DbSeries, DbSetupRun, DbTpsRun } from './results.ts';

const PG_ADMIN = `host=${PG_DIRECT.host} port=${PG_DIRECT.port} user=${DB_USER} dbname=postgres sslmode=disable`;
const MY_ADMIN = ['--no-defaults', '--protocol=TCP', '-h', MY_DIRECT.host, '-P', String(MY_DIRECT.port), '-u', DB_USER];

export interface DbPhaseOptions {
  root: string;
  benchDir: string;
  dir: string;
  settings: BenchSettings;
  commit: string;
  /** registers a synchronous undo step that run.ts also runs after a failure or Ctrl-C */
  addCleanup: (task: () => void) => void;
}

type Outcome<T> = T | { error: string };
const failed = <T extends object>(o: Outcome<T>): o is { error: string } => 'error' in o;
const message = (err: unknown): string => ((err as Error).message ?? String(err)).split('\n')[0] ?? 'failed';

async function outcome<T>(what: string, work: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return await work();
  } catch (err) {
    say(`${what} failed: ${message(err)}`);
    return { error: message(err) };
  }
}

async function must(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await runToEnd(command, args, { timeoutMs: 120_000, ...(env ? { env } : {}) });
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}`);
  return r.stdout;
}

/** Checks the clients and both servers are there; returns their versions. */
async function preflight(): Promise<Record<string, string>> {
  const version = async (cmd: string, args: string[], pattern: RegExp): Promise<string> => (pattern.exec(await must(cmd, args))?.[0] ?? 'unknown').replace(/\s+/g, ' ');
  const missing: string[] = [];
  for (const [program, pkg] of [['pgbench', 'postgresql-client'], ['psql', 'postgresql-client'], ['mysqlslap', 'mariadb-client'], ['mariadb', 'mariadb-client']] as const) {
    if ((await runToEnd('bash', ['-c', `command -v ${program}`])).code !== 0) missing.push(pkg);
  }
  if (missing.length > 0) throw new Error(`missing programs; install them with: apt-get install -y ${[...new Set(missing)].join(' ')}`);
  return {
    pgbench: await version('pgbench', ['--version'], /pgbench \(PostgreSQL\) \S+/),
    mysqlslap: await version('mysqlslap', ['--version'], /mysqlslap\s+Ver \S+ Distrib \S+?(?=,|$)/m),
    postgres: `PostgreSQL ${(await must('psql', ['-X', '-w', '-At', PG_ADMIN, '-c', 'SHOW server_version'])).trim().split(' ')[0] ?? '?'}`,
    mariadb: `MariaDB ${(await must('mariadb', [...MY_ADMIN, '-N', '-B', '-e', 'SELECT VERSION()'])).trim()}`,
  };
}

/** Drops the bench's databases; synchronous so it can run from a signal handler. Idempotent. */
function dropDatabases(): void {
  const quiet = { stdio: 'ignore' as const, timeout: 30_000 };
  try {
    execFileSync('psql', ['-X', '-w', '-q', PG_ADMIN, '-c', `DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`], quiet);
  } catch {
    say(`could not drop PostgreSQL database ${DB_NAME}; drop it by hand`);
  }
  try {
    execFileSync('mariadb', [...MY_ADMIN, '-e', `DROP DATABASE IF EXISTS ${DB_NAME}`], quiet);
  } catch {
    say(`could not drop MariaDB database ${DB_NAME}; drop it by hand`);
  }
}

async function prepareDatabases(): Promise<void> {
  dropDatabases();
  await must('psql', ['-X', '-w', '-q', PG_ADMIN, '-c', `CREATE DATABASE ${DB_NAME}`]);
  await must('pgbench', ['-h', PG_DIRECT.host, '-p', String(PG_DIRECT.port), '-U', DB_USER, '-i', '-s', '1', '-q', DB_NAME], { ...process.env, PGSSLMODE: 'disable' });
  await must('mariadb', [...MY_ADMIN, '-e', `CREATE DATABASE ${DB_NAME}`]);
}

/** CPU seconds of each watched process during a measured run. */
function cpuSecondsOf(cpu: Record<string, number>, watched: Watched[], wallSeconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const w of watched) out[w.name] = ((cpu[w.name] ?? 0) / 100) * wallSeconds;
  return out;
}

async function tpsRun(p: DbPath, run: () => Promise<ClientRun>): Promise<DbTpsRun> {
  const m = await measureCpu(p.watched, run);
  const perTx = 1e6 / Math.max(1, m.result.transactions); // CPU s → ms per 1,000 transactions
  const cpuMsPerKTx = Object.fromEntries(Object.entries(cpuSecondsOf(m.cpu, p.watched, m.wallSeconds)).map(([k, v]) => [k, v * perTx]));
  return { ...m.result, cpuMsPerKTx };
}

async function setupRun(p: DbPath, cycles: number): Promise<DbSetupRun> {
  const m = await measureCpu(p.watched, (): Promise<SetupLoop> => runSetupLoop(p.engine, p.target, cycles));
  const cpuMsPerConn = Object.fromEntries(Object.entries(cpuSecondsOf(m.cpu, p.watched, m.wallSeconds)).map(([k, v]) => [k, (1000 * v) / cycles]));
  return { ...m.result, cpuMsPerConn };
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Best round (highest `score`) and the median of `figure` over the rounds that worked. */
function series<T extends object>(rounds: Array<Outcome<T>>, figure: (t: T) => number, higherIsBetter: boolean): DbSeries<T> {
  const ok = rounds.filter((r): r is T => !failed(r));
  const best = ok.length === 0 ? undefined : ok.reduce((a, b) => ((higherIsBetter ? figure(b) > figure(a) : figure(b) < figure(a)) ? b : a));
  return { best, median: median(ok.map(figure)), rounds };
}

/** Sessions the relay allowed and denied per listener, from its log (one line per decision). */
function relaySessions(log: string): Map<string, { allowed: number; denied: number }> {
  const out = new Map<string, { allowed: number; denied: number }>();
  for (const line of log.split('\n')) {
    if (!line.includes('"decision":')) continue;
    try {
      const e = JSON.parse(line) as { listener?: string; decision?: string };
      if (!e.listener) continue;
      const c = out.get(e.listener) ?? { allowed: 0, denied: 0 };
      if (e.decision === 'allow') c.allowed += 1;
      else c.denied += 1;
      out.set(e.listener, c);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

/** Warnings and errors the relay and identd logged (minus the expected "running as root"). */
function logProblems(procs: Procs, peer: DbRelayPeer): string[] {
  const out: string[] = [];
  for (const p of [peer.relay, peer.identd]) {
    const lines = procs
      .log(p)
      .split('\n')
      .filter((l) => /"level":"(warn|error|fatal)"/.test(l) && !/running as root/.test(l));
    if (lines.length > 0) out.push(`${p.name} logged ${lines.length} warning(s)/error(s) during the db phase, the first: ${lines[0]?.slice(0, 300) ?? ''}`);
  }
  return out;
}

function commandsFor(peer: DbRelayPeer, s: BenchSettings): DbResults['commands'] {
  const pgTargets = '# -h/-p: 127.0.0.1 5432 (direct), 127.0.0.1 PG_STONE, 127.0.0.1 PG_PIPE, 127.0.0.1 PG_RELAY (dbrelay, IDENT), SOCKDIR 5432 (dbrelay, UNIX socket)';
  const symbolicPg = { kind: 'tcp' as const, host: 'HOST', port: 0 };
  const pgbench = (reconnect: boolean): string =>
    `PGSSLMODE=disable pgbench ${pgbenchArgs(symbolicPg, { clients: s.dbClients, seconds: s.pgbenchSeconds, reconnect }).join(' ').replace('-h HOST -p 0', '-h HOST -p PORT')}`;
  const slap = mysqlslapArgs({ kind: 'tcp', host: 'HOST', port: 0 }, { clients: s.dbClients, queries: s.mysqlslapQueries })
    .map((a) => (a === '--query=SELECT 1' ? '--query="SELECT 1"' : a))
    .join(' ')
    .replace('-h HOST -P 0', '-h 127.0.0.1 -P PORT');
  return [
    { label: `The relay and its peers (dbrelay started ${peer.via === 'cli' ? 'with the CLI' : `through ${peer.via}, while src/cli/main.ts does not register the command`})`, lines: peer.commands },
    {
      label: 'Databases (dropped at the end)',
      lines: [
        `psql -X -w "${PG_ADMIN}" -c "CREATE DATABASE ${DB_NAME}"`,
        `PGSSLMODE=disable pgbench -h 127.0.0.1 -p 5432 -U ${DB_USER} -i -s 1 -q ${DB_NAME}`,
        `mariadb ${MY_ADMIN.join(' ')} -e "CREATE DATABASE ${DB_NAME}"`,
      ],
    },
    {
      label: 'Clients, for each path',
      lines: [
        `${pgbench(false)}   ${pgTargets}`,
        `${pgbench(true)}   # a new connection per transaction (direct and dbrelay only)`,
        `mysqlslap ${slap}   # PORT: 3306 (direct), MY_STONE, MY_PIPE, MY_RELAY (dbrelay, IDENT); or --protocol=SOCKET -S SOCKDIR/mysql.sock`,
        `# setup: ${s.dbSetupCycles} × (pg.Client / mysql2 createConnection → SELECT 1 → end), one after the other, user ${DB_USER}, database ${DB_NAME}, no TLS (bench/db-clients.ts)`,
      ],
    },
  ];
}

export async function databaseRelayPhase(procs: Procs, o: DbPhaseOptions): Promise<DbResults> {
  const started = Date.now();
  const s = o.settings;
  const results: DbResults = {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    durationS: 0,
    root: o.root,
    commit: o.commit,
    settings: s,
    tools: {},
    rows: [],
    ident: [],
    load: undefined,
    commands: [],
    warnings: [],
  };
  let prepared = false;
  try {
    results.tools = await preflight();
    say(`db: creating database ${DB_NAME} (pgbench -i -s 1) on PostgreSQL and MariaDB`);
    o.addCleanup(dropDatabases);
    prepared = true;
    await prepareDatabases();
    say('db: starting warpstone identd and warpstone dbrelay');
    const peer = await startDbRelay(procs, o.root, o.benchDir, o.dir);
    if (peer.via !== 'cli') results.warnings.push(`the measured tree's src/cli/main.ts does not register \`dbrelay\`: the relay ran through ${peer.via}, the same command with the same setup`);
    results.commands = commandsFor(peer, s);
    await measure(peer, s, results);
    const sessions = relaySessions(procs.log(peer.relay));
    for (const row of results.rows) {
      const listener = peer.paths.find((p) => p.engine === row.engine && p.key === row.path)?.listener;
      if (listener) row.relaySessions = sessions.get(listener) ?? { allowed: 0, denied: 0 };
      if (row.relaySessions && row.relaySessions.denied > 0) results.warnings.push(`${row.label}: the relay denied ${row.relaySessions.denied} session(s)`);
    }
    results.warnings.push(...logProblems(procs, peer));
  } catch (err) {
    say(`db phase failed: ${message(err)}`);
    results.warnings.push(`the db phase failed: ${message(err)}`);
  } finally {
    if (prepared) dropDatabases();
  }
  results.durationS = (Date.now() - started) / 1000;
  return results;
}

async function measure(peer: DbRelayPeer, s: BenchSettings, results: DbResults): Promise<void> {
  const paths = peer.paths;
  say('db: warm-up (20 connections per path)');
  for (const p of paths) {
    const w = await outcome(`warm-up through ${p.label}`, () => runSetupLoop(p.engine, p.target, 20));
    if (failed(w)) results.warnings.push(`warm-up through ${p.label} failed: ${w.error}`);
  }
  const load = new DbPhaseLoad();
  load.start();
  // IDENT on its own, before and after the rounds: the connection churn of the rounds leaves
  // TIME_WAIT sockets that every lookup reads through
  const identRun = async (when: 'start' | 'end'): Promise<void> => {
    say(`db: IDENT lookups on their own (${when})`);
    const sockets = tcpSockets();
    results.ident.push({ when, tcpSockets: sockets, result: await outcome('IDENT lookups', () => measureIdent(peer.identdPort, Math.max(50, s.dbSetupCycles))) });
  };
  await identRun('start');

  const tps = new Map<DbPath, Array<Outcome<DbTpsRun>>>(paths.map((p) => [p, []]));
  const reconnect = new Map<DbPath, Array<Outcome<DbTpsRun>>>(paths.map((p) => [p, []]));
  const setup = new Map<DbPath, Array<Outcome<DbSetupRun>>>(paths.map((p) => [p, []]));
  const pgPaths = paths.filter((p) => p.engine === 'postgres');
  const myPaths = paths.filter((p) => p.engine === 'mysql');
  for (let round = 0; round < s.dbRounds; round++) {
    const order = <T>(list: T[]): T[] => (round % 2 === 1 ? [...list].reverse() : list);
    const tag = `(round ${round + 1}/${s.dbRounds})`;
    for (const p of order(pgPaths)) {
      say(`db: pgbench -S through ${p.label} ${tag}`);
      tps.get(p)?.push(await outcome('pgbench -S', () => tpsRun(p, () => runPgbench(p.target, { clients: s.dbClients, seconds: s.pgbenchSeconds, reconnect: false }))));
    }
    // -C measures the relay's connection setup under load; the plain forwarders add nothing to it
    for (const p of order(pgPaths.filter((x) => x.key === 'direct' || x.key.startsWith('relay')))) {
      say(`db: pgbench -S -C through ${p.label} ${tag}`);
      reconnect.get(p)?.push(await outcome('pgbench -S -C', () => tpsRun(p, () => runPgbench(p.target, { clients: s.dbClients, seconds: s.pgbenchSeconds, reconnect: true }))));
    }
    for (const p of order(myPaths)) {
      say(`db: mysqlslap through ${p.label} ${tag}`);
      tps.get(p)?.push(await outcome('mysqlslap', () => tpsRun(p, () => runMysqlslap(p.target, { clients: s.dbClients, queries: s.mysqlslapQueries }))));
    }
    for (const p of order(paths)) {
      say(`db: ${s.dbSetupCycles} connections one by one through ${p.label} ${tag}`);
      setup.get(p)?.push(await outcome('connection setup', () => setupRun(p, s.dbSetupCycles)));
    }
  }
  await identRun('end');
  results.load = load.stop();
  if (results.load.foreignMeanCores > 0.25) {
    results.warnings.push(
      `other processes kept ${results.load.foreignMeanCores.toFixed(2)} cores busy on average (peak ${results.load.foreignPeakCores.toFixed(2)}) during the db phase: figures are lower and noisier than on a quiet machine`,
    );
  }
  results.rows = paths.map(
    (p): DbPathRow => ({
      engine: p.engine,
      path: p.key,
      label: p.label,
      tps: series(tps.get(p) ?? [], (r) => r.tps, true),
      ...((reconnect.get(p) ?? []).length > 0 ? { reconnect: series(reconnect.get(p) ?? [], (r) => r.tps, true) } : {}),
      setup: series(setup.get(p) ?? [], (r) => r.connectMedianMs, false),
    }),
  );
}
