// Runs a parsed `warpstone stone` program (grammar.ts). Each stone is one of:
//   - a stream relay: TCP or UNIX-socket listener (optionally `/ssl`, tls-front.ts) to a TCP or
//     UNIX-socket destination (optionally `/ssl` or `/http`), pumped by tcp-relay.ts;
//   - TCP/UNIX listener to a `/udp` destination, or a `/udp` listener to a stream destination,
//     with stone's 2-byte framing on the stream side (tcp-to-udp.ts, udp-to-stream.ts);
//   - `/udp` listener to a `/udp` destination (udp-relay.ts);
//   - `proxy` (proxy-stone.ts), `health` and `identd` (command-stones.ts) on a stream listener;
// with `/base`, `/proxy`, `/mproxy` applied per pair (stream-filters.ts) and `sport/http`
// listeners (tcp-relay.ts),
// with stone 2.4's xhost decisions, -p/-pp/-ppp dumps, -d/-a/-L/-n logging, -X (dump chunking
// only), -T idle timeout, -A backlog, -u, -i pid file, -N (check, open the listeners, log them,
// stop), -b backups / -B balance groups (failover.ts, checked by health.ts), /ident listeners
// (ident-lookup.ts) and the value escapes of /http request lines (peer-values.ts). Anything else
// is refused before anything starts (support.ts, WS_STONE_UNSUPPORTED). With `--json` the same
// lines are written as JSON objects (json-log.ts). With an `admission` hook (`--ban-home`,
// admission.ts, stone-bans.ts) a banned source is dropped as its connection is accepted (before
// /ident, xhost, TLS or the destination) and its datagrams are ignored, and every TCP client the
// xhost list refuses is reported to the hook; without one nothing changes.
// Start-up follows stone (`stone 3: proxy <- SRC` for commands, whose -dd xhost lines read
// `using proxy by`, `health check by`, `ident query by`): `start (2.4) [PID]`, `Debug level: N` (-d), then per stone `LB set:`
// (-dd), its xhost entries at -dd (`stone 3: connecting to DST by ADDR/BITS is permitted`),
// `stone 3: DST <- SRC`, `master M backup B interval N` (-dd), then `SSL thread nlocks=1` and
// `MinInterval: N` at -dd. Per client of a stream listener: ident query (/ident), xhost check
// (`access denied` always), `-a` line, `accepted` (-dd or a dump mode), then the pair.
// Differences from stone on purpose: SIGTERM/SIGINT exit 0 (stone exits 1) after the same
// `SIGTERM/INT. exiting` line; an IPv4 xhost entry matches an IPv4 client of a dual-stack `/v6`
// listener (xhost.ts); -X never limits how much is read or written at once; a stale UNIX socket
// file is replaced (unix-socket.ts); a name that cannot be resolved stops start-up with an error
// naming the stone or option (stone skips a -b rule it cannot resolve).
// Owns: listeners, name resolution at start-up, the accept path. Must not: parse command lines,
// format lines (logline.ts, dump.ts) or pump bytes (tcp-relay.ts, udp-relay.ts, tcp-to-udp.ts,
// udp-to-stream.ts).
import net from 'node:net';
import dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import { writeFileSync } from 'node:fs';
import { WarpstoneError, errorMessage } from '../common/errors.js';
import { peercredAddon } from '../identity/peercred.js';
import { checkSupported, describeStone } from './support.js';
import { StoneLog, ipText } from './stone-log.js';
import { PairSet, TcpPair, socketFd, type PairTarget, type PairTls, type TemplateValues } from './tcp-relay.js';
import { StoneSslError, clientOptions, clientServerName, serverContext } from './ssl.js';
import { TlsFront, type ListenerTls } from './tls-front.js';
import { decide, parseIpAddress, resolveXhosts, type XhostResolver } from './xhost.js';
import { Backup, HealthMonitor, routeStone, type Checker, type ResolvedGroup, type Router } from './failover.js';
import { peerValues, valuesUsed, type PeerInfo } from './peer-values.js';
import { identify } from './ident-lookup.js';
import { UdpRelay, dgramFd } from './udp-relay.js';
import { TcpToUdpPair, type DatagramTarget } from './tcp-to-udp.js';
import { UdpToStream } from './udp-to-stream.js';
import { UnixListenError, listenUnix } from './unix-socket.js';
import { lookupService } from './services.js';
import type { Address, Route } from './route.js';
import { Activity } from './activity.js';
import { Base64Decoder, Base64Encoder, HeaderInserter, chain, type ByteFilter } from './stream-filters.js';
import { expandTemplate } from './escapes.js';
import { serveProxyClient, type ProxyStone, type ResolvedPermit } from './proxy-stone.js';
import { serveCommandClient, type CommandContext } from './command-stones.js';
import type { StoneExt } from './logline.js';
import type { StoneAdmission } from './admission.js';
import type { BackupRule, BalanceGroup, HostPortExt, IpAddress, ProxyPermit, ResolvedXhostEntry, StoneDefinition, StoneProgram, TemplateValue } from './types.js';

/** A name or port of a stone cannot be resolved, or its listener cannot be opened. */
export class StoneStartError extends WarpstoneError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
  }
}

export interface RunningListener {
  readonly stone: StoneDefinition;
  /** the address listened on, or the socket path */
  readonly host: string;
  /** 0 for a UNIX socket */
  readonly port: number;
  readonly transport: 'tcp' | 'udp' | 'unix';
}

export interface RunningStones {
  readonly listeners: readonly RunningListener[];
  /** live stream pairs (TCP pairs, TCP<->UDP pairs, UDP-to-stream associations) */
  readonly pairCount: number;
  /** Closes listeners and pairs; with `signal`, logs stone's `SIGTERM/INT. exiting` first. */
  close(options?: { signal?: boolean }): Promise<void>;
}

export interface EngineOptions {
  /** resolves names (destinations, listener hosts, xhosts, -b, -B); default dns.lookup */
  readonly lookup?: (host: string, family: 0 | 4 | 6) => Promise<IpAddress>;
  readonly pid?: number;
  /** our own warnings (not stone log lines), e.g. options a stone ignores */
  readonly warn?: (message: string) => void;
  /** how long a UDP origin may stay silent (stone: 60 s); tests shorten it */
  readonly udpOriginIdleMs?: number;
  /** the -b health check (tests may replace it); default health.ts */
  readonly checker?: Checker;
  /** `--json`: log, dump and -a lines as JSON objects (json-log.ts) */
  readonly json?: boolean;
  /**
   * `--ban-home`: made once the log exists (its lines go there), before any listener opens;
   * closed after the listeners (stone-bans.ts). Absent: no ban checks at all.
   */
  readonly admission?: (log: StoneLog) => Promise<StoneAdmission>;
}

async function defaultLookup(host: string, family: 0 | 4 | 6): Promise<IpAddress> {
  const literal = parseIpAddress(host);
  if (literal) return literal;
  const found = await dns.lookup(host, { family });
  const parsed = parseIpAddress(found.address);
  if (!parsed) throw new Error(`unexpected address ${found.address}`);
  return parsed;
}

type Lookup = NonNullable<EngineOptions['lookup']>;

function resolveError(what: string, err: unknown): StoneStartError {
  return new StoneStartError('WS_STONE_RESOLVE', `${what}: ${errorMessage(err)}`, err);
}

function portOf(spec: { text: string; number: number | undefined }, protocol: 'tcp' | 'udp', what: string): number {
  if (spec.number !== undefined) return spec.number;
  const found = lookupService(spec.text, protocol);
  if (found !== undefined) return found;
  throw new StoneStartError('WS_STONE_RESOLVE', `${what}: unknown ${protocol} service '${spec.text}' (not in /etc/services)`);
}

function listenerExts(stone: StoneDefinition): StoneExt[] {
  const e = stone.listener.extensions;
  const out: StoneExt[] = [];
  if (e.transport === 'udp') out.push('udp');
  if (e.http) out.push('http');
  if (e.ssl) out.push('ssl');
  if (e.ipv6) out.push(e.ipOnly ? 'v6only' : 'v6');
  if (e.base64) out.push('base');
  if (e.blocking) out.push('block');
  if (e.ident) out.push('ident');
  out.push(...headerExts(stone));
  return out;
}

/** stone prints its command bits (/proxy, /mproxy) on both sides of a stone */
function headerExts(stone: StoneDefinition): StoneExt[] {
  const d = stone.destination;
  return d.kind === 'insert-header' ? [d.everyRequest ? 'mproxy' : 'proxy'] : [];
}

function destinationExts(stone: StoneDefinition): StoneExt[] {
  const e = stone.destination.extensions;
  const out: StoneExt[] = [];
  if (e.transport === 'udp') out.push('udp');
  if (stone.destination.kind === 'http-request') out.push('http');
  if (e.ssl) out.push('ssl');
  if (e.ipv6) out.push(e.ipOnly ? 'v6only' : 'v6');
  if (e.base64) out.push('base');
  if (e.blocking) out.push('block');
  if (e.noBackup) out.push('nobackup');
  out.push(...headerExts(stone));
  return out;
}

/** stone prints a pair's destination with the pair's own extensions only (/http, /base) */
function connectExts(stone: StoneDefinition): StoneExt[] {
  const out: StoneExt[] = stone.destination.kind === 'http-request' ? ['http'] : [];
  if (stone.destination.extensions.base64) out.push('base');
  return [...out, ...headerExts(stone)];
}

type ListenAddress = { kind: 'inet'; host: string; port: number; family: 4 | 6; ipv6Only: boolean } | { kind: 'unix'; path: string };

type StoneKind = 'stream' | 'stream-to-udp' | 'udp' | 'udp-to-stream' | 'proxy' | 'health' | 'identd';

interface Prepared {
  stone: StoneDefinition;
  kind: StoneKind;
  listen: ListenAddress;
  destination: Address;
  listenerTls: ListenerTls | undefined;
  destinationTls: PairTls | undefined;
  rules: ResolvedXhostEntry[];
  /** value escapes of a /http request line, computed per client */
  values: Set<TemplateValue>;
}

const CREDENTIAL_VALUES: readonly TemplateValue[] = ['user-id', 'group-id', 'user-name', 'group-name'];

async function prepareStone(stone: StoneDefinition, lookup: Lookup): Promise<Prepared> {
  const d = stone.destination;
  const l = stone.listener;
  if (l.address.kind === 'inet' && l.address.interface !== undefined) {
    throw new Error('unsupported stone reached the engine');
  }
  const name = describeStone(stone);
  let destination: Address;
  if (d.kind === 'proxy' || d.kind === 'health' || d.kind === 'identd') {
    destination = { kind: 'unix', path: '' };
  } else if (d.endpoint.kind === 'unix') {
    destination = { kind: 'unix', path: d.endpoint.path };
  } else {
    const family = d.extensions.ipv6 ? 6 : 4;
    let ip: IpAddress;
    try {
      ip = await lookup(d.endpoint.host, family);
    } catch (err) {
      throw resolveError(`${name}: cannot resolve ${d.endpoint.host} (IPv${family})`, err);
    }
    destination = { kind: 'inet', host: ipText(ip), port: portOf(d.endpoint.port, d.extensions.transport, `${name}: destination`), family: ip.family };
  }
  let listen: ListenAddress;
  if (l.address.kind === 'unix') {
    listen = { kind: 'unix', path: l.address.path };
  } else {
    const family = l.extensions.ipv6 ? 6 : 4;
    let host: string;
    if (l.address.host === undefined) {
      host = family === 6 ? '::' : '0.0.0.0';
    } else {
      try {
        host = ipText(await lookup(l.address.host, family));
      } catch (err) {
        throw resolveError(`${name}: cannot resolve the listening host ${l.address.host} (IPv${family})`, err);
      }
    }
    const port = portOf(l.address.port, l.extensions.transport, `${name}: listening port`);
    listen = { kind: 'inet', host, port, family, ipv6Only: l.extensions.ipv6 && l.extensions.ipOnly };
  }
  let listenerTls: ListenerTls | undefined;
  let destinationTls: PairTls | undefined;
  try {
    const server = stone.settings.sslServer;
    if (l.extensions.ssl && server) listenerTls = { settings: server, context: serverContext(server), memory: { serial: undefined } };
    const client = stone.settings.sslClient;
    if (d.extensions.ssl && client && d.kind !== 'proxy' && d.kind !== 'health' && d.kind !== 'identd') {
      const host = d.endpoint.kind === 'unix' ? d.endpoint.path : d.endpoint.host;
      destinationTls = { settings: client, options: clientOptions(client), serverName: clientServerName(client, host), memory: { serial: undefined } };
    }
  } catch (err) {
    if (err instanceof StoneSslError) throw new StoneStartError('WS_STONE_SSL', `${name}: ${err.message}`, err);
    throw err;
  }
  const values = d.kind === 'http-request' ? valuesUsed(d.request.parts) : d.kind === 'insert-header' ? valuesUsed(d.header.parts) : new Set<TemplateValue>();
  if (l.address.kind === 'unix' && CREDENTIAL_VALUES.some((v) => values.has(v))) {
    try {
      peercredAddon();
    } catch (err) {
      throw new StoneStartError('WS_PEERCRED_UNAVAILABLE', `${name}: \\u \\g \\U \\G need the peer credentials of UNIX-socket clients: ${errorMessage(err)}`, err);
    }
  }
  const udpIn = l.extensions.transport === 'udp';
  const udpOut = d.extensions.transport === 'udp';
  const kind: StoneKind =
    d.kind === 'proxy' || d.kind === 'health' || d.kind === 'identd' ? d.kind : udpIn ? (udpOut ? 'udp' : 'udp-to-stream') : udpOut ? 'stream-to-udp' : 'stream';
  const xhostResolver: XhostResolver = (host, family) => lookup(host, family === 'ipv4' ? 4 : family === 'ipv6' ? 6 : 0);
  return { stone, kind, listen, destination, listenerTls, destinationTls, rules: await resolveXhosts(stone.xhosts, xhostResolver), values };
}

/** `-b` and `-B` operands: `host:port[/v6]` resolved as stone's host2sa with AF_UNSPEC (or IPv6). */
async function resolveHostPort(hp: HostPortExt, lookup: Lookup, what: string): Promise<Address> {
  const family = hp.ipv6 ? 6 : 0;
  let ip: IpAddress;
  try {
    ip = await lookup(hp.host, family);
  } catch (err) {
    throw resolveError(`${what} ${hp.text}: cannot resolve ${hp.host}`, err);
  }
  const port = hp.port === undefined ? 0 : portOf(hp.port, 'tcp', `${what} ${hp.text}`);
  return { kind: 'inet', host: ipText(ip), port, family: ip.family };
}

interface ResolvedRule {
  master: Address;
  backup: Address;
  check: Address;
}

/** Every -b rule and -B group the stones use, resolved once (before anything starts). */
async function resolveFailover(program: StoneProgram, lookup: Lookup): Promise<{ rules: Map<BackupRule, ResolvedRule>; groups: Map<BalanceGroup, Address[]> }> {
  const rules = new Map<BackupRule, ResolvedRule>();
  const groups = new Map<BalanceGroup, Address[]>();
  for (const stone of program.stones) {
    for (const rule of stone.settings.backups) {
      if (rules.has(rule)) continue;
      rules.set(rule, {
        master: await resolveHostPort(rule.master, lookup, '-b master'),
        backup: await resolveHostPort(rule.backup, lookup, '-b backup'),
        check: await resolveHostPort(rule.check, lookup, '-b check address'),
      });
    }
    for (const group of stone.settings.balanceGroups) {
      if (groups.has(group)) continue;
      const members: Address[] = [];
      for (const m of group.members) members.push(await resolveHostPort(m, lookup, '-B member'));
      groups.set(group, members);
    }
  }
  return { rules, groups };
}

function printAddress(log: StoneLog, a: Address, exts: StoneExt[]): Promise<string> {
  return a.kind === 'unix' ? Promise.resolve(log.unix(a.path, exts)) : log.addrNamed(a.host, a.port, exts);
}

/** Sync printing, with the names learnt by printAddress(). */
function printKnown(log: StoneLog, a: Address, exts: StoneExt[]): string {
  return a.kind === 'unix' ? log.unix(a.path, exts) : log.addr(a.host, a.port, exts);
}

function listenInet(server: net.Server, p: Prepared, l: Extract<ListenAddress, { kind: 'inet' }>): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(new StoneStartError('WS_STONE_LISTEN', `${describeStone(p.stone)}: cannot listen on ${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}: ${errorMessage(err)}`, err));
    };
    server.once('error', onError);
    server.listen({ host: l.host, port: l.port, backlog: p.stone.settings.backlog, ipv6Only: l.ipv6Only }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function bindUdp(p: Prepared, l: Extract<ListenAddress, { kind: 'inet' }>): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: l.family === 6 ? 'udp6' : 'udp4', ipv6Only: l.ipv6Only });
    const onError = (err: Error): void => {
      socket.close();
      reject(new StoneStartError('WS_STONE_LISTEN', `${describeStone(p.stone)}: cannot bind UDP ${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}: ${errorMessage(err)}`, err));
    };
    socket.once('error', onError);
    socket.bind({ address: l.host, port: l.port }, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** What the accept path of one stream listener needs. */
interface AcceptContext {
  readonly prepared: Prepared;
  readonly listenFd: number;
  readonly listenPort: number;
  readonly exts: StoneExt[];
  readonly defaultDumpMode: number;
  readonly log: StoneLog;
  readonly pairs: PairSet;
  readonly tlsFront: TlsFront | undefined;
  readonly pairTarget: PairTarget;
  readonly datagramTarget: DatagramTarget;
  readonly command: CommandContext;
  proxy?: ProxyStone;
  readonly admission: StoneAdmission | undefined;
  /** clients of command stones and proxy clients before their pair exists (closed at shutdown) */
  readonly loose: Set<net.Socket>;
}

/** stone's -dd xhost line heads: `connecting to DST`, `using proxy`, `health check`, `ident query` */
const COMMAND_BY: Readonly<Record<'relay' | 'proxy' | 'health' | 'identd', (dst: string) => string>> = {
  relay: (dst) => `connecting to ${dst}`,
  proxy: () => 'using proxy',
  health: () => 'health check',
  identd: () => 'ident query',
};

/** The -q set of a proxy stone (for https:// requests), checked at start-up as stone does. */
function proxySsl(stone: StoneDefinition): ProxyStone['sslClient'] {
  const settings = stone.settings.sslClient;
  if (!settings) return undefined;
  try {
    return { settings, options: clientOptions(settings) };
  } catch (err) {
    if (err instanceof StoneSslError) throw new StoneStartError('WS_STONE_SSL', `${describeStone(stone)}: ${err.message}`, err);
    throw err;
  }
}

/** -x permits: port ranges as numbers, xhost lists resolved (as stone does at start-up). */
async function resolvePermits(permits: readonly ProxyPermit[], lookup: Lookup, name: string): Promise<ResolvedPermit[]> {
  const out: ResolvedPermit[] = [];
  const resolver: XhostResolver = (host, family) => lookup(host, family === 'ipv4' ? 4 : family === 'ipv6' ? 6 : 0);
  for (const permit of permits) {
    out.push({
      permit,
      ports: permit.ports.map((r) => ({ from: portOf(r.from, 'tcp', `${name}: -x port`), to: portOf(r.to, 'tcp', `${name}: -x port`) })),
      rules: await resolveXhosts(permit.xhosts, resolver),
    });
  }
  return out;
}

/** The byte filters of one client's pair: /base on either side, /proxy and /mproxy headers. */
function pairFilters(stone: StoneDefinition, matches: readonly (string | undefined)[], values: TemplateValues): { toDest?: ByteFilter; toClient?: ByteFilter } {
  const d = stone.destination;
  const listenerBase = stone.listener.extensions.base64;
  const destinationBase = d.extensions.base64;
  const toDest: ByteFilter[] = [];
  const toClient: ByteFilter[] = [];
  if (listenerBase) toDest.push(new Base64Decoder());
  if (d.kind === 'insert-header') toDest.push(new HeaderInserter(expandTemplate(d.header, { matches, values }), d.everyRequest));
  if (destinationBase) {
    toDest.push(new Base64Encoder());
    toClient.push(new Base64Decoder());
  }
  if (listenerBase) toClient.push(new Base64Encoder());
  const dest = chain(toDest);
  const client = chain(toClient);
  return { ...(dest ? { toDest: dest } : {}), ...(client ? { toClient: client } : {}) };
}

/**
 * Starts every stone of the program. Throws StoneUnsupportedError (nothing started), or
 * StoneStartError / StoneOutputError (anything started is closed again).
 */
export async function startStones(program: StoneProgram, options: EngineOptions = {}): Promise<RunningStones> {
  checkSupported(program);
  const g = program.globals;
  const lookup = options.lookup ?? defaultLookup;
  const prepared: Prepared[] = [];
  for (const stone of program.stones) prepared.push(await prepareStone(stone, lookup));
  const failover = await resolveFailover(program, lookup);
  const log = new StoneLog({
    debugLevel: g.debugLevel,
    numeric: g.numericAddresses,
    logFile: g.logFile,
    accountingFile: g.accountingFile,
    json: options.json ?? false,
    pid: options.pid ?? process.pid,
  });
  log.event({ kind: 'start', pid: options.pid ?? process.pid });
  log.event({ kind: 'debugLevel', level: g.debugLevel });

  // -b rules become shared Backup states, -B groups get their `LB set:` lines
  const backups = new Map<BackupRule, Backup>();
  for (const [rule, r] of failover.rules) {
    const printed = { master: await printAddress(log, r.master, []), backup: await printAddress(log, r.backup, []), check: await printAddress(log, r.check, []) };
    backups.set(rule, new Backup(rule, r.master, r.backup, r.check, printed));
  }
  const groups = new Map<BalanceGroup, ResolvedGroup>();
  for (const [group, members] of failover.groups) {
    const printed: string[] = [];
    for (const m of members) printed.push(await printAddress(log, m, []));
    groups.set(group, { group, members, line: `LB set: ${printed.join(' ')}` });
  }
  const monitor = new HealthMonitor([...backups.values()], log, options.checker);
  const admission = options.admission ? await options.admission(log) : undefined;

  const pairs = new PairSet();
  const activity = new Activity();
  const sessions = { count: 0 };
  const loose = new Set<net.Socket>();
  const stoneLines: string[] = [];
  const servers: net.Server[] = [];
  const datagramStones: { close(): void }[] = [];
  const listeners: RunningListener[] = [];
  const closeAll = (): void => {
    for (const s of servers) s.close();
    for (const u of datagramStones) u.close();
  };
  try {
    for (const p of prepared) {
      const stone = p.stone;
      const exts = listenerExts(stone);
      const print = (a: Address): string => printKnown(log, a, connectExts(stone));
      const command = p.kind === 'proxy' || p.kind === 'health' || p.kind === 'identd' ? p.kind : undefined;
      const destinationRoute: Route = { address: p.destination, printed: command ? command : await printAddress(log, p.destination, connectExts(stone)) };
      const routing = routeStone(
        destinationRoute,
        command ? [] : stone.settings.balanceGroups.map((grp) => groups.get(grp)).filter((x): x is ResolvedGroup => x !== undefined),
        command ? [] : stone.settings.backups.map((rule) => backups.get(rule)).filter((x): x is Backup => x !== undefined),
        print,
      );
      if (p.kind === 'udp' && (stone.settings.backups.length > 0 || stone.settings.balanceGroups.length > 0)) {
        options.warn?.(`${describeStone(stone)}: -b and -B do not apply to a UDP-to-UDP stone (stone 2.4 always sends to its first destination)`);
      }
      if (routing.groupLine !== undefined && log.debug > 1) log.message(routing.groupLine);

      let listenFd: number;
      let listenPort = 0;
      let udpSocket: dgram.Socket | undefined;
      let server: net.Server | undefined;
      if (p.kind === 'udp' || p.kind === 'udp-to-stream') {
        if (p.listen.kind !== 'inet') throw new Error('a UDP listener needs an address');
        udpSocket = await bindUdp(p, p.listen);
        const bound = udpSocket;
        // closes the socket if start-up fails before its relay owns it (then the relay closes it)
        datagramStones.push({
          close: () => {
            try {
              bound.close();
            } catch {
              // already closed by its relay
            }
          },
        });
        listenFd = dgramFd(udpSocket);
        listenPort = udpSocket.address().port;
      } else {
        server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
        if (p.listen.kind === 'unix') {
          try {
            await listenUnix(server, p.listen.path, stone.settings.backlog);
          } catch (err) {
            if (!(err instanceof UnixListenError)) throw err;
            throw new StoneStartError('WS_STONE_LISTEN', `${describeStone(stone)}: cannot listen on ${p.listen.path}: ${err.message}`, err);
          }
        } else {
          await listenInet(server, p, p.listen);
          listenPort = (server.address() as net.AddressInfo).port;
        }
        servers.push(server);
        listenFd = socketFd(server);
      }
      const dst = command ?? (await printAddress(log, p.destination, destinationExts(stone)));
      const src = p.listen.kind === 'unix' ? log.unix(p.listen.path, exts) : await log.addrNamed(p.listen.host, listenPort, exts);
      if (log.debug > 1) {
        let allow = true;
        for (const rule of p.rules) {
          if (rule.kind === 'toggle') allow = !allow;
          else log.message(`stone ${listenFd}: ${COMMAND_BY[command ?? 'relay'](dst)} by ${ipText(rule.address)}/${rule.prefixLength} is ${allow ? 'permitted' : 'denied'}`);
        }
      }
      log.event({ kind: 'listen', listenFd, dst, src, ...(command ? { command } : {}) });
      stoneLines.push(command ? `stone ${listenFd}: ${command} <- ${src}` : `stone ${listenFd}: ${dst} <- ${src}`);
      if (log.debug > 1) for (const line of routing.backupLines) log.message(line);
      listeners.push(
        p.listen.kind === 'unix'
          ? { stone, host: p.listen.path, port: 0, transport: 'unix' }
          : { stone, host: p.listen.host, port: listenPort, transport: udpSocket ? 'udp' : 'tcp' },
      );
      const idleMs = stone.settings.idleTimeoutSeconds > 0 ? stone.settings.idleTimeoutSeconds * 1000 : 0;

      if (udpSocket && p.kind === 'udp') {
        if (p.destination.kind !== 'inet') throw new Error('a UDP destination needs an address');
        const relay = new UdpRelay({
          log,
          listenFd,
          listener: udpSocket,
          destination: p.destination,
          rules: p.rules,
          defaultDumpMode: g.defaultDumpMode,
          maxOrigins: g.udpSessionMax,
          ...(admission ? { admission } : {}),
          ...(options.udpOriginIdleMs !== undefined ? { idleMs: options.udpOriginIdleMs } : {}),
        });
        datagramStones.push(relay);
        continue;
      }
      if (udpSocket) {
        datagramStones.push(
          new UdpToStream({
            log,
            listenFd,
            listenPort,
            listener: udpSocket,
            router: routing.router,
            rules: p.rules,
            defaultDumpMode: g.defaultDumpMode,
            maxAssociations: g.udpSessionMax,
            idleMs,
            pairs,
            ...(admission ? { admission } : {}),
          }),
        );
        continue;
      }
      const router: Router = routing.router;
      const context: AcceptContext = {
        prepared: p,
        listenFd,
        listenPort,
        exts,
        defaultDumpMode: g.defaultDumpMode,
        log,
        pairs,
        tlsFront: p.listenerTls ? new TlsFront(p.listenerTls, log, listenFd) : undefined,
        pairTarget: {
          log,
          listenFd,
          router,
          xferBytes: g.transferBufferBytes,
          idleMs,
          ...(p.destinationTls ? { tls: p.destinationTls } : {}),
          ...(stone.destination.kind === 'http-request' ? { httpRequest: stone.destination.request } : {}),
          stonePort: listenPort,
          activity,
        },
        datagramTarget: { log, listenFd, router, idleMs },
        command: { log, listenFd, idleMs, pairs, activity, sessions, stoneCount: program.stones.length, stoneLines },
        admission,
        loose,
      };
      if (p.kind === 'proxy' && stone.destination.kind === 'proxy') {
        const e = stone.destination.extensions;
        context.proxy = {
          log,
          listenFd,
          family: e.ipOnly ? (e.ipv6 ? 6 : 4) : 0,
          permits: await resolvePermits(stone.destination.permits, lookup, describeStone(stone)),
          backups: e.noBackup ? [] : stone.settings.backups.map((rule) => backups.get(rule)).filter((x): x is Backup => x !== undefined),
          sslClient: proxySsl(stone),
          pairBase: { log, listenFd, xferBytes: g.transferBufferBytes, idleMs, stonePort: listenPort, activity },
          lookup: (host, family) => lookup(host, family),
        };
      }
      (server as net.Server).on('connection', (client: net.Socket) => {
        client.on('error', () => undefined);
        if (admission?.isBanned(client.remoteAddress)) {
          // before /ident, xhost, TLS or a destination exist for it: a banned source costs an accept
          client.destroy();
          admission.dropped(client.remoteAddress as string, client.remotePort ?? 0);
          return;
        }
        void accept(client, context).catch(() => client.destroy());
      });
    }
    log.event({ kind: 'sslThreadLocks' });
    if (monitor.minInterval > 0 && log.debug > 1) log.message(`MinInterval: ${monitor.minInterval}`);
    monitor.start();
    if (g.pidFile !== undefined) writeFileSync(g.pidFile, `${options.pid ?? process.pid}\n`);
  } catch (err) {
    monitor.stop();
    closeAll();
    await admission?.close();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    listeners,
    get pairCount() {
      return pairs.size;
    },
    close: (closeOptions = {}) => {
      closing ??= (async () => {
        if (closeOptions.signal) log.event({ kind: 'exiting' });
        monitor.stop();
        const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
        for (const u of datagramStones) u.close();
        pairs.destroyAll();
        for (const s of loose) s.destroy();
        await Promise.all(closed);
        await admission?.close();
      })();
      return closing;
    },
  };
}

async function accept(client: net.Socket, c: AcceptContext): Promise<void> {
  const fd = socketFd(client);
  const log = c.log;
  const unix = c.prepared.listen.kind === 'unix';
  const host = client.remoteAddress;
  const port = client.remotePort;
  if (!unix && (host === undefined || port === undefined)) {
    client.destroy();
    return;
  }
  // stone asks the client's identd before anything else (/ident)
  const ident = c.prepared.stone.listener.extensions.ident && !unix ? await identify(client, log) : undefined;
  if (client.destroyed) return;
  const shown = ident?.shown === undefined ? {} : { ident: ident.shown };
  const address = unix ? 'unix' : (parseIpAddress((host as string).replace(/%.*$/, '')) ?? 'unix');
  const from = async (): Promise<string> => (unix ? log.unix('', c.exts) : log.addrNamed(host as string, port as number, c.exts));
  const decision = decide(c.prepared.rules, address, { defaultDumpMode: c.defaultDumpMode });
  if (!decision.allowed) {
    const text = await from();
    log.event({ kind: 'accessDenied', listenFd: c.listenFd, from: text, ...shown });
    client.destroy();
    if (!unix) c.admission?.xhostDenied(host as string, port as number, `stone ${c.listenFd}: access denied from ${text}`);
    return;
  }
  const dumpMode = decision.dumpMode & 0xf;
  if (log.accounting || log.debug > 1 || dumpMode > 0) {
    const text = await from();
    log.account({ clock: Math.floor(Date.now() / 1000), port: c.listenPort, listenFd: c.listenFd, from: text, fromHost: unix ? 'localhost' : (host as string), ...shown });
    log.event({ kind: 'accepted', listenFd: c.listenFd, fd, from: text, mode: decision.dumpMode, ...shown }, dumpMode);
  }
  let values: TemplateValues = {};
  if (c.prepared.values.size > 0) {
    const peer: PeerInfo = unix
      ? { kind: 'unix', socket: client }
      : { kind: 'inet', address: host as string, port: port as number, ...(ident?.user !== undefined ? { ident: ident.user } : {}) };
    values = await peerValues(c.prepared.values, peer, log.numeric);
  }
  if (client.destroyed) return;
  const start = (socket: net.Socket, matches: readonly (string | undefined)[]): void => {
    const kind = c.prepared.kind;
    if (kind === 'health' || kind === 'identd' || kind === 'proxy') {
      c.loose.add(socket);
      socket.once('close', () => c.loose.delete(socket));
    }
    if (kind === 'health' || kind === 'identd') serveCommandClient(socket, kind, c.command);
    else if (kind === 'proxy' && c.proxy) serveProxyClient(socket, fd, c.proxy, dumpMode, c.pairs, pairFilters(c.prepared.stone, matches, values));
    else if (kind === 'stream-to-udp') new TcpToUdpPair(socket, fd, c.datagramTarget, dumpMode, c.pairs);
    else {
      const extras = { ...pairFilters(c.prepared.stone, matches, values), ...(c.prepared.stone.listener.extensions.http ? { httpListener: true } : {}) };
      new TcpPair(socket, fd, c.pairTarget, dumpMode, c.pairs, matches, values, extras);
    }
  };
  if (c.tlsFront) c.tlsFront.handshake(client, fd, start);
  else start(client, []);
}
