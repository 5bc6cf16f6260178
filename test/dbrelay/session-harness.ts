// Shared by the protocol-session tests: a small relay in front of the real database (a net.Server
// whose connections go to serveMysql/servePostgres with a fixed identity, the real policy, an
// in-memory audit sink and a logger whose lines the test reads), a server certificate from the
// project's own CA for TLS termination, and helpers to create and drop database users.
// Owns: test/dbrelay/session-harness.ts. Must not: touch database data beyond ws_* users.
import net from 'node:net';
import tls from 'node:tls';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createCa, issueCertificate } from '../../src/pki/ca.ts';
import { createPolicy } from '../../src/dbrelay/policy.ts';
import type { ClientIdentity, DbAuditEvent, DbSessionContext, DbSessionHandler } from '../../src/dbrelay/types.ts';
import { run, type Ran } from './helpers.ts';

export const MARIADB_PORT = 3306;
export const PG_PORT = 5432;

/** A short random tag so concurrent runs never share database users. */
export const TAG = randomBytes(3).toString('hex');

export interface TlsMaterial {
  secureContext: tls.SecureContext;
  caPem: string;
  /** a file holding the CA certificate, for `mariadb --ssl-ca` and `psql sslrootcert=` */
  caFile: string;
  dispose(): void;
}

/** A CA and a server certificate for 127.0.0.1/localhost, made with the project's own CA code. */
export async function makeTlsMaterial(): Promise<TlsMaterial> {
  const ca = await createCa(1);
  const server = await issueCertificate(ca, { name: 'dbrelay-test', role: 'relay', days: 1, altNames: ['127.0.0.1', 'localhost'] });
  const dir = mkdtempSync(join(tmpdir(), 'ws-dbrelay-tls-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.certPem);
  return {
    secureContext: tls.createSecureContext({ key: server.keyPem, cert: server.certPem + ca.certPem, minVersion: 'TLSv1.2' }),
    caPem: ca.certPem,
    caFile,
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

export interface RelayOptions {
  handler: DbSessionHandler;
  upstreamPort: number;
  identity: ClientIdentity;
  /** undefined: refuse TLS */
  tls?: tls.SecureContext;
  strict?: boolean;
  mapping?: Map<string, string[]>;
  /** DB users the policy knows exist; undefined: the relay cannot tell */
  known?: Set<string>;
  handshakeTimeoutMs?: number;
  idleTimeoutMs?: number;
}

export interface SessionRelay {
  port: number;
  audit: DbAuditEvent[];
  logs: LogLine[];
  /** resolves when an audit event matching `match` was recorded */
  waitForAudit(match: (e: DbAuditEvent) => boolean, timeoutMs?: number): Promise<DbAuditEvent>;
  waitForLog(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** sessions that have not finished yet */
  active(): number;
  close(): Promise<void>;
}

function waitFor<T>(list: T[], match: (x: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = (): void => {
      const hit = list.find(match);
      if (hit) return resolve(hit);
      if (Date.now() - started > timeoutMs) return reject(new Error(`no ${what} within ${timeoutMs} ms; have: ${JSON.stringify(list, null, 1).slice(0, 3000)}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

export async function startSessionRelay(options: RelayOptions): Promise<SessionRelay> {
  const audit: DbAuditEvent[] = [];
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const log = pino({ level: 'debug', formatters: { level: (label) => ({ level: label }) } }, sink);
  const known = options.known;
  const decide = createPolicy({
    strict: options.strict ?? false,
    mapping: options.mapping ?? new Map(),
    knownUsers: { has: async (user) => (known ? known.has(user) : undefined) },
  });
  const sockets = new Set<net.Socket>();
  const sessions = new Set<Promise<void>>();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const source = `${client.remoteAddress}:${client.remotePort}`;
    const context: DbSessionContext = {
      listener: 'test',
      client,
      source,
      identity: options.identity,
      connectUpstream: () =>
        new Promise((resolve, reject) => {
          const upstream = net.connect({ host: '127.0.0.1', port: options.upstreamPort, allowHalfOpen: true, noDelay: true });
          sockets.add(upstream);
          upstream.on('close', () => sockets.delete(upstream));
          upstream.once('connect', () => resolve(upstream));
          upstream.once('error', (err) => reject(new Error(`the database at 127.0.0.1:${options.upstreamPort} refused: ${err.message}`)));
        }),
      decide,
      tls: options.tls ? { mode: 'terminate', secureContext: options.tls, requestClientCert: false } : { mode: 'refuse' },
      audit: { record: (e) => audit.push(e) },
      log: log.child({ source }),
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 5_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    };
    const session = options.handler(context).finally(() => {
      client.destroy();
      sessions.delete(session);
    });
    sessions.add(session);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    audit,
    logs,
    waitForAudit: (match, timeoutMs = 5_000) => waitFor(audit, match, timeoutMs, 'matching audit event'),
    waitForLog: (match, timeoutMs = 5_000) => waitFor(logs, match, timeoutMs, 'matching log line'),
    active: () => sessions.size,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all([...sessions]);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Database users

const mariadbRoot = ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(MARIADB_PORT), '-u', 'root'];

export async function mariadbAdmin(sql: string): Promise<void> {
  const ran = await run('mariadb', [...mariadbRoot, '-e', sql]);
  if (ran.code !== 0) throw new Error(`mariadb admin failed: ${ran.stderr}`);
}

export async function pgAdmin(sql: string): Promise<void> {
  const ran = await run('psql', ['-X', '-w', '-v', 'ON_ERROR_STOP=1', `host=127.0.0.1 port=${PG_PORT} user=postgres dbname=postgres sslmode=disable gssencmode=disable`, '-c', sql]);
  if (ran.code !== 0) throw new Error(`psql admin failed: ${ran.stderr}`);
}

/** The real `mariadb` client against `port` as `user`/`password`, running `sql`. */
export function mariadb(port: number, user: string, password: string, sql: string, ...more: string[]): Promise<Ran> {
  return run('mariadb', ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(port), '-u', user, `-p${password}`, '-N', '-B', ...more, '-e', sql]);
}

/** The real `psql` against `port` as `user`; `conninfo` adds or overrides keywords. */
export function psql(port: number, user: string, sql: string, conninfo = 'sslmode=disable gssencmode=disable'): Promise<Ran> {
  return run('psql', ['-X', '-w', '-A', '-t', `host=127.0.0.1 port=${port} user=${user} dbname=postgres ${conninfo}`, '-c', sql], { env: { PGCONNECT_TIMEOUT: '10' } });
}

// ---------------------------------------------------------------------------------------------
// A database stand-in that records what the relay forwards

export interface RecordingUpstream {
  port: number;
  /** bytes each accepted connection received, in order; `ended` once the relay closed it */
  connections: Array<{ data: Buffer[]; ended: boolean }>;
  close(): Promise<void>;
}

/** Accepts, sends `greeting` (MySQL servers speak first), records everything, closes when the relay ends. */
export async function recordingUpstream(greeting?: Buffer): Promise<RecordingUpstream> {
  const connections: RecordingUpstream['connections'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const record = { data: [] as Buffer[], ended: false };
    connections.push(record);
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => record.data.push(Buffer.from(d)));
    socket.on('end', () => {
      record.ended = true;
      socket.destroy();
    });
    socket.on('close', () => {
      record.ended = true;
      sockets.delete(socket);
    });
    if (greeting) socket.write(greeting);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects, writes `bytes`, half-closes, and resolves once the relay closed the connection (false after `timeoutMs`). */
export function sendAndAwaitClose(port: number, bytes: Buffer, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, timeoutMs);
    socket.on('error', () => undefined);
    socket.resume();
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    socket.on('connect', () => socket.end(bytes));
  });
}

/** Waits until every session of `relay` has finished. */
export async function allSessionsDone(relay: SessionRelay, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (relay.active() > 0) {
    if (Date.now() > until) throw new Error(`${relay.active()} sessions still running after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
