// `warpstone audit [--since 1h|ISO] [--until ..] [--identity NAME] [--tunnel NAME] [--kind ..]
// [--limit N] [--json]`: the audit table in the store, newest first.
import type { Command } from 'commander';
import type { AuditFilter, AuditKind, AuditRecord } from '../store/ops-store.js';
import { UsageError } from '../common/errors.js';
import { parseDuration } from '../guard/duration.js';
import { auditLine } from '../guard/audit.js';
import { AUDIT_QUERY_LIMIT } from '../store/ops-queries.js';
import { withStore } from './shared.js';

export const AUDIT_KINDS: readonly AuditKind[] = ['stream-open', 'stream-refused', 'stream-close', 'handshake-refused', 'banned', 'db-allow', 'db-deny'];

/** "1h" (that long before now) or an ISO date/time ("2024-05-01", "2024-05-01T12:00:00Z"). */
export function parseWhen(text: string, flag: string, now: Date): Date {
  const t = text.trim();
  if (/^\d{4}-\d{2}-\d{2}/.test(t)) {
    const ms = Date.parse(t);
    if (Number.isNaN(ms)) throw new UsageError(`${flag}: '${text}' is not a valid date; write e.g. 2024-05-01 or 2024-05-01T12:00:00Z`);
    return new Date(ms);
  }
  try {
    return new Date(now.getTime() - parseDuration(t, flag));
  } catch {
    throw new UsageError(`${flag}: '${text}' is neither a duration before now (30m, 1h, 7d) nor a date (2024-05-01, 2024-05-01T12:00:00Z)`);
  }
}

export interface AuditFlags {
  since?: string;
  until?: string;
  identity?: string;
  tunnel?: string;
  kind?: string;
  limit?: string;
}

export function auditFilter(flags: AuditFlags, now = new Date()): AuditFilter {
  const filter: AuditFilter = {};
  if (flags.since !== undefined) filter.since = parseWhen(flags.since, '--since', now);
  if (flags.until !== undefined) filter.until = parseWhen(flags.until, '--until', now);
  if (filter.since && filter.until && filter.since > filter.until) throw new UsageError(`--since (${filter.since.toISOString()}) is after --until (${filter.until.toISOString()})`);
  if (flags.identity !== undefined) filter.identity = flags.identity;
  if (flags.tunnel !== undefined) filter.tunnel = flags.tunnel;
  if (flags.kind !== undefined) {
    if (!(AUDIT_KINDS as readonly string[]).includes(flags.kind)) throw new UsageError(`--kind: '${flags.kind}' is not one of ${AUDIT_KINDS.join(', ')}`);
    filter.kind = flags.kind as AuditKind;
  }
  if (flags.limit !== undefined) {
    if (!/^\d+$/.test(flags.limit) || Number(flags.limit) < 1 || Number(flags.limit) > 1_000_000) throw new UsageError(`--limit: '${flags.limit}' should be a whole number from 1 to 1000000`);
    filter.limit = Number(flags.limit);
  }
  return filter;
}

function table(rows: string[][]): string {
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatAudit(records: AuditRecord[]): string {
  if (records.length === 0) return 'no audit records match\n';
  const dash = (v: string | number | null): string => (v === null || v === '' ? '-' : String(v));
  return table([
    ['TIME', 'KIND', 'IDENTITY', 'SOURCE', 'TUNNEL', 'IN', 'OUT', 'MS', 'REASON'],
    ...records.map((r) => [r.time.toISOString(), r.kind, dash(r.identity), r.source, dash(r.tunnel), dash(r.bytesIn), dash(r.bytesOut), dash(r.durationMs), dash(r.reason)]),
  ]);
}

export function register(program: Command): void {
  program
    .command('audit')
    .description('stream opens, refusals and closes, refused handshakes and bans, newest first')
    .option('--home <dir>', 'state directory')
    .option('--since <when>', 'from this long ago (1h, 7d) or this date (2024-05-01T12:00:00Z)')
    .option('--until <when>', 'up to this long ago or this date')
    .option('--identity <name>', 'only this user (or agent)')
    .option('--tunnel <name>', 'only this tunnel')
    .option('--kind <kind>', `only this kind: ${AUDIT_KINDS.join(', ')}`)
    .option('--limit <n>', `at most this many records (default ${AUDIT_QUERY_LIMIT})`)
    .option('--json', 'print JSON lines, as in the audit file')
    .action(async (opts: AuditFlags & { home?: string; json?: boolean }) => {
      const filter = auditFilter(opts);
      const records = await withStore(opts.home, (store) => store.queryAudit(filter));
      if (opts.json) {
        process.stdout.write(records.map(auditLine).join(''));
        return;
      }
      process.stdout.write(formatAudit(records));
    });
}
