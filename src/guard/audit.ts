// The audit log: every stream opened, refused and closed, every refused handshake and every ban,
// as one JSON line in a file (for tail, jq and log shippers) and one row in the store (for
// `warpstone audit`). It listens to the relay's events and only queues there; a flush every
// `flushMs` (sooner once `batchRows` wait) appends the lines and inserts the rows in batches, so
// the data path never waits for a disk. Queues are bounded (`maxQueue` each; the oldest entries
// go first, and the loss is logged). The file is opened for append and reopened when it was
// rotated or removed (its inode changed), so logrotate needs no copytruncate and no signal.
// Owns: turning events into audit records, the file, the batched inserts, retention.
// Must not: block an event emitter, or decide anything about what it records.
import { open, stat, type FileHandle } from 'node:fs/promises';
import type { Logger } from '../common/log.js';
import type { RelayEvents, RelayEventMap } from '../ops/events.js';
import type { AuditKind, AuditRecord, OpsStore } from '../store/ops-store.js';
import { StateError, errorMessage } from '../common/errors.js';
import { formatDuration, parseDuration } from './duration.js';

export const AUDIT_DEFAULTS = {
  flushMs: 500,
  batchRows: 100,
  maxQueue: 10_000,
  /** rows older than this are deleted from the store (the file is left to logrotate) */
  retention: '90d',
  pruneEveryMs: 3_600_000,
} as const;

export interface AuditOptions {
  /** the JSON-lines file; undefined = the store only */
  file?: string;
  flushMs?: number;
  batchRows?: number;
  maxQueue?: number;
  /** 0 = keep rows forever */
  retentionMs?: number;
}

/** An audit record as a JSON line: ISO time first, every field present (null when not known). */
export function auditLine(r: AuditRecord): string {
  return (
    JSON.stringify({
      time: r.time.toISOString(),
      kind: r.kind,
      identity: r.identity,
      source: r.source,
      tunnel: r.tunnel,
      target: r.target,
      bytesIn: r.bytesIn,
      bytesOut: r.bytesOut,
      durationMs: r.durationMs,
      reason: r.reason,
    }) + '\n'
  );
}

const blank = { identity: null, tunnel: null, target: null, bytesIn: null, bytesOut: null, durationMs: null, reason: null } as const;

/** The audit record for a failure, or undefined when another event already records it. */
function failureRecord(e: RelayEventMap['failure']): AuditRecord | undefined {
  // Stream-level failures carry a tunnel and are recorded from 'stream-refused'.
  if (e.tunnel !== undefined) return undefined;
  const kind: AuditKind = e.reason === 'db-mismatch' || e.reason === 'db-unknown-user' ? 'db-deny' : 'handshake-refused';
  return { ...blank, time: e.time, kind, identity: e.identity ?? null, source: e.source, reason: `${e.reason}: ${e.detail}` };
}

export class AuditLog {
  private readonly lines: string[] = [];
  private readonly rows: AuditRecord[] = [];
  private droppedLines = 0;
  private droppedRows = 0;
  private file: FileHandle | undefined;
  private fileIno: number | undefined;
  private readonly unsubscribe: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private soonScheduled = false;
  private fileFailing = false;
  private storeFailing = false;
  private readonly flushMs: number;
  private readonly batchRows: number;
  private readonly maxQueue: number;
  private readonly retentionMs: number;

  constructor(
    private readonly store: OpsStore,
    private readonly events: RelayEvents,
    private readonly log: Logger,
    private readonly options: AuditOptions = {},
  ) {
    this.flushMs = options.flushMs ?? AUDIT_DEFAULTS.flushMs;
    this.batchRows = options.batchRows ?? AUDIT_DEFAULTS.batchRows;
    this.maxQueue = options.maxQueue ?? AUDIT_DEFAULTS.maxQueue;
    this.retentionMs = options.retentionMs ?? parseDuration(AUDIT_DEFAULTS.retention, 'audit retention');
  }

  /** Opens the file (a clear error when it cannot be) and starts listening. */
  async start(): Promise<void> {
    if (this.options.file) {
      try {
        await this.openFile(this.options.file);
      } catch (err) {
        throw new StateError(`cannot open the audit file ${this.options.file}: ${errorMessage(err)} (pass --audit-file PATH, or --no-audit-file)`, 'WS_AUDIT_FILE');
      }
    }
    const on = <K extends 'stream-open' | 'stream-refused' | 'stream-close' | 'failure' | 'ban-issued'>(
      name: K,
      toRecord: (e: RelayEventMap[K]) => AuditRecord | undefined,
    ): void => {
      this.unsubscribe.push(
        this.events.on(name, (e) => {
          const record = toRecord(e);
          if (record) this.record(record);
        }),
      );
    };
    on('stream-open', (e) => ({ ...blank, time: e.time, kind: 'stream-open', identity: e.identity, source: e.source, tunnel: e.tunnel, target: e.target ?? null }));
    on('stream-refused', (e) => ({
      ...blank,
      time: e.time,
      kind: 'stream-refused',
      identity: e.identity || null,
      source: e.source,
      tunnel: e.tunnel || null,
      reason: `${e.reason} (${e.status}): ${e.message}`,
    }));
    on('stream-close', (e) => ({
      ...blank,
      time: e.time,
      kind: 'stream-close',
      identity: e.identity,
      source: e.source,
      tunnel: e.tunnel,
      bytesIn: e.bytesIn,
      bytesOut: e.bytesOut,
      durationMs: Math.round(e.durationMs),
      reason: e.reason,
    }));
    on('failure', failureRecord);
    on('ban-issued', (e) => ({
      ...blank,
      time: e.time,
      kind: 'banned',
      source: e.address,
      reason: `banned for ${formatDuration(e.until.getTime() - e.time.getTime())} until ${e.until.toISOString()} (offence ${e.offence}): ${e.reason}`,
    }));
    this.timer = setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
    if (this.retentionMs > 0) {
      void this.prune();
      this.pruneTimer = setInterval(() => void this.prune(), AUDIT_DEFAULTS.pruneEveryMs);
      this.pruneTimer.unref();
    }
  }

  /** Queues one record (also usable by parts that audit without an event, e.g. the DB relay). */
  record(r: AuditRecord): void {
    if (this.options.file) {
      this.lines.push(auditLine(r));
      if (this.lines.length > this.maxQueue) {
        this.lines.shift();
        this.droppedLines += 1;
      }
    }
    this.rows.push(r);
    if (this.rows.length > this.maxQueue) {
      this.rows.shift();
      this.droppedRows += 1;
    }
    if (this.rows.length >= this.batchRows && !this.soonScheduled) {
      this.soonScheduled = true;
      setImmediate(() => {
        this.soonScheduled = false;
        void this.flush();
      });
    }
  }

  /** Writes what is queued; concurrent calls share one flush. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.lines.length === 0 && this.rows.length === 0) return Promise.resolve();
    this.flushing = this.flushNow().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  async stop(): Promise<void> {
    for (const off of this.unsubscribe.splice(0)) off();
    if (this.timer) clearInterval(this.timer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.flushing;
    await this.flush();
    await this.file?.close().catch(() => undefined);
    this.file = undefined;
  }

  private async openFile(path: string): Promise<void> {
    const handle = await open(path, 'a', 0o600);
    const info = await handle.stat();
    await this.file?.close().catch(() => undefined);
    this.file = handle;
    this.fileIno = info.ino;
  }

  /** Reopens the file when it was rotated away or deleted since we opened it. */
  private async checkRotation(path: string): Promise<void> {
    let ino: number | undefined;
    try {
      ino = (await stat(path)).ino;
    } catch {
      ino = undefined;
    }
    if (!this.file || ino !== this.fileIno) {
      await this.openFile(path);
      this.log.info({ file: path }, 'audit file reopened (rotated or removed)');
    }
  }

  private async flushNow(): Promise<void> {
    this.reportDrops();
    const path = this.options.file;
    if (path && this.lines.length > 0) {
      const batch = this.lines.splice(0, this.lines.length);
      try {
        await this.checkRotation(path);
        await this.file?.write(batch.join(''));
        if (this.fileFailing) this.log.info({ file: path }, 'audit file writable again');
        this.fileFailing = false;
      } catch (err) {
        // keep the lines for the next try, within the bound
        const room = Math.max(0, this.maxQueue - this.lines.length);
        const keep = batch.slice(Math.max(0, batch.length - room));
        this.droppedLines += batch.length - keep.length;
        this.lines.unshift(...keep);
        if (!this.fileFailing) this.log.error({ file: path, err: errorMessage(err) }, 'cannot write the audit file; keeping lines in memory and retrying');
        this.fileFailing = true;
      }
    }
    while (this.rows.length > 0) {
      const batch = this.rows.slice(0, this.batchRows);
      try {
        await this.store.addAudit(batch);
        this.rows.splice(0, batch.length);
        if (this.storeFailing) this.log.info('audit rows stored again');
        this.storeFailing = false;
      } catch (err) {
        if (!this.storeFailing) this.log.error({ err: errorMessage(err), queued: this.rows.length }, 'cannot store audit rows; keeping them in memory and retrying');
        this.storeFailing = true;
        return;
      }
    }
  }

  private reportDrops(): void {
    if (this.droppedLines === 0 && this.droppedRows === 0) return;
    this.log.warn({ droppedLines: this.droppedLines, droppedRows: this.droppedRows, limit: this.maxQueue }, 'audit queue full: the oldest audit records were dropped');
    this.droppedLines = 0;
    this.droppedRows = 0;
  }

  private async prune(): Promise<void> {
    try {
      const removed = await this.store.pruneAudit(new Date(Date.now() - this.retentionMs));
      if (removed > 0) this.log.info({ removed, olderThan: formatDuration(this.retentionMs) }, 'old audit rows removed');
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'could not prune old audit rows');
    }
  }
}
