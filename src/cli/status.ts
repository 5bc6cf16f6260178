// `warpstone status`: agents, tunnels and live streams of the running relay (read from its admin
// socket), or what the store remembers when no relay runs.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { homePaths } from '../common/home.js';
import { fetchStatus, type RelayStatus } from '../relay/admin.js';
import { withStore } from './shared.js';
import { errorMessage } from '../common/errors.js';
import { formatRate, formatSize } from '../guard/shaper-units.js';
import type { TargetHealthRecord } from '../store/ops-store.js';

function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

/** "up since 12:00:03Z" / "down: connection refused" for a tunnel, from the agent's checks. */
function healthText(tunnel: string, agent: string, health: readonly TargetHealthRecord[]): string {
  const h = health.find((r) => r.tunnel === tunnel && r.agent === agent);
  if (!h) return '-';
  return h.state === 'up' ? `up since ${h.since.toISOString()}` : `DOWN since ${h.since.toISOString()}: ${h.detail}`;
}

/** Credits and rates of each bandwidth limit, so a burst is never mistaken for capacity. */
function shapingTable(s: RelayStatus): string {
  const buckets = s.shaping ?? [];
  if (buckets.length === 0) return '';
  return (
    `\nbandwidth limits (${buckets.length})\n` +
    table([
      ['LIMIT', 'STATE', 'NOW ALLOWED', 'MEASURED', 'BASELINE', 'MAX', 'CREDITS', 'STREAMS'],
      ...buckets.map((b) => [
        `${b.scope} ${b.name}`,
        b.exhausted ? `${b.state} (credits exhausted)` : b.state,
        formatRate(b.allowedBytesPerSecond),
        formatRate(b.measuredBytesPerSecond),
        formatRate(b.baselineBytesPerSecond),
        formatRate(b.maxBytesPerSecond),
        b.creditCapBytes > 0 ? `${formatSize(b.credits)} of ${formatSize(b.creditCapBytes)}` : '-',
        String(b.streams),
      ]),
    ])
  );
}

export function formatStatus(s: RelayStatus, health: readonly TargetHealthRecord[] = []): string {
  let out = `relay pid ${s.relay.pid}, up since ${s.relay.startedAt}, listening on ${s.relay.listen.join(', ')}\n\n`;
  out += `agents (${s.agents.length} connected)\n`;
  out += table([['NAME', 'FROM', 'CONNECTED SINCE', 'TUNNELS', 'STREAMS'], ...s.agents.map((a) => [a.name, a.address, a.connectedSince, a.tunnels.join(','), String(a.streams)])]);
  out += `\ntunnels (${s.tunnels.filter((t) => t.online).length} of ${s.tunnels.length} online)\n`;
  out += table([
    ['TUNNEL', 'STATE', 'AGENT', 'PORT', 'LAST SEEN', 'TARGET HEALTH'],
    ...s.tunnels.map((t) => [t.name, t.online ? 'online' : 'offline', t.agent, String(t.port), t.lastSeen, healthText(t.name, t.agent, health)]),
  ]);
  out += `\nstreams (${s.streams.length} live)\n`;
  out += table([
    ['ID', 'USER', 'TUNNEL', 'FROM', 'VIA', 'OPENED', 'BYTES IN', 'BYTES OUT'],
    ...s.streams.map((st) => [String(st.id), st.user, st.tunnel, st.source, st.via, st.openedAt, String(st.bytesIn), String(st.bytesOut)]),
  ]);
  out += shapingTable(s);
  return out;
}

export function register(program: Command): void {
  program
    .command('status')
    .description('agents, tunnels and live streams of the running relay')
    .option('--home <dir>', 'state directory')
    .option('--json', 'print JSON')
    .action(async (opts: { home?: string; json?: boolean }) => {
      const paths = homePaths(opts.home);
      let status: RelayStatus | undefined;
      let why = '';
      if (existsSync(paths.adminSocket)) {
        status = await fetchStatus(paths.adminSocket).catch((err: unknown) => {
          why = errorMessage(err);
          return undefined;
        });
      } else {
        why = `no admin socket at ${paths.adminSocket}`;
      }
      // target health lives in the store (the relay records each change), running relay or not
      const health = await withStore(opts.home, (store) => store.listTargetHealth()).catch(() => [] as TargetHealthRecord[]);
      if (status) {
        process.stdout.write(opts.json ? JSON.stringify({ ...status, health }, null, 2) + '\n' : formatStatus(status, health));
        return;
      }
      const tunnels = await withStore(opts.home, (store) => store.listTunnels());
      const offline: RelayStatus = {
        relay: { pid: 0, startedAt: '-', listen: [], version: '1' },
        agents: [],
        tunnels: tunnels.map((t) => ({ name: t.name, agent: t.agent, port: t.port, online: false, lastSeen: t.lastSeen.toISOString() })),
        streams: [],
      };
      if (opts.json) {
        process.stdout.write(JSON.stringify({ running: false, reason: why, ...offline, health }, null, 2) + '\n');
        return;
      }
      process.stdout.write(`relay is not running (${why}); what the store remembers:\n\n` + formatStatus(offline, health).split('\n').slice(2).join('\n'));
    });
}
