// `warpstone agent`: dial out to the relay and serve the exposed targets; `warpstone agent stats
// NAME`: the agent's address history from the store (ops/address-stats.ts does the arithmetic).
import net from 'node:net';
import { Option, type Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseHostPort } from '../common/hostport.js';
import { StateError, UsageError } from '../common/errors.js';
import { readIdentityFile } from '../pki/pem.js';
import { Agent } from '../agent/agent.js';
import { checkUnique, loadAgentConfig, parseExpose, type Exposure } from '../agent/expose.js';
import { addressStats, type AddressStats } from '../ops/address-stats.js';
import { collect, onShutdown, withStore } from './shared.js';

export function register(program: Command): void {
  const agentCommand = program
    .command('agent')
    .description('dial out to the relay and expose local services as named tunnels')
    .option('--identity <file>', 'agent identity file from `warpstone issue agent`')
    .option('--relay <host:port>', 'the relay to dial')
    .option('--expose <name=host:port>', 'expose a service as a tunnel (repeatable)', collect, [])
    .option('--config <file>', 'YAML file with identity, relay and expose: {name: host:port, or name: {target: host:port, check: {...}}}')
    .addOption(new Option('--source-address <ip>', 'dial the relay from this local address').hideHelp())
    .action(async (opts: { identity?: string; relay?: string; expose: string[]; config?: string; sourceAddress?: string }) => {
      const config = opts.config ? loadAgentConfig(opts.config) : { exposures: [] as Exposure[], identity: undefined, relay: undefined };
      const identityPath = opts.identity ?? config.identity;
      const relayText = opts.relay ?? config.relay;
      if (!identityPath) throw new UsageError('agent: --identity FILE is required (or identity: in --config)');
      if (!relayText) throw new UsageError('agent: --relay HOST:PORT is required (or relay: in --config)');
      const exposures = checkUnique([...config.exposures, ...opts.expose.map((e) => parseExpose(e))]);
      if (exposures.length === 0) throw new UsageError('agent: nothing to expose; add --expose NAME=HOST:PORT');
      const identity = readIdentityFile(identityPath);
      if (identity.role !== 'agent') throw new UsageError(`agent: ${identityPath} holds a ${identity.role} certificate; issue one with 'warpstone issue agent NAME'`);
      const relay = parseHostPort(relayText, '--relay');
      const log = createLogger({ name: 'agent' });
      if (opts.sourceAddress !== undefined && net.isIP(opts.sourceAddress) === 0) throw new UsageError(`--source-address '${opts.sourceAddress}' is not an IP address`);
      const agent = new Agent({ identity, relay, exposures, log, ...(opts.sourceAddress ? { localAddress: opts.sourceAddress } : {}) });
      onShutdown(() => agent.stop());
      agent.start();
    });
  agentCommand
    .command('stats')
    .description("an agent's address history: changes, how long each address lasted, disconnects and errors")
    .argument('<name>', 'the agent')
    .option('--home <dir>', 'state directory')
    .option('--since <when>', 'period start: a duration back from now (30m, 12h, 7d, 2w) or an ISO date', '7d')
    .option('--json', 'print JSON (times in ISO 8601, durations in ms)')
    .action(async (name: string, opts: { home?: string; since: string; json?: boolean }) => {
      process.stdout.write(await runAgentStats(opts.home, name, opts.since, opts.json === true));
    });
}

/** "7d", "12h", "30m", "90s", "2w" back from `now`, or an ISO date/time. */
export function parseSince(text: string, now: Date): Date {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/.exec(text.trim());
  if (m) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return new Date(now.getTime() - Number(m[1]) * unit);
  }
  const parsed = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(parsed)) throw new UsageError(`--since '${text}': write a duration back from now (30m, 12h, 7d, 2w) or an ISO date (2026-11-16 or 2026-11-16T08:00:00Z)`);
  if (parsed > now.getTime()) throw new UsageError(`--since '${text}' is in the future`);
  return new Date(parsed);
}

/** The text `warpstone agent stats` prints (a table, or JSON). */
export async function runAgentStats(home: string | undefined, name: string, sinceText: string, json: boolean, now = new Date()): Promise<string> {
  const since = parseSince(sinceText, now);
  const stats = await withStore(home, async (store) => {
    const role = await store.roleOf(name);
    if (role === undefined) throw new StateError(`no agent named '${name}' was ever issued here`, 'WS_NO_SUCH_IDENTITY');
    if (role !== 'agent') throw new UsageError(`'${name}' is a ${role}, not an agent`);
    // all of them: the address in use when the period began may have appeared long before
    return addressStats(name, await store.listSightings(name), since, now);
  });
  return json ? JSON.stringify(stats, null, 2) + '\n' : formatAddressStats(stats, sinceText);
}

/** 850ms, 12.5s, 4m 05s, 3h 07m, 2d 04h */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms));
  if (total < 1_000) return `${total}ms`;
  if (total < 60_000) return `${(total / 1000).toFixed(1)}s`;
  const s = Math.floor(total / 1000);
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (s < 3_600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3_600)}h ${pad(Math.floor((s % 3_600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d ${pad(Math.floor((s % 86_400) / 3_600))}h`;
}

const when = (d: Date): string => d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');

function table(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatAddressStats(s: AddressStats, sinceText: string): string {
  let out = `agent ${s.agent}: address history from ${when(s.since)} (${sinceText}) to ${when(s.now)}\n`;
  if (!s.current) return out + 'never connected to this relay\n';
  out += s.current.connected
    ? `current address  ${s.current.address}, connected since ${when(s.current.lastConnectedAt)}, address in use since ${when(s.current.addressSince)}\n`
    : `last address     ${s.current.address}, offline since ${s.current.lastDisconnectedAt ? when(s.current.lastDisconnectedAt) : '?'}\n`;
  if (s.spans.length > 0) {
    out += '\n';
    out += table([
      ['ADDRESS', 'FROM', 'UNTIL', 'LASTED', 'LINKS', 'OFFLINE'],
      ...s.spans.map((sp) => [
        sp.address,
        when(sp.from),
        sp.open ? (s.current?.connected ? 'still in use' : `last seen ${when(sp.to)}`) : when(sp.to),
        sp.open ? `>= ${formatDuration(sp.lastedMs)}` : formatDuration(sp.lastedMs),
        String(sp.connections),
        formatDuration(sp.offlineMs),
      ]),
    ]);
  }
  out += '\n';
  const l = s.lasted;
  const rows: string[][] = [
    ['address changes', String(s.changes)],
    [
      'address lasted',
      l
        ? `mean ${formatDuration(l.meanMs)}  std ${l.stdMs === null ? '-' : formatDuration(l.stdMs)}  median ${formatDuration(l.medianMs)}  shortest ${formatDuration(l.shortestMs)}  longest ${formatDuration(l.longestMs)}  (${l.count} address${l.count === 1 ? '' : 'es'} ended in the period)`
        : 'no address ended in the period',
    ],
    [
      'connected',
      s.observedMs > 0
        ? `${((100 * s.connectedMs) / s.observedMs).toFixed(1)}% of the ${s.observedMs < s.periodMs ? 'time since its first connection' : 'period'} (offline ${formatDuration(s.observedMs - s.connectedMs)})`
        : '-',
    ],
    ['links', `${s.connections} begun, ${s.disconnects} ended, ${s.errors} of them with errors`],
  ];
  out += table(rows);
  if (s.reasons.length > 0) {
    out += '\n';
    out += table([['DISCONNECT REASON', 'COUNT', 'ERROR'], ...s.reasons.map((r) => [r.reason, String(r.count), r.error ? 'yes' : 'no'])]);
  }
  return out;
}
