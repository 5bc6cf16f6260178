// Which database users exist, for the policy's "extracted but unknown" case: a fixed list from
// the config, or a periodic query the relay makes with its own account (MariaDB/MySQL:
// `SELECT User FROM mysql.user`; PostgreSQL: `SELECT rolname FROM pg_roles WHERE rolcanlogin`)
// through the mysql2 and pg drivers. A failed query keeps the last good list and is logged.
// Owns: the list and its refresh. Must not: decide policy or touch client connections.
import mysql from 'mysql2/promise';
import pg from 'pg';
import type { Logger } from '../common/log.js';
import { errorMessage } from '../common/errors.js';
import type { KnownUsersSource } from './config.js';

/** The shape the policy takes (createPolicy's knownUsers). */
export interface KnownUsersLookup {
  /** true/false once known; undefined while nothing is known (no successful query yet) */
  has(user: string): Promise<boolean | undefined>;
}

export interface KnownUsers extends KnownUsersLookup {
  start(): void;
  stop(): Promise<void>;
}

/** A query may take this long, connect included. */
const QUERY_TIMEOUT_MS = 10_000;
/** A first lookup waits this long for the first query instead of answering "nothing known". */
const FIRST_LOAD_WAIT_MS = 5_000;
/** More users than this is a misconfigured query, not a list to hold. */
const MAX_USERS = 100_000;

/** No source configured: every DB user is treated as existing, so the mapping is enforced for all. */
class EveryUserKnown implements KnownUsers {
  has(): Promise<boolean> {
    return Promise.resolve(true);
  }
  start(): void {}
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

class FixedList implements KnownUsers {
  private readonly users: Set<string>;
  constructor(users: string[]) {
    this.users = new Set(users);
  }
  has(user: string): Promise<boolean> {
    return Promise.resolve(this.users.has(user));
  }
  start(): void {}
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

type QuerySource = Extract<KnownUsersSource, { kind: 'query' }>;

/** Runs the source's query once and returns the user names (no empty names, no duplicates). */
export async function queryKnownUsers(source: QuerySource, timeoutMs = QUERY_TIMEOUT_MS): Promise<Set<string>> {
  const names: string[] = [];
  if (source.protocol === 'mysql') {
    const connection = await mysql.createConnection({
      host: source.address.host,
      port: source.address.port,
      user: source.user,
      password: source.password ?? '',
      ...(source.database ? { database: source.database } : {}),
      connectTimeout: timeoutMs,
    });
    try {
      const [rows] = await connection.query<mysql.RowDataPacket[]>({ sql: 'SELECT DISTINCT User AS name FROM mysql.user', timeout: timeoutMs });
      for (const row of rows) names.push(Buffer.isBuffer(row.name) ? row.name.toString('utf8') : String(row.name));
    } finally {
      connection.destroy();
    }
  } else {
    const client = new pg.Client({
      host: source.address.host,
      port: source.address.port,
      user: source.user,
      ...(source.password !== undefined ? { password: source.password } : {}),
      database: source.database ?? 'postgres',
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      application_name: 'warpstone dbrelay',
    });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const result = await client.query<{ name: string }>('SELECT rolname AS name FROM pg_roles WHERE rolcanlogin');
      for (const row of result.rows) names.push(row.name);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  if (names.length > MAX_USERS) throw new Error(`the query returned ${names.length} users; more than ${MAX_USERS} is not plausible`);
  return new Set(names.filter((n) => n !== ''));
}

export class QueriedKnownUsers implements KnownUsers {
  private users: Set<string> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private firstLoad: Promise<void> | undefined;
  private failing = false;
  private stopped = false;

  constructor(
    private readonly source: QuerySource,
    private readonly log: Logger,
    private readonly query: (source: QuerySource) => Promise<Set<string>> = (s) => queryKnownUsers(s),
  ) {}

  start(): void {
    if (this.timer || this.stopped) return;
    this.firstLoad = this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.source.everyMs);
    this.timer.unref();
  }

  /** One query; never rejects. Concurrent calls share the one in flight. */
  refresh(): Promise<void> {
    this.running ??= this.query(this.source)
      .then(
        (users) => {
          const changed = !this.users || this.users.size !== users.size || [...users].some((u) => !this.users?.has(u));
          this.users = users;
          if (this.failing || changed) this.log.info({ url: this.source.display, users: users.size }, 'known DB users loaded');
          this.failing = false;
        },
        (err: unknown) => {
          // Keep the last good list: a database restart must not turn every user unknown.
          this.log.warn(
            { url: this.source.display, err: errorMessage(err), keeping: this.users ? this.users.size : 'nothing known yet' },
            'known DB users query failed',
          );
          this.failing = true;
        },
      )
      .finally(() => (this.running = undefined));
    return this.running;
  }

  async has(user: string): Promise<boolean | undefined> {
    if (!this.users && this.firstLoad) {
      // Right after start, wait (bounded) for the first answer rather than guess.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.firstLoad, new Promise<void>((resolve) => (timer = setTimeout(resolve, FIRST_LOAD_WAIT_MS)))]);
      clearTimeout(timer);
    }
    return this.users ? this.users.has(user) : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}

export function createKnownUsers(source: KnownUsersSource, log: Logger): KnownUsers {
  switch (source.kind) {
    case 'none':
      return new EveryUserKnown();
    case 'list':
      return new FixedList(source.users);
    case 'query':
      return new QueriedKnownUsers(source, log);
  }
}

/** One line for logs and `dbrelay check`. */
export function describeKnownUsers(source: KnownUsersSource): string {
  switch (source.kind) {
    case 'none':
      return "not configured (every DB user counts as existing, so the 'does not exist' case never applies)";
    case 'list':
      return `a list of ${source.users.length} (${source.users.slice(0, 5).join(', ')}${source.users.length > 5 ? ', ...' : ''})`;
    case 'query':
      return `queried every ${Math.round(source.everyMs / 1000)} s from ${source.display}`;
  }
}
