// `warpstone ban list | add ADDR [--for DURATION] [--reason TEXT] | remove ADDR`: the bans in the
// store. A running relay picks up additions and removals within about a second (it polls the
// store's ban revision). ADDR is an address (banned as its /32, or its /64 for IPv6, the way
// the relay groups sources) or a CIDR block.
import type { Command } from 'commander';
import type { BanRecord } from '../store/ops-store.js';
import { UsageError } from '../common/errors.js';
import { BAN_DEFAULTS } from '../guard/ban-settings.js';
import { banPrefixOf } from '../guard/bans.js';
import { formatDuration, parseDuration } from '../guard/duration.js';
import { relative } from '../guard/explain.js';
import { cidrCovers, parseCidr } from '../guard/prefix.js';
import { withStore } from './shared.js';

export async function runBanAdd(home: string | undefined, address: string, options: { forMs?: number; reason?: string } = {}): Promise<BanRecord> {
  const prefix = banPrefixOf(address, 'ADDR');
  const reason = (options.reason ?? 'added by an admin').trim();
  if (reason.length > 500) throw new UsageError(`--reason: ${reason.length} characters; keep it under 500`);
  const forMs = options.forMs ?? parseDuration(BAN_DEFAULTS.adminBanTime, 'default ban time');
  return withStore(home, async (store) => {
    const last = await store.lastBan(prefix);
    const now = new Date();
    const record: BanRecord = {
      prefix,
      bannedAt: now,
      until: new Date(now.getTime() + forMs),
      offence: (last?.offence ?? 0) + 1,
      failures: 0,
      reason: reason || 'added by an admin',
      by: 'admin',
    };
    await store.putBan(record);
    return record;
  });
}

export interface BanRemoval {
  prefix: string;
  lifted: boolean;
  /** active bans of wider blocks that still cover the address */
  coveredBy: string[];
}

export async function runBanRemove(home: string | undefined, address: string): Promise<BanRemoval> {
  const prefix = banPrefixOf(address, 'ADDR');
  return withStore(home, async (store) => {
    const lifted = await store.removeBan(prefix);
    const target = parseCidr(prefix, 'ADDR', { v4: 32, v6: 128 });
    const coveredBy = (await store.listBans())
      .filter((b) => {
        try {
          return cidrCovers(parseCidr(b.prefix, 'ban', { v4: 32, v6: 128 }), target);
        } catch {
          return false;
        }
      })
      .map((b) => b.prefix);
    return { prefix, lifted, coveredBy };
  });
}

function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatBans(bans: BanRecord[], now: Date, showState: boolean): string {
  if (bans.length === 0) return showState ? 'no bans recorded\n' : 'no active bans\n';
  const head = ['PREFIX', ...(showState ? ['STATE'] : []), 'UNTIL', 'OFFENCE', 'BY', 'REASON'];
  return table([
    head,
    ...bans.map((b) => [
      b.prefix,
      ...(showState ? [b.until > now ? 'active' : 'expired'] : []),
      `${b.until.toISOString()} (${relative(b.until, now)})`,
      String(b.offence),
      b.by,
      b.reason,
    ]),
  ]);
}

export function register(program: Command): void {
  const ban = program.command('ban').description('list, add and remove bans of source addresses (a running relay applies changes within a second)');
  ban
    .command('list')
    .description('active bans: prefix, until, offence, who banned, why')
    .option('--home <dir>', 'state directory')
    .option('--all', 'also bans that expired (the history that makes repeat bans longer)')
    .option('--json', 'print JSON')
    .action(async (opts: { home?: string; all?: boolean; json?: boolean }) => {
      const bans = await withStore(opts.home, (store) => store.listBans({ all: opts.all === true }));
      const now = new Date();
      process.stdout.write(opts.json ? JSON.stringify(bans, null, 2) + '\n' : formatBans(bans, now, opts.all === true));
    });
  ban
    .command('add')
    .description('ban ADDR (an address: its /32 or IPv6 /64; or a CIDR block)')
    .argument('<addr>')
    .option('--home <dir>', 'state directory')
    .option('--for <duration>', `how long: 30s, 10m, 1h, 1d, 1w (default ${BAN_DEFAULTS.adminBanTime})`)
    .option('--reason <text>', 'why, for the list and the audit log')
    .action(async (addr: string, opts: { home?: string; for?: string; reason?: string }) => {
      const forMs = opts.for === undefined ? undefined : parseDuration(opts.for, '--for');
      const record = await runBanAdd(opts.home, addr, { ...(forMs !== undefined ? { forMs } : {}), ...(opts.reason !== undefined ? { reason: opts.reason } : {}) });
      process.stdout.write(
        `banned ${record.prefix} for ${formatDuration(record.until.getTime() - record.bannedAt.getTime())}, until ${record.until.toISOString()} (offence ${record.offence})\n`,
      );
    });
  ban
    .command('remove')
    .description('lift the ban of ADDR (and forget its past bans)')
    .argument('<addr>')
    .option('--home <dir>', 'state directory')
    .action(async (addr: string, opts: { home?: string }) => {
      const removal = await runBanRemove(opts.home, addr);
      let out = removal.lifted ? `unbanned ${removal.prefix}\n` : `${removal.prefix} was not banned\n`;
      if (removal.coveredBy.length > 0) out += `still banned through ${removal.coveredBy.join(', ')}; remove that block to admit it\n`;
      process.stdout.write(out);
    });
}
