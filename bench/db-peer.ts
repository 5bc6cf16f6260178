// The database relay under test: `warpstone identd` on a free loopback port and `warpstone
// dbrelay` with four listeners in front of the machine's PostgreSQL (127.0.0.1:5432) and MariaDB
// (127.0.0.1:3306): for each database a TCP listener whose identity comes from IDENT (asked of
// that identd) and a UNIX-socket listener whose identity comes from the kernel (SO_PEERCRED).
// The bench runs as root and logs in as the database user root, so the default mapping
// (identity = DB user) allows every session. Runs the CLI from the measured tree (dist/ once
// built); for a tree whose src/cli/main.ts does not register `dbrelay`, through bench/db-entry.ts.
// Also two plain forwarders in front of each database, as peers: stone (C, one process) and
// bench/db-pipe.ts (a Node pipe): what one extra hop costs on this machine without the relay.
// Owns: the identd, dbrelay and forwarder processes and the relay's config. Must not: measure.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Procs, Started } from './procs.ts';
import { freePort, runToEnd } from './procs.ts';
import type { Watched } from './procfs.ts';
import type { DbEngine, DbPathKey } from './results.ts';

export const PG_DIRECT = { host: '127.0.0.1', port: 5432 } as const;
export const MY_DIRECT = { host: '127.0.0.1', port: 3306 } as const;
/** the database user every client logs in as (a superuser on both servers; the identity is root) */
export const DB_USER = 'root';
/** the database created for the phase on both servers, dropped at its end */
export const DB_NAME = 'ws_bench';

/** Where a client reaches a database: TCP host and port, or a UNIX socket. */
export type DbTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string; dir: string; port: number };

export interface DbPath {
  engine: DbEngine;
  key: DbPathKey;
  label: string;
  target: DbTarget;
  /** the relay listener's name (relay paths) */
  listener?: string;
  /** processes on the path besides the client and the database, for CPU per transaction */
  watched: Watched[];
}

export interface DbRelayPeer {
  paths: DbPath[];
  relay: Started;
  identd: Started;
  identdPort: number;
  /** how the relay was started: the CLI, or the stand-in entry (and what it loaded) */
  via: 'cli' | 'bench/db-entry.ts (dist/cli/dbrelay.js)' | 'bench/db-entry.ts (src/cli/dbrelay.ts through tsx)';
  commands: string[];
}

const ENGINE_LABEL: Record<DbEngine, string> = { postgres: 'PostgreSQL', mysql: 'MariaDB' };

const PATH_LABEL: Record<DbPathKey, string> = {
  direct: 'direct',
  stone: 'via stone (plain TCP forwarder, C)',
  'node-pipe': 'via a plain Node pipe (bench/db-pipe.ts)',
  'relay-tcp': 'via dbrelay, TCP + IDENT',
  'relay-unix': 'via dbrelay, UNIX socket + SO_PEERCRED',
};

export const pathLabel = (engine: DbEngine, key: DbPathKey): string => `${ENGINE_LABEL[engine]} ${PATH_LABEL[key]}`;

interface Forwarders {
  stone: Record<DbEngine, { port: number; proc: Started }>;
  pipe: Record<DbEngine, { port: number; proc: Started }>;
}

async function startForwarders(procs: Procs, benchDir: string, root: string): Promise<Forwarders> {
  const upstream: Record<DbEngine, number> = { postgres: PG_DIRECT.port, mysql: MY_DIRECT.port };
  const stone = async (engine: DbEngine): Promise<{ port: number; proc: Started }> => {
    const port = await freePort();
    const proc = procs.start(`stone-${engine}`, 'stone', [`127.0.0.1:${upstream[engine]}`, `127.0.0.1:${port}`]);
    await procs.waitListening(proc, port);
    return { port, proc };
  };
  const pipe = async (engine: DbEngine): Promise<{ port: number; proc: Started }> => {
    const proc = procs.start(`node-pipe-${engine}`, process.execPath, ['--import', 'tsx', join(benchDir, 'db-pipe.ts'), String(upstream[engine])], { cwd: root });
    const m = await procs.waitForLog(proc, /pipe listening on (\d+)/);
    return { port: Number(m[1]), proc };
  };
  return {
    stone: { postgres: await stone('postgres'), mysql: await stone('mysql') },
    pipe: { postgres: await pipe('postgres'), mysql: await pipe('mysql') },
  };
}

function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, WARPSTONE_LOG_LEVEL: 'info' };
  delete env.WARPSTONE_FROM_SOURCE;
  return env;
}

/** The relay's config; `symbolic` writes the ports and paths as the report shows them. */
function relayConfig(p: { identd: number | string; pgTcp: number | string; pgSocket: string; myTcp: number | string; mySocket: string }): string {
  return [
    '# warpstone dbrelay: the bench runs as root and logs in as DB user root (identity = DB user)',
    'listeners:',
    `  - { name: pg-ident, kind: tcp, listen: "127.0.0.1:${p.pgTcp}", ident: { port: ${p.identd} }, upstream: "postgres://127.0.0.1:5432" }`,
    `  - { name: pg-unix, kind: unix, path: "${p.pgSocket}", upstream: "postgres://127.0.0.1:5432" }`,
    `  - { name: my-ident, kind: tcp, listen: "127.0.0.1:${p.myTcp}", ident: { port: ${p.identd} }, upstream: "mysql://127.0.0.1:3306" }`,
    `  - { name: my-unix, kind: unix, path: "${p.mySocket}", upstream: "mysql://127.0.0.1:3306" }`,
    '',
  ].join('\n');
}

/** True when the measured tree's CLI has the dbrelay command. */
async function cliHasDbrelay(root: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  const r = await runToEnd(process.execPath, [join(root, 'bin', 'warpstone.js'), 'dbrelay', '--help'], { env, cwd: root, timeoutMs: 60_000 });
  return r.code === 0 && /--config/.test(r.stdout);
}

export async function startDbRelay(procs: Procs, root: string, benchDir: string, dir: string): Promise<DbRelayPeer> {
  const env = cliEnv();
  const fwd = await startForwarders(procs, benchDir, root);
  const bin = join(root, 'bin', 'warpstone.js');
  const identdPort = await freePort();
  const identd = procs.start('warpstone-identd', process.execPath, [bin, 'identd', '--listen', `127.0.0.1:${identdPort}`], { env, cwd: root });
  await procs.waitForLog(identd, /identd listening/);

  const pgDir = join(dir, 'pg');
  mkdirSync(pgDir, { recursive: true });
  // pgbench and libpq find a server's socket as DIR/.s.PGSQL.PORT
  const pgSocket = join(pgDir, `.s.PGSQL.${PG_DIRECT.port}`);
  const mySocket = join(dir, 'mysql.sock');
  const pgTcp = await freePort();
  const myTcp = await freePort();
  const configFile = join(dir, 'dbrelay.yaml');
  writeFileSync(configFile, relayConfig({ identd: identdPort, pgTcp, pgSocket, myTcp, mySocket }));

  const viaCli = await cliHasDbrelay(root, env);
  const relay = viaCli
    ? procs.start('warpstone-dbrelay', process.execPath, [bin, 'dbrelay', '--config', configFile], { env, cwd: root })
    : procs.start('warpstone-dbrelay', process.execPath, ['--import', 'tsx', join(benchDir, 'db-entry.ts'), root, 'dbrelay', '--config', configFile], { env, cwd: root });
  await procs.waitForLog(relay, /"msg":"dbrelay listening"(?:[\s\S]*?"msg":"dbrelay listening"){3}/, 60_000);

  const relayWatch: Watched = { name: 'warpstone dbrelay', pid: relay.pid, tree: false };
  const identdWatch: Watched = { name: 'warpstone identd', pid: identd.pid, tree: false };
  const watchedFor = (engine: DbEngine, key: DbPathKey): Watched[] => {
    switch (key) {
      case 'direct':
        return [];
      case 'stone':
        return [{ name: 'stone', pid: fwd.stone[engine].proc.pid, tree: false }];
      case 'node-pipe':
        return [{ name: 'node pipe', pid: fwd.pipe[engine].proc.pid, tree: false }];
      case 'relay-tcp':
        return [relayWatch, identdWatch];
      case 'relay-unix':
        return [relayWatch];
    }
  };
  const path = (engine: DbEngine, key: DbPathKey, target: DbTarget, listener?: string): DbPath => ({
    engine,
    key,
    label: pathLabel(engine, key),
    target,
    ...(listener ? { listener } : {}),
    watched: watchedFor(engine, key),
  });
  const tcp = (port: number): DbTarget => ({ kind: 'tcp', host: '127.0.0.1', port });
  const paths: DbPath[] = [
    path('postgres', 'direct', tcp(PG_DIRECT.port)),
    path('postgres', 'stone', tcp(fwd.stone.postgres.port)),
    path('postgres', 'node-pipe', tcp(fwd.pipe.postgres.port)),
    path('postgres', 'relay-tcp', tcp(pgTcp), 'pg-ident'),
    path('postgres', 'relay-unix', { kind: 'unix', path: pgSocket, dir: pgDir, port: PG_DIRECT.port }, 'pg-unix'),
    path('mysql', 'direct', tcp(MY_DIRECT.port)),
    path('mysql', 'stone', tcp(fwd.stone.mysql.port)),
    path('mysql', 'node-pipe', tcp(fwd.pipe.mysql.port)),
    path('mysql', 'relay-tcp', tcp(myTcp), 'my-ident'),
    path('mysql', 'relay-unix', { kind: 'unix', path: mySocket, dir, port: MY_DIRECT.port }, 'my-unix'),
  ];
  const symbolic = relayConfig({ identd: 'IDENT', pgTcp: 'PG_RELAY', pgSocket: 'SOCKDIR/.s.PGSQL.5432', myTcp: 'MY_RELAY', mySocket: 'SOCKDIR/mysql.sock' });
  return {
    paths,
    relay,
    identd,
    identdPort,
    via: viaCli ? 'cli' : existsSync(join(root, 'dist', 'cli', 'dbrelay.js')) ? 'bench/db-entry.ts (dist/cli/dbrelay.js)' : 'bench/db-entry.ts (src/cli/dbrelay.ts through tsx)',
    commands: [
      'stone 127.0.0.1:5432 127.0.0.1:PG_STONE; stone 127.0.0.1:3306 127.0.0.1:MY_STONE   # peer: plain forwarder in C',
      'node --import tsx bench/db-pipe.ts 5432; node --import tsx bench/db-pipe.ts 3306       # peer: plain Node pipe',
      'warpstone identd --listen 127.0.0.1:IDENT',
      'cat > dbrelay.yaml <<EOF',
      ...symbolic.trimEnd().split('\n'),
      'EOF',
      'warpstone dbrelay --config dbrelay.yaml',
    ],
  };
}
