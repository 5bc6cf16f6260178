// `warpstone limit set tunnel|user NAME --baseline RATE [--max RATE] [--credits SIZE]`,
// `warpstone limit remove tunnel|user NAME`, `warpstone limit list [--json]`: bandwidth limits in
// the store. Each change bumps the policy revision, so a running relay reloads its buckets within
// about a second (credits of unchanged limits are kept). A limit counts both directions together
// and applies to streams opened after it is set.
// Owns: argument checks and printing for limits. Must not: model buckets (src/guard/shaper.ts).
import type { Command } from 'commander';
import type { LimitRecord, LimitScope, OpsStore } from '../store/ops-store.js';
import type { Store } from '../store/store.js';
import { StateError, UsageError } from '../common/errors.js';
import { assertValidName } from '../pki/names.js';
import { formatDuration } from '../guard/duration.js';
import { limitProblem } from '../guard/shaper.js';
import { burstSeconds, formatRate, formatSize, parseRate, parseSize } from '../guard/shaper-units.js';
import { withStore } from './shared.js';

export interface LimitFlags {
  baseline?: string;
  max?: string;
  credits?: string;
}

export function parseScope(text: string): LimitScope {
  if (text === 'tunnel' || text === 'user') return text;
  throw new UsageError(`the first argument says what is limited: 'tunnel' or 'user', got '${text}'`, 'WS_BAD_SCOPE');
}

/**
 * The record `limit set` writes, from its flags. --max defaults to the baseline and --credits to
 * 0 (a plain rate limit); bursting needs both a --max above the baseline and --credits.
 */
export function limitFromFlags(scopeText: string, name: string, flags: LimitFlags): LimitRecord {
  const scope = parseScope(scopeText);
  assertValidName(name, scope);
  if (flags.baseline === undefined) throw new UsageError('--baseline RATE is required (e.g. --baseline 10Mbit)', 'WS_BAD_UNIT');
  const baseline = parseRate(flags.baseline, '--baseline');
  const max = flags.max === undefined ? baseline : parseRate(flags.max, '--max');
  const credits = flags.credits === undefined ? 0 : parseSize(flags.credits, '--credits');
  if (max < baseline) {
    throw new UsageError(`--max: ${formatRate(max)} is below --baseline ${formatRate(baseline)}; the maximum is the rate reached while credits last`, 'WS_BAD_LIMIT');
  }
  if (max > baseline && credits === 0) {
    throw new UsageError(`--credits: bursting to --max ${formatRate(max)} needs credits to spend; give --credits SIZE (e.g. --credits 1GB), or drop --max for a plain limit`, 'WS_BAD_LIMIT');
  }
  if (credits > 0 && max === baseline) {
    throw new UsageError(`--max: credits are spent only above the baseline; give --max above ${formatRate(baseline)}, or drop --credits for a plain limit`, 'WS_BAD_LIMIT');
  }
  const record: LimitRecord = { scope, name, baselineBytesPerSecond: baseline, maxBytesPerSecond: max, creditCapBytes: credits };
  const problem = limitProblem(record);
  if (problem) throw new UsageError(problem, 'WS_BAD_LIMIT');
  return record;
}

type LimitStore = Pick<OpsStore, 'setLimit' | 'removeLimit' | 'listLimits'>;

/** The store's limit methods, or a clear error where this build's store has none. */
function limitsOf(store: Store): LimitStore {
  const s = store as Partial<LimitStore>;
  if (typeof s.setLimit !== 'function' || typeof s.removeLimit !== 'function' || typeof s.listLimits !== 'function') {
    throw new StateError('this store does not keep bandwidth limits (no limits table in this build)', 'WS_NO_LIMITS');
  }
  return s as LimitStore;
}

export interface SetOutcome {
  record: LimitRecord;
  previous: LimitRecord | undefined;
  /** things the operator should know (a tunnel never seen, ...) */
  notes: string[];
}

export async function runLimitSet(home: string | undefined, scope: string, name: string, flags: LimitFlags): Promise<SetOutcome> {
  const record = limitFromFlags(scope, name, flags);
  return withStore(home, async (store) => {
    const limits = limitsOf(store);
    const notes: string[] = [];
    if (record.scope === 'user') {
      const role = await store.roleOf(name);
      if (role === undefined) throw new UsageError(`no identity named '${name}'; issue it first with 'warpstone issue user ${name} --out FILE'`, 'WS_NO_SUCH_USER');
      if (role !== 'user') throw new UsageError(`'${name}' is an ${role}, not a user; limit its tunnels with 'warpstone limit set tunnel NAME'`, 'WS_NOT_A_USER');
    } else if (!(await store.listTunnels()).some((t) => t.name === name)) {
      notes.push(`no agent has served tunnel '${name}' yet; the limit applies once one does`);
    }
    const previous = (await limits.listLimits()).find((l) => l.scope === record.scope && l.name === record.name);
    await limits.setLimit(record);
    return { record, previous, notes };
  });
}

export async function runLimitRemove(home: string | undefined, scope: string, name: string): Promise<boolean> {
  const s = parseScope(scope);
  assertValidName(name, s);
  return withStore(home, async (store) => limitsOf(store).removeLimit(s, name));
}

export async function runLimitList(home: string | undefined): Promise<LimitRecord[]> {
  return withStore(home, async (store) => limitsOf(store).listLimits());
}

/** One line per limit: what is always there, what a burst reaches and how long it lasts. */
export function describeLimit(l: LimitRecord): string {
  const burst = burstSeconds(l);
  const base = `baseline ${formatRate(l.baselineBytesPerSecond)}`;
  if (burst === null) return `${base}, no bursting`;
  return `${base}, bursts to ${formatRate(l.maxBytesPerSecond)} with up to ${formatSize(l.creditCapBytes)} of credit (a full burst lasts ${formatDuration(burst * 1000)})`;
}

export function formatLimits(limits: LimitRecord[]): string {
  if (limits.length === 0) return 'no bandwidth limits\n';
  const rows = [['SCOPE', 'NAME', 'BASELINE', 'MAX', 'CREDITS', 'FULL BURST'], ...limits.map((l) => {
    const burst = burstSeconds(l);
    return [l.scope, l.name, formatRate(l.baselineBytesPerSecond), formatRate(l.maxBytesPerSecond), formatSize(l.creditCapBytes), burst === null ? '-' : formatDuration(burst * 1000)];
  })];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function register(program: Command): void {
  const limit = program.command('limit').description('bandwidth limits per tunnel or user: a baseline, and credits to burst up to a maximum');
  limit
    .command('set')
    .description('set or change the limit of a tunnel or a user (both directions together)')
    .argument('<scope>', "'tunnel' or 'user'")
    .argument('<name>')
    .option('--baseline <rate>', 'always available, e.g. 10Mbit, 500kbit, 1.5MB/s')
    .option('--max <rate>', 'reached while credits last (default: the baseline)')
    .option('--credits <size>', 'the most credit kept for bursts, e.g. 1GB, 512MiB (default 0)')
    .option('--home <dir>', 'state directory')
    .action(async (scope: string, name: string, opts: LimitFlags & { home?: string }) => {
      const { record, previous, notes } = await runLimitSet(opts.home, scope, name, opts);
      for (const note of notes) process.stderr.write(`warpstone: note: ${note}\n`);
      process.stdout.write(`${previous ? 'changed' : 'set'}: ${record.scope} ${record.name}: ${describeLimit(record)}\n`);
    });
  limit
    .command('remove')
    .description('remove the limit of a tunnel or a user')
    .argument('<scope>', "'tunnel' or 'user'")
    .argument('<name>')
    .option('--home <dir>', 'state directory')
    .action(async (scope: string, name: string, opts: { home?: string }) => {
      const removed = await runLimitRemove(opts.home, scope, name);
      process.stdout.write(removed ? `removed: ${scope} ${name} is no longer limited\n` : `${scope} ${name} had no limit\n`);
    });
  limit
    .command('list')
    .description('the limits in the store')
    .option('--json', 'machine-readable (bytes and bytes per second)')
    .option('--home <dir>', 'state directory')
    .action(async (opts: { home?: string; json?: boolean }) => {
      const limits = await runLimitList(opts.home);
      process.stdout.write(opts.json ? `${JSON.stringify(limits, null, 2)}\n` : formatLimits(limits));
    });
}
