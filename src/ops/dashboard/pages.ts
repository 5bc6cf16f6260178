// The dashboard's server-rendered pages: overview (agents with address history, tunnels with
// health, credits and the live I/O graph, live streams, recent audit records, bans), one agent's
// address history, the audit log with filters, and the login page. Everything is readable
// without JavaScript; only the live graph needs the script (dashboard.js, served by the listener).
// Owns: page markup and the data each page gathers. Must not: change anything, or put a value
// into markup except through html`` (escaping).
import type { AuditKind, AuditRecord, BanRecord, LimitRecord, SightingRecord, TargetHealthRecord } from '../../store/ops-store.js';
import type { RelayStatus } from '../../relay/admin.js';
import type { OpsView, ShapingSnapshot } from '../view.js';
import type { IoGraph } from '../io-graph.js';
import { errorMessage } from '../../common/errors.js';
import { SafeHtml, ago, formatBytes, formatDuration, formatRate, formatTime, html, urlPart } from './html.js';

export const AUDIT_KINDS: readonly AuditKind[] = ['stream-open', 'stream-refused', 'stream-close', 'handshake-refused', 'banned', 'db-allow', 'db-deny'];
/** address history shown per agent on the overview */
const HISTORY_DAYS = 7;
const HISTORY_ROWS = 5;
/** agents whose history the overview loads, at most (one store query each) */
const HISTORY_AGENTS = 50;
/** live graphs on the overview, at most */
export const GRAPHS_MAX = 24;

/** Who is looking, for the page header. */
export interface Viewer {
  /** "loopback", "token 'phone'", "certificate 'ops'" */
  describe: string;
  /** a browser session that can log out */
  session: boolean;
}

export function layout(title: string, body: SafeHtml, viewer: Viewer | undefined, options: { graphs?: boolean } = {}): string {
  const page = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · warpstone</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/dashboard.css">
${options.graphs ? html`<link rel="stylesheet" href="/static/uPlot.min.css">
<script src="/static/uPlot.iife.min.js" defer></script>
<script src="/static/dashboard.js" defer></script>` : ''}
</head>
<body>
<header>
<nav><a href="/"><strong>warpstone</strong></a> <a href="/#agents">agents</a> <a href="/#tunnels">tunnels</a> <a href="/#streams">streams</a> <a href="/audit">audit</a> <a href="/#bans">bans</a> <a href="/metrics">metrics</a></nav>
${viewer ? html`<div class="who">signed in as ${viewer.describe}${viewer.session ? html` <form method="post" action="/logout" class="inline"><button type="submit">log out</button></form>` : ''}</div>` : ''}
</header>
<main>
${body}
</main>
</body>
</html>
`;
  return page.text;
}

export interface TunnelIo {
  totalIn: number;
  totalOut: number;
  peakIn: number;
  peakOut: number;
}

export interface OverviewData {
  now: number;
  status: RelayStatus;
  bans: BanRecord[];
  audit: AuditRecord[];
  health: TargetHealthRecord[];
  shaping: ShapingSnapshot[];
  limits: LimitRecord[];
  /** agent -> sightings of the last days, newest first */
  history: Map<string, SightingRecord[]>;
  io: Map<string, TunnelIo>;
  /** sources that could not be read, in words */
  problems: string[];
}

async function attempt<T>(what: string, problems: string[], read: () => Promise<T> | T, fallback: T): Promise<T> {
  try {
    return await read();
  } catch (err) {
    problems.push(`${what}: ${errorMessage(err)}`);
    return fallback;
  }
}

const newestFirst = (a: SightingRecord, b: SightingRecord): number => b.connectedAt.getTime() - a.connectedAt.getTime();

export function agentNames(status: RelayStatus): string[] {
  const names = new Set<string>(status.agents.map((a) => a.name));
  for (const t of status.tunnels) names.add(t.agent);
  return [...names].sort();
}

export function ioSummary(io: IoGraph, tunnel: string, now: number): TunnelIo | undefined {
  const series = io.series(tunnel, now);
  if (!series) return undefined;
  let totalIn = 0;
  let totalOut = 0;
  let peakIn = 0;
  let peakOut = 0;
  for (let i = 0; i < series.in.length; i++) {
    const a = series.in[i] ?? 0;
    const b = series.out[i] ?? 0;
    totalIn += a;
    totalOut += b;
    if (a > peakIn) peakIn = a;
    if (b > peakOut) peakOut = b;
  }
  return { totalIn, totalOut, peakIn, peakOut };
}

export async function gatherOverview(view: OpsView, io: IoGraph, now: number): Promise<OverviewData> {
  const problems: string[] = [];
  const emptyStatus: RelayStatus = { relay: { pid: 0, startedAt: '', listen: [], version: '' }, agents: [], tunnels: [], streams: [] };
  const [status, bans, audit, health, limits] = await Promise.all([
    attempt('relay status', problems, () => view.status(), emptyStatus),
    attempt('bans', problems, () => view.store.listBans({ now: new Date(now) }), [] as BanRecord[]),
    attempt('audit', problems, () => view.store.queryAudit({ limit: 25 }), [] as AuditRecord[]),
    attempt('target health', problems, () => view.store.listTargetHealth(), [] as TargetHealthRecord[]),
    attempt('limits', problems, () => view.store.listLimits(), [] as LimitRecord[]),
  ]);
  const shaping = await attempt('shaping', problems, () => view.shaping?.() ?? [], [] as ShapingSnapshot[]);
  const history = new Map<string, SightingRecord[]>();
  const since = new Date(now - HISTORY_DAYS * 86_400_000);
  await Promise.all(
    agentNames(status)
      .slice(0, HISTORY_AGENTS)
      .map(async (agent) => {
        const rows = await attempt(`address history of ${agent}`, problems, () => view.store.listSightings(agent, since), [] as SightingRecord[]);
        history.set(agent, [...rows].sort(newestFirst));
      }),
  );
  const ioByTunnel = new Map<string, TunnelIo>();
  for (const t of status.tunnels) {
    const summary = ioSummary(io, t.name, now);
    if (summary) ioByTunnel.set(t.name, summary);
  }
  return { now, status, bans, audit, health, shaping, limits, history, io: ioByTunnel, problems };
}

function problemsBlock(problems: string[]): SafeHtml {
  if (problems.length === 0) return html``;
  return html`<div class="problems" role="alert"><strong>Some data could not be read:</strong><ul>${problems.map((p) => html`<li>${p}</li>`)}</ul></div>`;
}

function agentsSection(d: OverviewData): SafeHtml {
  const connected = new Map(d.status.agents.map((a) => [a.name, a]));
  const rows = agentNames(d.status).map((name) => {
    const link = connected.get(name);
    const history = d.history.get(name) ?? [];
    const addresses = new Set(history.map((h) => h.address));
    const last = history[0];
    return html`<tr>
<td><a href="/agents/${urlPart(name)}">${name}</a></td>
<td>${link ? html`<span class="ok">online</span>` : html`<span class="bad">offline</span>`}</td>
<td>${link ? link.address : (last?.address ?? '-')}</td>
<td>${link ? html`${formatTime(link.connectedSince)} <small>(${ago(link.connectedSince, d.now)})</small>` : last?.disconnectedAt ? html`gone since ${formatTime(last.disconnectedAt)}` : '-'}</td>
<td>${link ? link.tunnels.join(', ') : '-'}</td>
<td class="num">${link ? link.streams : 0}</td>
<td>${history.length === 0
        ? 'no sightings'
        : html`${addresses.size} address${addresses.size === 1 ? '' : 'es'}, ${history.length} connection${history.length === 1 ? '' : 's'} in ${HISTORY_DAYS} days
<ul class="history">${history.slice(0, HISTORY_ROWS).map((h) => html`<li>${h.address} <small>${formatTime(h.connectedAt)} – ${h.disconnectedAt ? formatTime(h.disconnectedAt) : 'now'}${h.reason ? html` (${h.reason})` : ''}</small></li>`)}</ul>`}</td>
</tr>`;
  });
  return html`<section id="agents"><h2>Agents</h2>
${rows.length === 0 ? html`<p>No agent has registered yet.</p>` : html`<table>
<thead><tr><th>Name</th><th>State</th><th>Address</th><th>Connected</th><th>Tunnels</th><th>Streams</th><th>Address history</th></tr></thead>
<tbody>${rows}</tbody></table>`}
</section>`;
}

function healthCell(records: TargetHealthRecord[], now: number): SafeHtml {
  if (records.length === 0) return html`not reported`;
  return html`${records.map(
    (h) => html`<span class="${h.state === 'up' ? 'ok' : 'bad'}">${h.state}</span> since ${formatTime(h.since)} <small>(${ago(h.since, now)}; ${h.detail})</small> `,
  )}`;
}

function shapingCell(limit: LimitRecord | undefined, bucket: ShapingSnapshot | undefined): SafeHtml {
  if (!limit && !bucket) return html`no limit`;
  const parts: SafeHtml[] = [];
  if (limit) parts.push(html`baseline ${formatRate(limit.baselineBytesPerSecond)}, burst up to ${formatRate(limit.maxBytesPerSecond)}`);
  if (bucket) {
    parts.push(
      html`<br>credits ${formatBytes(bucket.credits)} of ${formatBytes(bucket.creditCap)}, now ${formatRate(bucket.rateBytesPerSecond)} ${bucket.state === 'burst' ? html`<span class="ok">may burst</span>` : html`<span class="warn">credits exhausted, baseline only</span>`}`,
    );
  }
  return html`${parts}`;
}

function tunnelsSection(d: OverviewData): SafeHtml {
  const streamsPer = new Map<string, number>();
  for (const s of d.status.streams) streamsPer.set(s.tunnel, (streamsPer.get(s.tunnel) ?? 0) + 1);
  const items = d.status.tunnels.map((t, index) => {
    const health = d.health.filter((h) => h.tunnel === t.name);
    const limit = d.limits.find((l) => l.scope === 'tunnel' && l.name === t.name);
    const bucket = d.shaping.find((b) => b.scope === 'tunnel' && b.name === t.name);
    const io = d.io.get(t.name);
    return html`<article class="tunnel" id="tunnel-${urlPart(t.name)}">
<h3>${t.name} ${t.online ? html`<span class="ok">online</span>` : html`<span class="bad">offline</span>`}</h3>
<dl>
<dt>Agent</dt><dd>${t.agent}${t.port ? html` (port ${t.port})` : ''}</dd>
<dt>Last seen</dt><dd>${formatTime(t.lastSeen)}</dd>
<dt>Target health</dt><dd>${healthCell(health, d.now)}</dd>
<dt>Bandwidth</dt><dd>${shapingCell(limit, bucket)}</dd>
<dt>Live streams</dt><dd>${streamsPer.get(t.name) ?? 0}</dd>
<dt>Last hour</dt><dd>${io
      ? html`in ${formatBytes(io.totalIn)} (peak ${formatRate(io.peakIn)}), out ${formatBytes(io.totalOut)} (peak ${formatRate(io.peakOut)})`
      : 'no traffic recorded'}</dd>
</dl>
${index < GRAPHS_MAX
      ? html`<div class="io-graph" data-tunnel="${t.name}" aria-label="bytes per second of ${t.name} over the last hour"><noscript>The live graph needs JavaScript; <a href="/api/io?tunnel=${urlPart(t.name)}">the numbers</a> are plain JSON.</noscript></div>`
      : html`<p><a href="/api/io?tunnel=${urlPart(t.name)}">bytes per second, last hour (JSON)</a></p>`}
</article>`;
  });
  return html`<section id="tunnels"><h2>Tunnels</h2>
${items.length === 0 ? html`<p>No tunnel is known yet.</p>` : items}
</section>`;
}

function streamsSection(d: OverviewData): SafeHtml {
  const rows = d.status.streams.map(
    (s) => html`<tr><td class="num">${s.id}</td><td>${s.user}</td><td>${s.tunnel}</td><td>${s.agent}</td><td>${s.source}</td><td>${s.via}</td><td>${formatTime(s.openedAt)} <small>(${ago(s.openedAt, d.now)})</small></td><td class="num">${formatBytes(s.bytesIn)}</td><td class="num">${formatBytes(s.bytesOut)}</td></tr>`,
  );
  return html`<section id="streams"><h2>Live streams (${rows.length})</h2>
${rows.length === 0 ? html`<p>No stream is open.</p>` : html`<table>
<thead><tr><th>ID</th><th>User</th><th>Tunnel</th><th>Agent</th><th>From</th><th>Via</th><th>Opened</th><th>In</th><th>Out</th></tr></thead>
<tbody>${rows}</tbody></table>`}
</section>`;
}

export function auditTable(records: AuditRecord[]): SafeHtml {
  if (records.length === 0) return html`<p>No audit records.</p>`;
  return html`<table>
<thead><tr><th>Time</th><th>Kind</th><th>Identity</th><th>Source</th><th>Tunnel</th><th>Target</th><th>In</th><th>Out</th><th>Duration</th><th>Reason</th></tr></thead>
<tbody>${records.map(
    (r) => html`<tr class="kind-${r.kind}"><td>${formatTime(r.time)}</td><td>${r.kind}</td><td>${r.identity ?? '-'}</td><td>${r.source}</td><td>${r.tunnel ?? '-'}</td><td>${r.target ?? '-'}</td><td class="num">${r.bytesIn === null ? '-' : formatBytes(r.bytesIn)}</td><td class="num">${r.bytesOut === null ? '-' : formatBytes(r.bytesOut)}</td><td>${r.durationMs === null ? '-' : formatDuration(r.durationMs)}</td><td>${r.reason ?? ''}</td></tr>`,
  )}</tbody></table>`;
}

function bansSection(d: OverviewData): SafeHtml {
  const rows = d.bans.map(
    (b) => html`<tr><td>${b.prefix}</td><td>${formatTime(b.bannedAt)}</td><td>${formatTime(b.until)} <small>(${formatDuration(b.until.getTime() - d.now)} left)</small></td><td class="num">${b.offence}</td><td class="num">${b.failures}</td><td>${b.by}</td><td>${b.reason}</td></tr>`,
  );
  return html`<section id="bans"><h2>Active bans (${rows.length})</h2>
${rows.length === 0 ? html`<p>No source is banned.</p>` : html`<table>
<thead><tr><th>Source</th><th>Since</th><th>Until</th><th>Offence</th><th>Failures</th><th>By</th><th>Reason</th></tr></thead>
<tbody>${rows}</tbody></table>`}
</section>`;
}

export function overviewPage(d: OverviewData, viewer: Viewer | undefined): string {
  const r = d.status.relay;
  const body = html`<h1>Relay overview</h1>
<p class="meta">${r.pid ? html`pid ${r.pid}, up since ${formatTime(r.startedAt)} (${ago(r.startedAt, d.now)}), listening on ${r.listen.join(', ') || '-'}.` : ''} Page made at ${formatTime(new Date(d.now))}; reload for fresh tables (the graphs update by themselves).</p>
${problemsBlock(d.problems)}
${agentsSection(d)}
${tunnelsSection(d)}
${streamsSection(d)}
<section id="audit"><h2>Recent audit records</h2>
${auditTable(d.audit)}
<p><a href="/audit">The whole audit log, with filters</a></p>
</section>
${bansSection(d)}`;
  return layout('Relay overview', body, viewer, { graphs: d.status.tunnels.length > 0 });
}

export async function agentPage(view: OpsView, name: string, now: number, viewer: Viewer | undefined): Promise<string> {
  const problems: string[] = [];
  const since = new Date(now - 30 * 86_400_000);
  const rows = [...(await attempt('address history', problems, () => view.store.listSightings(name, since), [] as SightingRecord[]))].sort(newestFirst);
  const addresses = new Set(rows.map((r) => r.address));
  let changes = 0;
  for (let i = 1; i < rows.length; i++) if (rows[i]?.address !== rows[i - 1]?.address) changes += 1;
  const body = html`<h1>Agent ${name}</h1>
${problemsBlock(problems)}
<p>${rows.length} connection${rows.length === 1 ? '' : 's'} from ${addresses.size} address${addresses.size === 1 ? '' : 'es'} in the last 30 days; the address changed ${changes} time${changes === 1 ? '' : 's'}.</p>
${rows.length === 0 ? html`<p>No sightings.</p>` : html`<table>
<thead><tr><th>Address</th><th>Connected</th><th>Disconnected</th><th>Lasted</th><th>Why it ended</th></tr></thead>
<tbody>${rows.slice(0, 500).map(
      (s) => html`<tr><td>${s.address}</td><td>${formatTime(s.connectedAt)}</td><td>${s.disconnectedAt ? formatTime(s.disconnectedAt) : 'connected'}</td><td>${formatDuration((s.disconnectedAt?.getTime() ?? now) - s.connectedAt.getTime())}</td><td>${s.reason ?? ''}</td></tr>`,
    )}</tbody></table>`}
<p><a href="/">Back to the overview</a></p>`;
  return layout(`Agent ${name}`, body, viewer);
}

export interface AuditQuery {
  identity?: string;
  tunnel?: string;
  kind?: AuditKind;
  limit: number;
}

export async function auditPage(view: OpsView, query: AuditQuery, viewer: Viewer | undefined): Promise<string> {
  const problems: string[] = [];
  const records = await attempt('audit', problems, () => view.store.queryAudit(query), [] as AuditRecord[]);
  const body = html`<h1>Audit log</h1>
${problemsBlock(problems)}
<form method="get" action="/audit" class="filters">
<label>Identity <input name="identity" value="${query.identity ?? ''}" maxlength="100"></label>
<label>Tunnel <input name="tunnel" value="${query.tunnel ?? ''}" maxlength="100"></label>
<label>Kind <select name="kind"><option value="">any</option>${AUDIT_KINDS.map((k) => html`<option value="${k}"${query.kind === k ? html` selected` : ''}>${k}</option>`)}</select></label>
<label>Rows <input name="limit" type="number" min="1" max="1000" value="${query.limit}"></label>
<button type="submit">Show</button>
</form>
${auditTable(records)}`;
  return layout('Audit log', body, viewer);
}

export function loginPage(message: string | undefined): string {
  const body = html`<h1>Sign in</h1>
${message ? html`<p class="bad" role="alert">${message}</p>` : ''}
<p>This listener admits its own host without credentials; from elsewhere it needs an admin token.
Make one on the relay host with <code>warpstone admin token --label NAME</code>.</p>
<form method="post" action="/login">
<label>Admin token <input name="token" type="password" autocomplete="off" required maxlength="200"></label>
<button type="submit">Sign in</button>
</form>`;
  return layout('Sign in', body, undefined);
}

export function errorPage(status: number, message: string): string {
  return layout(`${status}`, html`<h1>${status}</h1><p>${message}</p><p><a href="/">Overview</a></p>`, undefined);
}
