// Markdown for the db phase: the verdict against the issue's database-relay targets (relay TPS
// against direct TPS, connection setup time through the relay minus direct), then the throughput,
// reconnect and setup tables, the IDENT lookup on its own and the commands. It becomes its own
// marked block of docs/BENCHMARKS.md (report.ts writes it), so `--only db` leaves the other
// phases' figures alone and the other phases leave these.
// Owns: the db phase's markdown. Must not: measure.
import type { DbEngine, DbPathKey, DbPathRow, DbResults, DbSeries, DbTpsRun } from './results.ts';
import { TARGETS } from './results.ts';
import type { MachineFacts } from './sysinfo.ts';
import { int, ratio, verdict } from './stats.ts';

const ENGINES: DbEngine[] = ['postgres', 'mysql'];
const RELAY_PATHS: DbPathKey[] = ['relay-tcp', 'relay-unix'];
const PATH_WORDS: Record<DbPathKey, string> = {
  direct: 'direct',
  stone: 'stone',
  'node-pipe': 'Node pipe',
  'relay-tcp': 'dbrelay, TCP + IDENT',
  'relay-unix': 'dbrelay, UNIX socket + SO_PEERCRED',
};
const isRelay = (key: DbPathKey): boolean => key === 'relay-tcp' || key === 'relay-unix';
const BENCHMARK: Record<DbEngine, string> = { postgres: 'pgbench -S', mysql: 'mysqlslap SELECT 1' };
const SETUP_CLIENT: Record<DbEngine, string> = { postgres: 'pg', mysql: 'mysql2' };

const ms = (v: number | undefined, digits = 2): string => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(digits)} ms`);
const signedMs = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(2)} ms`);
const diff = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a - b);

function rowOf(db: DbResults, engine: DbEngine, path: DbPathKey): DbPathRow | undefined {
  return db.rows.find((r) => r.engine === engine && r.path === path);
}

function firstError<T>(s: DbSeries<T> | undefined): string {
  const e = s?.rounds.find((r): r is { error: string } => typeof r === 'object' && r !== null && 'error' in r);
  return e ? `failed: ${e.error}` : 'n/a';
}

function cpuText(map: Record<string, number> | undefined, unit: string): string {
  if (!map || Object.keys(map).length === 0) return '–';
  return Object.entries(map)
    .sort((a, b) => b[1] - a[1])
    .map(([name, v]) => `${name} ${v.toFixed(v >= 10 ? 0 : 2)} ${unit}`)
    .join(', ');
}

/** The lowest pgbench "average connection time" over the rounds of a -C series. */
function lowestConnMs(s: DbSeries<DbTpsRun> | undefined): number | undefined {
  const values = (s?.rounds ?? []).flatMap((r) => ('connMs' in r && r.connMs !== undefined ? [r.connMs] : []));
  return values.length > 0 ? Math.min(...values) : undefined;
}

function medianConnMs(s: DbSeries<DbTpsRun> | undefined): number | undefined {
  const values = (s?.rounds ?? []).flatMap((r) => ('connMs' in r && r.connMs !== undefined ? [r.connMs] : [])).sort((a, b) => a - b);
  if (values.length === 0) return undefined;
  const mid = Math.floor(values.length / 2);
  return values.length % 2 === 1 ? values[mid] : ((values[mid - 1] as number) + (values[mid] as number)) / 2;
}

function tpsRatio(db: DbResults, engine: DbEngine, path: DbPathKey): { best: number | undefined; median: number | undefined } {
  const relay = rowOf(db, engine, path)?.tps;
  const direct = rowOf(db, engine, 'direct')?.tps;
  const r = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined || b === 0 ? undefined : a / b);
  return { best: r(relay?.best?.tps, direct?.best?.tps), median: r(relay?.median, direct?.median) };
}

function setupOverhead(db: DbResults, engine: DbEngine, path: DbPathKey): { best: number | undefined; median: number | undefined } {
  const relay = rowOf(db, engine, path)?.setup;
  const direct = rowOf(db, engine, 'direct')?.setup;
  return { best: diff(relay?.best?.connectMedianMs, direct?.best?.connectMedianMs), median: diff(relay?.median, direct?.median) };
}

function targetsTable(db: DbResults): string[] {
  const lines = ['| Target (from the issue) | Path | PostgreSQL | MariaDB | Verdict |', '|---|---|---|---|---|'];
  for (const path of RELAY_PATHS) {
    const cells = ENGINES.map((e) => {
      const q = tpsRatio(db, e, path);
      const relay = rowOf(db, e, path)?.tps.best?.tps;
      const direct = rowOf(db, e, 'direct')?.tps.best?.tps;
      if (q.best === undefined) return `${BENCHMARK[e]}: ${firstError(rowOf(db, e, path)?.tps)}`;
      const stone = tpsRatio(db, e, 'stone').best;
      return (
        `${BENCHMARK[e]}: ${q.best.toFixed(2)}× (${int(relay ?? 0)} / ${int(direct ?? 0)} TPS; median ${q.median === undefined ? 'n/a' : `${q.median.toFixed(2)}×`}); ` +
        `a plain forwarder in C (stone): ${stone === undefined ? 'n/a' : `${stone.toFixed(2)}×`}`
      );
    });
    const ratios = ENGINES.map((e) => tpsRatio(db, e, path).best);
    const met = ratios.some((x) => x === undefined) ? undefined : ratios.every((x) => (x as number) >= TARGETS.dbTpsVsDirect);
    lines.push(`| ≥ ${TARGETS.dbTpsVsDirect}× direct TPS | ${PATH_WORDS[path]} | ${cells.join(' | ')} | ${verdict(met)} |`);
  }
  for (const path of RELAY_PATHS) {
    const cells = ENGINES.map((e) => {
      const o = setupOverhead(db, e, path);
      if (o.best === undefined) return `${SETUP_CLIENT[e]}: ${firstError(rowOf(db, e, path)?.setup)}`;
      return `${SETUP_CLIENT[e]}: ${signedMs(o.best)} (median ${signedMs(o.median)})`;
    });
    const overheads = ENGINES.map((e) => setupOverhead(db, e, path).best);
    const met = overheads.some((x) => x === undefined) ? undefined : overheads.every((x) => (x as number) <= TARGETS.dbSetupOverheadMs);
    lines.push(`| connection setup overhead ≤ ${TARGETS.dbSetupOverheadMs} ms | ${PATH_WORDS[path]} | ${cells.join(' | ')} | ${verdict(met)} |`);
  }
  return lines;
}

function throughputTable(db: DbResults): string[] {
  const s = db.settings;
  const lines = [
    `### Throughput (${s.dbClients} clients on persistent connections: \`pgbench -S -T ${s.pgbenchSeconds}\`, \`mysqlslap --number-of-queries=${int(s.mysqlslapQueries)}\`)`,
    '',
    `| Path | benchmark | TPS (best round) | TPS (median) | vs direct, best (median) | target ≥ ${TARGETS.dbTpsVsDirect}× | vs stone, best (median) | pgbench latency average | CPU per 1,000 transactions |`,
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const e of ENGINES) {
    const direct = rowOf(db, e, 'direct')?.tps;
    const stone = rowOf(db, e, 'stone')?.tps;
    for (const row of db.rows.filter((r) => r.engine === e)) {
      const t = row.tps;
      if (!t.best) {
        lines.push(`| ${row.label} | ${BENCHMARK[e]} | ${firstError(t)} | | | | | | |`);
        continue;
      }
      const q = tpsRatio(db, e, row.path);
      const target = !isRelay(row.path) ? '–' : verdict(q.best === undefined ? undefined : q.best >= TARGETS.dbTpsVsDirect);
      lines.push(
        `| ${row.label} | ${BENCHMARK[e]} | ${int(t.best.tps)} | ${t.median === undefined ? 'n/a' : int(t.median)} | ${ratio(t.best.tps, direct?.best?.tps)} (${ratio(t.median, direct?.median)}) | ${target} | ` +
          `${ratio(t.best.tps, stone?.best?.tps)} (${ratio(t.median, stone?.median)}) | ` +
          `${t.best.latencyMs === undefined ? '–' : ms(t.best.latencyMs, 3)} | ${cpuText(t.best.cpuMsPerKTx, 'CPU-ms')} |`,
      );
    }
  }
  return lines;
}

function reconnectTable(db: DbResults): string[] {
  const s = db.settings;
  const direct = rowOf(db, 'postgres', 'direct')?.reconnect;
  const lines = [
    `### A new connection per transaction (\`pgbench -S -C\`, ${s.dbClients} clients, ${s.pgbenchSeconds} s)`,
    '',
    '| Path | TPS (best round) | TPS (median) | vs direct | pgbench "average connection time", lowest (median) | − direct, lowest (median) | CPU per connection |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const row of db.rows.filter((r) => r.engine === 'postgres' && r.reconnect)) {
    const c = row.reconnect;
    if (!c?.best) {
      lines.push(`| ${row.label} | ${firstError(c)} | | | | | |`);
      continue;
    }
    const low = lowestConnMs(c);
    const med = medianConnMs(c);
    const delta = row.path === 'direct' ? '–' : `${signedMs(diff(low, lowestConnMs(direct)))} (${signedMs(diff(med, medianConnMs(direct)))})`;
    lines.push(
      `| ${row.label} | ${int(c.best.tps)} | ${c.median === undefined ? 'n/a' : int(c.median)} | ${ratio(c.best.tps, direct?.best?.tps)} | ${ms(low)} (${ms(med)}) | ${delta} | ${cpuText(perConnection(c.best.cpuMsPerKTx), 'ms')} |`,
    );
  }
  return lines;
}

/** With -C every transaction is a connection: CPU-ms per 1,000 transactions → ms per connection. */
function perConnection(perKTx: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(perKTx).map(([k, v]) => [k, v / 1000]));
}

function setupTable(db: DbResults): string[] {
  const s = db.settings;
  const lines = [
    `### Connection setup (${int(s.dbSetupCycles)} connections one after the other: connect until authenticated, SELECT 1, close)`,
    '',
    `| Path | driver | connect, median (best round) | median over rounds | mean | p90 | − direct, best (median) | target ≤ ${TARGETS.dbSetupOverheadMs} ms | whole cycle, median | CPU per connection | sessions the relay allowed / denied (all runs) |`,
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const row of db.rows) {
    const b = row.setup.best;
    if (!b) {
      lines.push(`| ${row.label} | ${SETUP_CLIENT[row.engine]} | ${firstError(row.setup)} | | | | | | | | |`);
      continue;
    }
    const o = setupOverhead(db, row.engine, row.path);
    const delta = row.path === 'direct' ? '–' : `${signedMs(o.best)} (${signedMs(o.median)})`;
    const target = !isRelay(row.path) ? '–' : verdict(o.best === undefined ? undefined : o.best <= TARGETS.dbSetupOverheadMs);
    const sessions = row.relaySessions ? `${int(row.relaySessions.allowed)} / ${int(row.relaySessions.denied)}` : '–';
    lines.push(
      `| ${row.label} | ${SETUP_CLIENT[row.engine]} | ${ms(b.connectMedianMs)} | ${ms(row.setup.median)} | ${ms(b.connectMeanMs)} | ${ms(b.connectP90Ms)} | ${delta} | ${target} | ${ms(b.cycleMedianMs)} | ${cpuText(b.cpuMsPerConn, 'ms')} | ${sessions} |`,
    );
  }
  const split = ENGINES.map((e) => {
    const best = (k: DbPathKey): number | undefined => rowOf(db, e, k)?.setup.best?.connectMedianMs;
    return `${e === 'postgres' ? 'PostgreSQL' : 'MariaDB'}: the relay itself (UNIX listener − direct) ${signedMs(diff(best('relay-unix'), best('direct')))}, IDENT (TCP listener − UNIX listener) ${signedMs(diff(best('relay-tcp'), best('relay-unix')))}`;
  });
  lines.push('', `Where the setup overhead goes (best rounds): ${split.join('; ')}.`);
  return lines;
}

function identLine(db: DbResults): string[] {
  if (db.ident.length === 0) return [];
  const parts = db.ident.map(({ when, tcpSockets, result }) =>
    'error' in result
      ? `at the ${when}: failed: ${result.error}`
      : `at the ${when} of the phase (${int(tcpSockets)} TCP sockets on the host): median ${ms(result.medianMs)}, mean ${ms(result.meanMs)}, p90 ${ms(result.p90Ms)} over ${int(result.count)} lookups`,
  );
  return [`IDENT on its own, as the TCP listeners ask it for every client (a new connection to \`warpstone identd\`, one query, the answer): ${parts.join('; ')}.`];
}

function factsLines(db: DbResults, machine: MachineFacts): string[] {
  const load = db.load;
  return [
    `Run on **${db.date}** (${db.durationS.toFixed(0)} s) of \`${db.root}\` at commit ${db.commit}; ${machine.nproc} cores, ${machine.cpu}, Node ${machine.node}; ` +
      `${Object.values(db.tools).join(', ')}.`,
    '',
    load
      ? `Other processes kept ${load.foreignMeanCores.toFixed(2)} of the ${machine.nproc} cores busy on average during this phase (peak ${load.foreignPeakCores.toFixed(2)} over one second); ` +
        `the two database servers used ${load.dbServersMeanCores.toFixed(2)} cores on average (the bench's queries and anyone else's). ` +
        `The host had ${int(load.tcpSocketsMean)} TCP sockets on average (at most ${int(load.tcpSocketsMax)}, TIME_WAIT included: the lines of /proc/net/tcp and tcp6, which identd reads for every lookup).`
      : '',
    '',
    `Every path ran ${db.settings.dbRounds} time(s), paths taking turns (order reversed every other round), after 20 warm-up connections each. ` +
      'Tables show the best round of each path and the median over the rounds; ratios and differences are best against best (median against median in brackets). ' +
      'Two plain forwarders run as peers of the relay, stone (C) and a Node pipe (bench/db-pipe.ts): what one extra hop costs here without any of the relay\'s work. ' +
      'Clients and databases are on this machine, so every forwarder competes with both for the same cores. CPU per transaction or connection counts only the forwarder\'s processes (relay and identd for dbrelay).',
  ];
}

function commandLines(db: DbResults): string[] {
  const out = ['### Commands (ports and paths symbolic)', ''];
  for (const c of db.commands) out.push(`${c.label}:`, '', '```sh', ...c.lines, '```', '');
  return out.slice(0, -1);
}

export function renderDbResults(db: DbResults, machine: MachineFacts): string {
  const sections: string[][] = [['## Database relay (`warpstone dbrelay`): pgbench and mysqlslap, direct and through the relay', '', ...factsLines(db, machine)]];
  if (db.rows.length > 0) {
    sections.push(
      ['### Against the targets', '', ...targetsTable(db)],
      throughputTable(db),
      setupTable(db),
      reconnectTable(db),
      identLine(db),
      commandLines(db),
    );
  }
  if (db.warnings.length > 0) sections.push(['### Warnings from this phase', '', ...db.warnings.map((w) => `- ${w}`)]);
  return sections
    .filter((s) => s.length > 0)
    .map((s) => s.join('\n'))
    .join('\n\n')
    .trimEnd() + '\n';
}
