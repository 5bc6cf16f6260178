// A `proxy` stone's client (stone 2.4's command_proxy): read the first request (bounded, with a
// timeout), parse it (proxy-request.ts), resolve the host (IPv4 or IPv6, only one family with
// /v4only or /v6only), go to the -b backup while that host is the failing master of a -b rule
// (unless /nobackup), check the -x permits (newest first: the first whose ports contain the port
// decides by its xhost list; no permit for the port refuses; no permits allow all), then hand
// the client to a TcpPair: CONNECT gets `HTTP/1.0 200 OK` once the connection stands and its
// request header is dropped; GET/HEAD/POST send the rewritten request; `https://` connects with
// SSL and the -q options.
// stone's lines: `Unknown method: LINE`, `Unknown URL format: URL`, `stone 3: proxy may not
// connect to HOST`, `stone 3: proxy may not connect to port PORT`, `proxy 5 -> http://H:P`
// (-dd), and the request noted (`HH:MM:SS 0 GET http://...`) logged when the destination ends,
// except for localhost destinations (stone drops the note for 127.0.0.1, 0.0.0.0, ::1, ::).
// Differences: only the first request of a connection is parsed (stone re-parses the first read
// after reply bytes, a heuristic that splits requests at read boundaries); the 200 of a CONNECT
// is sent once the destination accepted (stone may queue it before a connect that then fails);
// a host that cannot be resolved is logged as `proxy cannot resolve HOST: REASON`; -x ports
// above 32767 work (stone 2.4 keeps them in a signed short, so it refuses every such port).
// Owns: a proxy client until its TcpPair exists. Must not: accept, format stone lines itself
// beyond these messages, or pump bytes (tcp-relay.ts).
import type net from 'node:net';
import type tls from 'node:tls';
import { promises as dns } from 'node:dns';
import { errorMessage } from '../common/errors.js';
import { HeaderEnd, MAX_CONNECT_HEADER, parseProxyRequest } from './proxy-request.js';
import { TcpPair, type PairExtras, type PairSet, type PairTarget, type PairTls } from './tcp-relay.js';
import { clientServerName } from './ssl.js';
import { decide, parseIpAddress } from './xhost.js';
import { lookupService } from './services.js';
import { sameAddress, type Address } from './route.js';
import type { Backup } from './failover.js';
import type { ByteFilter } from './stream-filters.js';
import { ipText, type StoneLog } from './stone-log.js';
import type { IpAddress, ProxyPermit, ResolvedXhostEntry, SslOptions } from './types.js';

/** How long a proxy client may take to send its request (line and CONNECT header). */
export const PROXY_REQUEST_TIMEOUT_MS = 30_000;

export interface ResolvedPermit {
  readonly permit: ProxyPermit;
  /** port ranges as numbers (service names looked up at start-up) */
  readonly ports: readonly { from: number; to: number }[];
  readonly rules: readonly ResolvedXhostEntry[];
}

export interface ProxyStone {
  readonly log: StoneLog;
  readonly listenFd: number;
  /** /v4only → 4, /v6only (with /v6) → 6, else 0 (either) */
  readonly family: 0 | 4 | 6;
  /** -x permits in force, newest first */
  readonly permits: readonly ResolvedPermit[];
  /** every -b rule (stone's findBackup), unless /nobackup */
  readonly backups: readonly Backup[];
  /** -q set for https:// requests, with its tls.connect() options built at start-up */
  readonly sslClient: { readonly settings: SslOptions; readonly options: tls.ConnectionOptions } | undefined;
  /** the pair settings shared by every request of this stone (router replaced per request) */
  readonly pairBase: Omit<PairTarget, 'router' | 'tls'>;
  readonly lookup: (host: string, family: 0 | 4 | 6) => Promise<IpAddress>;
}

/** The -x decision for an address and port (pure). */
export function permitDecision(permits: readonly ResolvedPermit[], address: IpAddress, port: number): 'allowed' | 'host' | 'port' {
  if (permits.length === 0) return 'allowed';
  for (const p of permits) {
    if (!p.ports.some((r) => r.from <= port && port <= r.to)) continue;
    if (p.rules.length === 0) return 'allowed';
    return decide(p.rules, address).allowed ? 'allowed' : 'host';
  }
  return 'port';
}

/** stone's islocalhost(): 127.0.0.1, 0.0.0.0, ::1 or :: (not the rest of 127/8) */
function isLocalhost(a: IpAddress): boolean {
  if (a.family === 4) return a.bytes.join('.') === '127.0.0.1' || a.bytes.every((b) => b === 0);
  return a.bytes.slice(0, 15).every((b) => b === 0) && (a.bytes[15] === 1 || a.bytes[15] === 0);
}

export async function defaultProxyLookup(host: string, family: 0 | 4 | 6): Promise<IpAddress> {
  const literal = parseIpAddress(host);
  if (literal && (family === 0 || literal.family === family)) return literal;
  const found = await dns.lookup(host, { family });
  const parsed = parseIpAddress(found.address);
  if (!parsed) throw new Error(`unexpected address ${found.address}`);
  return parsed;
}

/** Reads and serves the first request of one proxy client. */
export function serveProxyClient(
  client: net.Socket,
  clientFd: number,
  stone: ProxyStone,
  dumpMode: number,
  pairs: PairSet,
  filters: { toDest?: ByteFilter; toClient?: ByteFilter },
): void {
  let held = Buffer.alloc(0);
  let done = false;
  const log = stone.log;
  const timer = setTimeout(() => {
    if (log.debug > 0) log.message(`${stone.listenFd} TCP ${clientFd}: proxy request not complete after ${PROXY_REQUEST_TIMEOUT_MS / 1000} s, closing`);
    finish();
    client.destroy();
  }, PROXY_REQUEST_TIMEOUT_MS);
  timer.unref();
  const finish = (): void => {
    done = true;
    clearTimeout(timer);
    client.off('data', onData);
    client.off('end', onEnd);
  };
  const refuse = (message: string | undefined): void => {
    finish();
    if (message !== undefined) log.message(message);
    client.destroy();
  };
  const onEnd = (): void => refuse(undefined);
  const onData = (raw: Buffer): void => {
    if (done) return;
    const chunk = filters.toDest ? filters.toDest.transform(raw) : raw;
    held = Buffer.concat([held, chunk]);
    const request = parseProxyRequest(held);
    if (request.kind === 'more') return;
    const clock = Math.floor(Date.now() / 1000);
    if (request.kind === 'error') {
      finish();
      log.message(request.message);
      if (request.note !== undefined) log.event({ kind: 'timeLog', clock, now: Date.now() / 1000, text: request.note });
      client.destroy();
      return;
    }
    finish();
    client.pause();
    if (request.kind === 'connect') {
      // drop the rest of the request header (stone's rmheader), then relay what follows
      const header = new HeaderEnd();
      const pending = request.afterLine;
      let seen = 0;
      const afterHeader = (bytes: Buffer): void => {
        void start(request.host, request.port, false, request.note, bytes, Buffer.from('HTTP/1.0 200 OK\r\n\r\n', 'latin1'));
      };
      const end = header.feed(pending);
      if (end >= 0) {
        afterHeader(pending.subarray(end));
        return;
      }
      seen += pending.length;
      const more = (raw2: Buffer): void => {
        const c = filters.toDest ? filters.toDest.transform(raw2) : raw2;
        seen += c.length;
        const e = header.feed(c);
        if (e < 0) {
          if (seen > MAX_CONNECT_HEADER) {
            client.off('data', more);
            refuse(`${stone.listenFd} TCP ${clientFd}: CONNECT header longer than ${MAX_CONNECT_HEADER} bytes, closing`);
          }
          return;
        }
        client.off('data', more);
        client.pause();
        afterHeader(c.subarray(e));
      };
      const headerTimer = setTimeout(() => {
        client.off('data', more);
        refuse(log.debug > 0 ? `${stone.listenFd} TCP ${clientFd}: CONNECT header not complete after ${PROXY_REQUEST_TIMEOUT_MS / 1000} s, closing` : undefined);
      }, PROXY_REQUEST_TIMEOUT_MS);
      headerTimer.unref();
      client.on('data', more);
      client.once('close', () => clearTimeout(headerTimer));
      client.once('end', () => {
        clearTimeout(headerTimer);
        client.destroy();
      });
      client.resume();
      return;
    }
    if (log.debug > 1) log.message(`proxy ${clientFd} -> http${request.https ? 's' : ''}://${request.host}:${request.port}`);
    void start(request.host, request.port, request.https, request.note, request.bytes, undefined);
  };

  /** connect() must never reject unnoticed: anything unexpected closes only this client */
  const start: typeof connect = async (...args) => {
    try {
      await connect(...args);
    } catch (err) {
      refuse(`${stone.listenFd} TCP ${clientFd}: proxy request failed: ${errorMessage(err)}`);
    }
  };

  const connect = async (host: string, service: string, https: boolean, noteText: string, prelude: Buffer, clientReply: Buffer | undefined): Promise<void> => {
    const port = /^\d+$/.test(service) ? Number(service) : lookupService(service, 'tcp');
    if (port === undefined || port > 65535) {
      refuse(`stone ${stone.listenFd}: proxy may not connect to port ${service}`);
      return;
    }
    let ip: IpAddress;
    try {
      ip = await stone.lookup(host, stone.family);
    } catch (err) {
      refuse(`proxy cannot resolve ${host}: ${errorMessage(err)}`);
      return;
    }
    if (client.destroyed) return;
    let address: Address = { kind: 'inet', host: ipText(ip), port, family: ip.family };
    for (const b of stone.backups) {
      if (sameAddress(b.master, address)) {
        if (b.used < 2) b.used = 2;
        if (b.failing) address = b.backup;
        break;
      }
    }
    const checked = address.kind === 'inet' ? (parseIpAddress(address.host) ?? ip) : ip;
    const verdict = permitDecision(stone.permits, checked, address.kind === 'inet' ? address.port : port);
    if (verdict === 'host') {
      refuse(`stone ${stone.listenFd}: proxy may not connect to ${host}`);
      return;
    }
    if (verdict === 'port') {
      refuse(`stone ${stone.listenFd}: proxy may not connect to port ${service}`);
      return;
    }
    let pairTls: PairTls | undefined;
    if (https) {
      if (!stone.sslClient) {
        refuse(`stone ${stone.listenFd}: no -q options for https://${host}`);
        return;
      }
      const ssl = stone.sslClient;
      pairTls = { settings: ssl.settings, options: ssl.options, serverName: clientServerName(ssl.settings, host), memory: { serial: undefined } };
    }
    const printed = log.addr(address.kind === 'inet' ? address.host : '', address.kind === 'inet' ? address.port : 0);
    const target: PairTarget = { ...stone.pairBase, router: { next: () => ({ address, printed }) }, ...(pairTls ? { tls: pairTls } : {}) };
    const extras: PairExtras = {
      prelude,
      ...(clientReply ? { clientReply } : {}),
      ...(filters.toDest ? { toDest: filters.toDest } : {}),
      ...(filters.toClient ? { toClient: filters.toClient } : {}),
      ...(isLocalhost(ip) ? {} : { note: { clock: Math.floor(Date.now() / 1000), text: noteText } }),
    };
    new TcpPair(client, clientFd, target, dumpMode, pairs, [], {}, extras);
  };

  client.on('data', onData);
  client.once('end', onEnd);
  client.resume();
}

