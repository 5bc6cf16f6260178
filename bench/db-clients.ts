// The database clients of the db phase, each run against one path (direct, or a relay
// listener): `pgbench -S` with persistent connections and with -C (a new connection per
// transaction), `mysqlslap` running SELECT 1, and a sequential loop through the pg and mysql2
// drivers (connect → SELECT 1 → close) that times each connection until it is authenticated.
// Every run either returns its figures or throws with the client's own error text: a client
// that printed an error is never read as a result (mysqlslap exits 0 after failing to connect).
// Owns: client command lines and parsing their output. Must not: start servers or relays.
import pg from 'pg';
import mysql from 'mysql2/promise';
import { runToEnd } from './procs.ts';
import { mean, percentile } from './stats.ts';
import { DB_NAME, DB_USER, type DbTarget } from './db-peer.ts';

export interface ClientRun {
  tps: number;
  transactions: number;
  latencyMs?: number;
  connMs?: number;
}

const PG_ENV = (): NodeJS.ProcessEnv => ({ ...process.env, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'warpstone-bench' });

/** libpq's -h/-p for a path: a UNIX socket is the directory holding .s.PGSQL.PORT. */
export function pgHostArgs(t: DbTarget): string[] {
  return t.kind === 'tcp' ? ['-h', t.host, '-p', String(t.port)] : ['-h', t.dir, '-p', String(t.port)];
}

export function pgbenchArgs(t: DbTarget, o: { clients: number; seconds: number; reconnect: boolean }): string[] {
  return [...pgHostArgs(t), '-U', DB_USER, '-n', '-S', '-c', String(o.clients), '-j', String(Math.min(2, o.clients)), '-T', String(o.seconds), ...(o.reconnect ? ['-C'] : []), DB_NAME];
}

function firstProblem(text: string): string {
  const line = text.split('\n').find((l) => /error|fatal|could not|failed|denied/i.test(l));
  return (line ?? text.trim().split('\n').slice(-1)[0] ?? 'no output').trim().slice(0, 300);
}

/** Reads pgbench's summary; throws when it failed or any transaction failed. */
export function parsePgbench(stdout: string, stderr: string, code: number): ClientRun {
  const text = `${stdout}\n${stderr}`;
  const tps = /^tps = ([\d.]+)/m.exec(text);
  const done = /^number of transactions actually processed: (\d+)/m.exec(text);
  const failed = /^number of failed transactions: (\d+)/m.exec(text);
  if (code !== 0 || !tps || !done) throw new Error(`pgbench failed (exit ${code}): ${firstProblem(text)}`);
  if (failed && Number(failed[1]) > 0) throw new Error(`pgbench: ${failed[1]} transactions failed: ${firstProblem(stderr)}`);
  const latency = /^latency average = ([\d.]+) ms/m.exec(text);
  const conn = /^average connection time = ([\d.]+) ms/m.exec(text);
  return {
    tps: Number(tps[1]),
    transactions: Number(done[1]),
    ...(latency ? { latencyMs: Number(latency[1]) } : {}),
    ...(conn ? { connMs: Number(conn[1]) } : {}),
  };
}

export async function runPgbench(t: DbTarget, o: { clients: number; seconds: number; reconnect: boolean }): Promise<ClientRun> {
  const r = await runToEnd('pgbench', pgbenchArgs(t, o), { env: PG_ENV(), timeoutMs: (o.seconds + 60) * 1000 });
  return parsePgbench(r.stdout, r.stderr, r.code);
}

export function mysqlTargetArgs(t: DbTarget): string[] {
  return t.kind === 'tcp' ? ['--protocol=TCP', '-h', t.host, '-P', String(t.port)] : ['--protocol=SOCKET', '-S', t.path];
}

export function mysqlslapArgs(t: DbTarget, o: { clients: number; queries: number }): string[] {
  return [
    '--no-defaults',
    ...mysqlTargetArgs(t),
    '-u',
    DB_USER,
    `--concurrency=${o.clients}`,
    `--number-of-queries=${o.queries}`,
    '--iterations=1',
    `--create-schema=${DB_NAME}`,
    '--query=SELECT 1',
  ];
}

/** Reads mysqlslap's summary; any error line on its output makes the run a failure. */
export function parseMysqlslap(stdout: string, stderr: string, code: number, queries: number): ClientRun {
  const text = `${stdout}\n${stderr}`;
  const seconds = /Average number of seconds to run all queries: ([\d.]+) seconds/.exec(text);
  if (code !== 0 || !seconds || /error/i.test(text)) throw new Error(`mysqlslap failed (exit ${code}): ${firstProblem(text)}`);
  const s = Number(seconds[1]);
  if (!(s > 0)) throw new Error(`mysqlslap reported ${seconds[1]} s for ${queries} queries: too short to time; raise --number-of-queries`);
  return { tps: queries / s, transactions: queries };
}

export async function runMysqlslap(t: DbTarget, o: { clients: number; queries: number }): Promise<ClientRun> {
  const r = await runToEnd('mysqlslap', mysqlslapArgs(t, o), { timeoutMs: 300_000 });
  return parseMysqlslap(r.stdout, r.stderr, r.code, o.queries);
}

export interface SetupLoop {
  connectMedianMs: number;
  connectMeanMs: number;
  connectP90Ms: number;
  cycleMedianMs: number;
  cycles: number;
}

/** One connection through a driver: resolves with [ms to an authenticated session, ms for the whole cycle]. */
type Cycle = () => Promise<[number, number]>;

const since = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

function pgCycle(t: DbTarget): Cycle {
  const where = t.kind === 'tcp' ? { host: t.host, port: t.port } : { host: t.dir, port: t.port };
  return async () => {
    const t0 = process.hrtime.bigint();
    const client = new pg.Client({ ...where, user: DB_USER, database: DB_NAME, ssl: false, connectionTimeoutMillis: 10_000, application_name: 'warpstone-bench' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const connected = since(t0);
      const r = await client.query<{ one: number }>('SELECT 1 AS one');
      if (r.rows[0]?.one !== 1) throw new Error(`SELECT 1 returned ${JSON.stringify(r.rows)}`);
      await client.end();
      return [connected, since(t0)];
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  };
}

function mysqlCycle(t: DbTarget): Cycle {
  const where = t.kind === 'tcp' ? { host: t.host, port: t.port } : { socketPath: t.path };
  return async () => {
    const t0 = process.hrtime.bigint();
    const conn = await mysql.createConnection({ ...where, user: DB_USER, password: '', database: DB_NAME, connectTimeout: 10_000 });
    try {
      const connected = since(t0);
      const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT 1 AS one');
      if (Number(rows[0]?.one) !== 1) throw new Error(`SELECT 1 returned ${JSON.stringify(rows)}`);
      await conn.end();
      return [connected, since(t0)];
    } catch (err) {
      conn.destroy();
      throw err;
    }
  };
}

/** `count` connections one after the other; the first failure ends the run (it is a failure). */
export async function runSetupLoop(engine: 'postgres' | 'mysql', t: DbTarget, count: number): Promise<SetupLoop> {
  const cycle = engine === 'postgres' ? pgCycle(t) : mysqlCycle(t);
  const connect: number[] = [];
  const whole: number[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const [c, w] = await cycle();
      connect.push(c);
      whole.push(w);
    } catch (err) {
      throw new Error(`connection ${i + 1} of ${count} failed: ${(err as Error).message}`);
    }
  }
  return { connectMedianMs: percentile(connect, 50), connectMeanMs: mean(connect), connectP90Ms: percentile(connect, 90), cycleMedianMs: percentile(whole, 50), cycles: count };
}
