// The database relay's audit trail: one JSON line per decision (time, listener, protocol, source
// address, identity and where it came from, DB user, allow/deny, reason, message) appended to
// the configured file, and the same event as a debug log line (the sessions log each decision at
// info/warn themselves).
// The file is opened once at start, before privileges are dropped, and written synchronously:
// an event is on disk (in the page cache) before the session goes on, and nothing queues up
// in memory when the disk is slow.
// Owns: the audit file and the decision log line. Must not: decide anything or touch sockets.
import { closeSync, openSync, writeSync, fstatSync } from 'node:fs';
import type { Logger } from '../common/log.js';
import { StateError, errorMessage } from '../common/errors.js';
import type { DbAuditEvent, DbAuditSink } from './types.js';

/** A message longer than this is cut in the file and the log (it is ours, but keep lines sane). */
const MAX_MESSAGE_CHARS = 1000;

export function auditLine(event: DbAuditEvent): string {
  const record = {
    time: event.time.toISOString(),
    listener: event.listener,
    protocol: event.protocol,
    source: event.source,
    identity: event.identity ?? null,
    identitySource: event.identitySource,
    ...(event.identityDetail !== undefined ? { identityDetail: event.identityDetail } : {}),
    dbUser: event.dbUser ?? null,
    decision: event.decision,
    reason: event.reason,
    message: event.message.slice(0, MAX_MESSAGE_CHARS),
  };
  return `${JSON.stringify(record)}\n`;
}

/** Appends to one file (or none: log only). */
export class AuditFile implements DbAuditSink {
  private fd: number | undefined;
  private failedAt = 0;

  private constructor(
    readonly path: string | undefined,
    private readonly log: Logger,
  ) {}

  /** Opens (creating it 0640 if needed) for appending; throws a StateError naming the file. */
  static open(path: string | undefined, log: Logger): AuditFile {
    const sink = new AuditFile(path, log);
    if (path !== undefined) {
      try {
        sink.fd = openSync(path, 'a', 0o640);
        if (!fstatSync(sink.fd).isFile()) throw new Error('not a regular file');
      } catch (err) {
        if (sink.fd !== undefined) closeSync(sink.fd);
        throw new StateError(`audit file ${path} cannot be opened for appending: ${errorMessage(err)}`, 'WS_DBRELAY_AUDIT');
      }
    }
    return sink;
  }

  record(event: DbAuditEvent): void {
    const fields = {
      listener: event.listener,
      protocol: event.protocol,
      source: event.source,
      identity: event.identity,
      identitySource: event.identitySource,
      identityDetail: event.identityDetail,
      dbUser: event.dbUser,
      decision: event.decision,
      reason: event.reason,
    };
    // The sessions already log each decision at info/warn with their connection's context
    // (session-io.ts recordDecision); this line is the audit trail's own, at debug, so a
    // decision is not printed twice at the default level.
    this.log.debug({ ...fields, file: this.path ?? null }, event.decision === 'allow' ? 'audit: allowed' : 'audit: denied');
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, auditLine(event));
    } catch (err) {
      // The session goes on (the decision is made and logged above); say loudly, at most once a minute.
      const now = Date.now();
      if (now - this.failedAt > 60_000) {
        this.failedAt = now;
        this.log.error({ file: this.path, err: errorMessage(err) }, 'cannot write the audit file; decisions are only in this log until it works again');
      }
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
