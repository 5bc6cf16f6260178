// `warpstone status`: agents, tunnels and live streams of the running relay (read from its admin
// socket), or what the store remembers when no relay runs.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { homePaths } from '../common/home.js';
import { fetchStatus, type RelayStatus } from '../relay/admin.js';
import { withStore } from './shared.js';
import { errorMessage } from '../common/errors.js';

function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function formatStatus(s: RelayStatus): string {
  let out = `relay pid ${s.relay.pid}, up since ${s.relay.startedAt}, listening on ${s.relay.listen.join(', ')}\n\n`;
  out += `agents (${s.agents.length} connected)\n`;
  out += table([['NAME', 'FROM', 'CONNECTED SINCE', 'TUNNELS', 'STREAMS'], ...s.agents.map((a) => [a.name, a.address, a.connectedSince, a.tunnels.join(','), String(a.streams)])]);
  out += `\ntunnels (${s.tunnels.filter((t) => t.online).length} of ${s.tunnels.length} online)\n`;
  out += table([['TUNNEL', 'STATE', 'AGENT', 'PORT', 'LAST SEEN'], ...s.tunnels.map((t) => [t.name, t.online ? 'online' : 'offline', t.agent, String(t.port), t.lastSeen])]);
  out += `\nstreams (${s.streams.length} live)\n`;
  out += table([
    ['ID', 'USER', 'TUNNEL', 'FROM', 'VIA', 'OPENED', 'BYTES IN', 'BYTES OUT'],
    ...s.streams.map((st) => [String(st.id), st.user, st.tunnel, st.source, st.via, st.openedAt, String(st.bytesIn), String(st.bytesOut)]),
  ]);
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
      if (status) {
        process.stdout.write(opts.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
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
        process.stdout.write(JSON.stringify({ running: false, reason: why, ...offline }, null, 2) + '\n');
        return;
      }
      process.stdout.write(`relay is not running (${why}); what the store remembers:\n\n` + formatStatus(offline).split('\n').slice(2).join('\n'));
    });
}
