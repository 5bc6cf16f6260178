// Runs a parsed `warpstone stone` program (grammar.ts): for now TCP relay pairs, SSL on either
// side (ssl.ts: a `/ssl` listener handshakes and checks the client before the pair connects),
// `host:port sport [xhost...]`, IPv4 and IPv6, with stone 2.4's xhost decisions, -p/-pp/-ppp
// dumps, -d/-a/-L/-n logging, -X (dump chunking only), -T idle timeout, -A backlog, -i pid file
// and -N (check, open the listeners, log them, stop). Anything else is refused before anything
// starts (support.ts, WS_STONE_UNSUPPORTED).
// Start-up follows stone: `start (2.4) [PID]`, `Debug level: N` (-d), then per stone its xhost
// entries at -dd (`stone 3: connecting to DST by ADDR/BITS is permitted`) and `stone 3: DST <-
// SRC`, then `SSL thread nlocks=1` at -dd. Per client: xhost check (`access denied` always),
// `-a` line, `accepted` (-dd or a dump mode), then the pair (tcp-relay.ts).
// Differences from stone on purpose: SIGTERM/SIGINT exit 0 (stone exits 1) after the same
// `SIGTERM/INT. exiting` line; an IPv4 xhost entry matches an IPv4 client of a dual-stack `/v6`
// listener (xhost.ts); -X never limits how much is read or written at once.
// Owns: listeners, name resolution at start-up, the accept path. Must not: parse command lines,
// format lines (logline.ts, dump.ts) or pump bytes (tcp-relay.ts).
import net from 'node:net';
import tls from 'node:tls';
import { promises as dns } from 'node:dns';
import { writeFileSync } from 'node:fs';
import { WarpstoneError, errorMessage } from '../common/errors.js';
import { checkSupported, describeStone } from './support.js';
import { StoneLog, ipText } from './stone-log.js';
import { PairSet, TcpPair, socketFd, type PairTarget } from './tcp-relay.js';
import { StoneSslError, clientOptions, clientServerName, decidePeer, opensslReason, serverContext, sslInfoLines, type SerialMemory } from './ssl.js';
import { decide, parseIpAddress, resolveXhosts, type XhostResolver } from './xhost.js';
import type { StoneExt } from './logline.js';
import type { IpAddress, PortSpec, ResolvedXhostEntry, SslOptions, StoneDefinition, StoneProgram } from './types.js';

/** A name or port of a stone cannot be resolved, or its listener cannot be opened. */
export class StoneStartError extends WarpstoneError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
  }
}

export interface RunningListener {
  readonly stone: StoneDefinition;
  readonly host: string;
  readonly port: number;
}

export interface RunningStones {
  readonly listeners: readonly RunningListener[];
  /** live pairs */
  readonly pairCount: number;
  /** Closes listeners and pairs; with `signal`, logs stone's `SIGTERM/INT. exiting` first. */
  close(options?: { signal?: boolean }): Promise<void>;
}

export interface EngineOptions {
  /** resolves names (destinations, listener hosts, xhosts); default dns.lookup */
  readonly lookup?: (host: string, family: 0 | 4 | 6) => Promise<IpAddress>;
  readonly pid?: number;
}

async function defaultLookup(host: string, family: 0 | 4 | 6): Promise<IpAddress> {
  const literal = parseIpAddress(host);
  if (literal) return literal;
  const found = await dns.lookup(host, { family });
  const parsed = parseIpAddress(found.address);
  if (!parsed) throw new Error(`unexpected address ${found.address}`);
  return parsed;
}

function portNumber(stone: StoneDefinition, spec: PortSpec, what: string): number {
  if (spec.number !== undefined) return spec.number;
  throw new StoneStartError('WS_STONE_RESOLVE', `${describeStone(stone)}: unknown ${what} service '${spec.text}' (not in /etc/services)`);
}

function listenerExts(stone: StoneDefinition): StoneExt[] {
  const e = stone.listener.extensions;
  const out: StoneExt[] = [];
  if (e.ssl) out.push('ssl');
  if (e.ipv6) out.push(e.ipOnly ? 'v6only' : 'v6');
  if (e.blocking) out.push('block');
  return out;
}

function destinationExts(stone: StoneDefinition): StoneExt[] {
  const e = stone.destination.extensions;
  const out: StoneExt[] = [];
  if (stone.destination.kind === 'http-request') out.push('http');
  if (e.ssl) out.push('ssl');
  if (e.ipv6) out.push(e.ipOnly ? 'v6only' : 'v6');
  if (e.blocking) out.push('block');
  if (e.noBackup) out.push('nobackup');
  return out;
}

/** A `/ssl` listener: its context and -z set. */
interface ListenerTls {
  readonly settings: SslOptions;
  readonly context: tls.SecureContextOptions;
  readonly memory: SerialMemory;
}

interface Prepared {
  stone: StoneDefinition;
  tls: ListenerTls | undefined;
  target: Omit<PairTarget, 'listenFd' | 'printed' | 'log'>;
  destExts: StoneExt[];
  listenHost: string;
  listenPort: number;
  ipv6Only: boolean;
  rules: ResolvedXhostEntry[];
}

async function prepare(program: StoneProgram, lookup: NonNullable<EngineOptions['lookup']>): Promise<Prepared[]> {
  const out: Prepared[] = [];
  const xhostResolver: XhostResolver = (host, family) => lookup(host, family === 'ipv4' ? 4 : family === 'ipv6' ? 6 : 0);
  for (const stone of program.stones) {
    const d = stone.destination;
    if ((d.kind !== 'relay' && d.kind !== 'http-request') || d.endpoint.kind !== 'inet' || stone.listener.address.kind !== 'inet') throw new Error('unsupported stone reached the engine');
    const destFamily = d.extensions.ipv6 ? 6 : 4;
    let dest: IpAddress;
    try {
      dest = await lookup(d.endpoint.host, destFamily);
    } catch (err) {
      throw new StoneStartError('WS_STONE_RESOLVE', `${describeStone(stone)}: cannot resolve ${d.endpoint.host} (IPv${destFamily}): ${errorMessage(err)}`, err);
    }
    const l = stone.listener;
    const la = l.address as Extract<typeof l.address, { kind: 'inet' }>;
    const listenFamily = l.extensions.ipv6 ? 6 : 4;
    let listenHost: string;
    if (la.host === undefined) {
      listenHost = listenFamily === 6 ? '::' : '0.0.0.0';
    } else {
      try {
        listenHost = ipText(await lookup(la.host, listenFamily));
      } catch (err) {
        throw new StoneStartError('WS_STONE_RESOLVE', `${describeStone(stone)}: cannot resolve the listening host ${la.host} (IPv${listenFamily}): ${errorMessage(err)}`, err);
      }
    }
    const sslError = (err: unknown): never => {
      if (err instanceof StoneSslError) throw new StoneStartError('WS_STONE_SSL', `${describeStone(stone)}: ${err.message}`, err);
      throw err;
    };
    let listenerTls: ListenerTls | undefined;
    let destinationTls: PairTarget['tls'];
    try {
      const server = stone.settings.sslServer;
      if (l.extensions.ssl && server) listenerTls = { settings: server, context: serverContext(server), memory: { serial: undefined } };
      const client = stone.settings.sslClient;
      if (d.extensions.ssl && client) {
        destinationTls = { settings: client, options: clientOptions(client), serverName: clientServerName(client, d.endpoint.host), memory: { serial: undefined } };
      }
    } catch (err) {
      sslError(err);
    }
    out.push({
      stone,
      tls: listenerTls,
      target: {
        host: ipText(dest),
        port: portNumber(stone, d.endpoint.port, 'destination'),
        family: dest.family,
        xferBytes: program.globals.transferBufferBytes,
        idleMs: stone.settings.idleTimeoutSeconds > 0 ? stone.settings.idleTimeoutSeconds * 1000 : 0,
        ...(destinationTls ? { tls: destinationTls } : {}),
        ...(d.kind === 'http-request' ? { httpRequest: d.request } : {}),
      },
      destExts: destinationExts(stone),
      listenHost,
      listenPort: portNumber(stone, la.port, 'listening'),
      ipv6Only: l.extensions.ipv6 && l.extensions.ipOnly,
      rules: await resolveXhosts(stone.xhosts, xhostResolver),
    });
  }
  return out;
}

function listen(server: net.Server, p: Prepared): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(new StoneStartError('WS_STONE_LISTEN', `${describeStone(p.stone)}: cannot listen on ${p.listenHost.includes(':') ? `[${p.listenHost}]` : p.listenHost}:${p.listenPort}: ${errorMessage(err)}`, err));
    };
    server.once('error', onError);
    server.listen({ host: p.listenHost, port: p.listenPort, backlog: p.stone.settings.backlog, ipv6Only: p.ipv6Only }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Starts every stone of the program. Throws StoneUnsupportedError (nothing started), or
 * StoneStartError / StoneOutputError (anything started is closed again).
 */
export async function startStones(program: StoneProgram, options: EngineOptions = {}): Promise<RunningStones> {
  checkSupported(program);
  const g = program.globals;
  const prepared = await prepare(program, options.lookup ?? defaultLookup);
  const log = new StoneLog({ debugLevel: g.debugLevel, numeric: g.numericAddresses, logFile: g.logFile, accountingFile: g.accountingFile });
  log.event({ kind: 'start', pid: options.pid ?? process.pid });
  log.event({ kind: 'debugLevel', level: g.debugLevel });

  const pairs = new PairSet();
  const servers: net.Server[] = [];
  const listeners: RunningListener[] = [];
  try {
    for (const p of prepared) {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
      await listen(server, p);
      servers.push(server);
      const listenFd = socketFd(server);
      const port = (server.address() as net.AddressInfo).port;
      const dst = await log.addrNamed(p.target.host, p.target.port, p.destExts);
      // stone's `connecting to` line prints the destination without /ssl
      const printed = p.target.tls ? await log.addrNamed(p.target.host, p.target.port, p.destExts.filter((e) => e !== 'ssl')) : dst;
      const src = await log.addrNamed(p.listenHost, port, listenerExts(p.stone));
      if (log.debug > 1) {
        let allow = true;
        for (const rule of p.rules) {
          if (rule.kind === 'toggle') allow = !allow;
          else log.message(`stone ${listenFd}: connecting to ${dst} by ${ipText(rule.address)}/${rule.prefixLength} is ${allow ? 'permitted' : 'denied'}`);
        }
      }
      log.event({ kind: 'listen', listenFd, dst, src });
      listeners.push({ stone: p.stone, host: p.listenHost, port });
      const target: PairTarget = { ...p.target, listenFd, printed, log };
      const exts = listenerExts(p.stone);
      const tlsFront = p.tls ? new TlsFront(p.tls, target, pairs) : undefined;
      server.on('connection', (client: net.Socket) => {
        client.on('error', () => undefined);
        void accept(client, target, p.rules, exts, port, g.defaultDumpMode, log, pairs, tlsFront).catch(() => client.destroy());
      });
    }
    log.event({ kind: 'sslThreadLocks' });
    if (g.pidFile !== undefined) writeFileSync(g.pidFile, `${options.pid ?? process.pid}\n`);
  } catch (err) {
    for (const s of servers) s.close();
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
        const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
        pairs.destroyAll();
        await Promise.all(closed);
      })();
      return closing;
    },
  };
}

async function accept(
  client: net.Socket,
  target: PairTarget,
  rules: readonly ResolvedXhostEntry[],
  exts: StoneExt[],
  listenPort: number,
  defaultDumpMode: number,
  log: StoneLog,
  pairs: PairSet,
  tlsFront: TlsFront | undefined,
): Promise<void> {
  const fd = socketFd(client);
  const host = client.remoteAddress;
  const port = client.remotePort;
  if (host === undefined || port === undefined) {
    client.destroy();
    return;
  }
  const address = parseIpAddress(host.replace(/%.*$/, ''));
  const decision = decide(rules, address ?? 'unix', { defaultDumpMode });
  if (!decision.allowed) {
    log.event({ kind: 'accessDenied', listenFd: target.listenFd, from: await log.addrNamed(host, port, exts) });
    client.destroy();
    return;
  }
  const dumpMode = decision.dumpMode & 0xf;
  if (log.accounting || log.debug > 1 || dumpMode > 0) {
    const from = await log.addrNamed(host, port, exts);
    log.account({ clock: Math.floor(Date.now() / 1000), port: listenPort, listenFd: target.listenFd, from, fromHost: host });
    log.event({ kind: 'accepted', listenFd: target.listenFd, fd, from, mode: decision.dumpMode }, dumpMode);
  }
  if (client.destroyed) return;
  if (!tlsFront) {
    new TcpPair(client, fd, target, dumpMode, pairs);
    return;
  }
  tlsFront.handshake(client, fd, dumpMode);
}

interface PendingHandshake {
  readonly fd: number;
  readonly dumpMode: number;
}

/**
 * The TLS side of a `/ssl` listener: a tls.Server that never listens, fed the accepted sockets
 * (so node:tls does the client-certificate bookkeeping: `authorized`), then stone's checks
 * (ssl.ts decidePeer) and the pair. Pending handshakes are known by the client's address:port.
 */
class TlsFront {
  private readonly server: tls.Server;
  private readonly pending = new Map<string, PendingHandshake>();

  constructor(
    private readonly listenerTls: ListenerTls,
    private readonly target: PairTarget,
    private readonly pairs: PairSet,
  ) {
    const o = listenerTls.settings;
    const context = tls.createSecureContext(listenerTls.context);
    this.server = tls.createServer({
      ...listenerTls.context,
      requestCert: o.verify !== 'none',
      rejectUnauthorized: false,
      allowHalfOpen: true,
      ...(o.sni && o.serverName !== undefined
        ? {
            // stone's servername callback: a ClientHello naming another server is refused
            SNICallback: (name: string, done: (err: Error | null, ctx?: tls.SecureContext) => void) => {
              if (name === o.serverName) done(null, context);
              else done(new Error(`servername ${name} is not ${o.serverName ?? ''}`));
            },
          }
        : {}),
    });
    this.server.on('secureConnection', (socket: tls.TLSSocket) => this.secured(socket));
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.failed(err, socket));
  }

  private static key(socket: net.Socket): string {
    return `${socket.remoteAddress ?? ''}|${socket.remotePort ?? 0}`;
  }

  private line(fd: number, text: string): void {
    this.target.log.message(`${this.target.listenFd} TCP ${fd}: ${text}`);
  }

  /** Starts the handshake on an accepted (paused) client. */
  handshake(client: net.Socket, fd: number, dumpMode: number): void {
    const key = TlsFront.key(client);
    this.pending.set(key, { fd, dumpMode });
    client.once('close', () => this.pending.delete(key));
    this.server.emit('connection', client);
    client.resume();
  }

  private take(socket: tls.TLSSocket): PendingHandshake | undefined {
    const key = TlsFront.key(socket);
    const found = this.pending.get(key);
    this.pending.delete(key);
    return found;
  }

  private failed(err: Error, socket: tls.TLSSocket): void {
    const p = this.take(socket);
    socket.destroy();
    if (!p) return;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE' || /socket disconnected|socket hang up/i.test(err.message)) {
      if (this.target.log.debug > 0) this.line(p.fd, 'SSL_accept shutdowned by peer sf=0 errno=0');
    } else {
      this.line(p.fd, `SSL_accept lib ${opensslReason(err)}`);
    }
  }

  private secured(socket: tls.TLSSocket): void {
    const p = this.take(socket);
    if (!p) {
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    const verdict = decidePeer(socket, this.listenerTls.settings, this.listenerTls.memory, (text) => this.line(p.fd, text));
    if (!verdict.ok) {
      for (const m of verdict.messages) this.line(p.fd, m);
      socket.destroy();
      return;
    }
    if (this.listenerTls.settings.verbose > 0) for (const l of sslInfoLines(socket)) this.target.log.message(l);
    socket.pause();
    new TcpPair(socket, p.fd, this.target, p.dumpMode, this.pairs, verdict.matches);
  }
}
