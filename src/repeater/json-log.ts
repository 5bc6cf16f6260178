// `warpstone stone --json`: the same log, dump and accounting lines as stone's text format, one
// JSON object per line, for log shippers. Every object has `time` (ISO 8601, UTC, microseconds),
// `pid` and `message` (exactly the text stone prints after its time/thread prefix, uncut), plus:
//   - events logline.ts knows: `event` (its kind: accepted, connecting, close, ...) and its fields
//     (listenFd, fd, from, to, tx, rx, errno, ...);
//   - dump lines: `event: "dump"`, `head` (`3 5>6`) and `body`;
//   - -a lines: `event: "accounting"` and the fields of the accounting line;
//   - ban guard lines (--ban-home): `event: "ban"`, `level` and the guard's fields;
//   - other lines (health checks, SSL checks, UDP origins): `message` only.
// Text copied from the network (a host name, a dump body) is bytes as Latin-1 code points, so
// every byte survives the trip through JSON.
// Owns: the JSON shape. Must not: decide what is logged (StoneLog and logline.ts stoneLogs do).
import { stoneMessage, type AccountingEvent, type StoneEvent, type Timeval } from './logline.js';
import { accountingLine } from './logline.js';

/** `2025-11-23T12:34:56.123456Z` */
export function isoMicro(t: Timeval): string {
  const iso = new Date(t.sec * 1000).toISOString();
  return `${iso.slice(0, 19)}.${String(Math.floor(t.usec)).padStart(6, '0')}Z`;
}

function line(fields: Record<string, unknown>): string {
  return JSON.stringify(fields);
}

export function jsonEventLine(t: Timeval, pid: number, e: StoneEvent): string {
  const { kind, ...fields } = e;
  return line({ time: isoMicro(t), pid, event: kind, ...fields, message: stoneMessage(e) });
}

export function jsonMessageLine(t: Timeval, pid: number, message: string): string {
  return line({ time: isoMicro(t), pid, message });
}

/** A line of the ban guard (--ban-home): `event: "ban"`, its level and fields (stone-bans.ts). */
export function jsonGuardLine(t: Timeval, pid: number, level: string, fields: Record<string, unknown>, message: string): string {
  return line({ time: isoMicro(t), pid, event: 'ban', level, ...fields, message });
}

export function jsonDumpLine(t: Timeval, pid: number, head: string, body: string): string {
  return line({ time: isoMicro(t), pid, event: 'dump', head, body, message: head + body });
}

export function jsonAccountingLine(t: Timeval, pid: number, e: AccountingEvent): string {
  const clock = e.clock instanceof Date ? Math.floor(e.clock.getTime() / 1000) : e.clock;
  return line({ time: isoMicro(t), pid, event: 'accounting', clock, port: e.port, listenFd: e.listenFd, from: e.from, fromHost: e.fromHost, ...(e.ident ? { ident: e.ident } : {}), message: accountingLine(e) });
}
