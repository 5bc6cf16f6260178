// An honest RFC 1413 (IDENT) server for the TCP connections of this host: for the query
// `<port here> , <port there>` it finds the connection between this host and the asking host
// with those ports and answers with the login name of the uid that owns its socket
// (`USERID : UNIX : alice`), or `ERROR : NO-USER`. The connection is looked up by its exact
// 4-tuple through netlink sock_diag (the native addon; constant time however many sockets the
// host has); when that is unavailable, /proc/net/tcp and tcp6 are read and searched instead.
// Owns: the identd listener, query parsing, both owner lookups, the rule of which sockets have an
// owner, and the reply lines.
// Must not: answer about connections to other hosts than the asker, make up users, switch
// privileges (the CLI does) or touch any other state.
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../common/log.js';
import { StateError, errorCode, errorMessage } from '../common/errors.js';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import { SockDiagUnavailable, sockDiagFunctions, userName, type SockDiagFunctions, type TcpDiagSocket } from './peercred.js';

export const IDENTD_DEFAULTS = {
  port: 113,
  /** a query line (or the next one) must arrive within this time, else the connection closes */
  idleTimeoutMs: 30_000,
  /** RFC 1413 bounds replies at 1000 characters; queries get the same bound */
  maxLineBytes: 1000,
  maxQueriesPerConnection: 64,
  maxConnections: 256,
} as const;

export interface IdentdOptions {
  listen: HostPort[];
  log: Logger;
  idleTimeoutMs?: number;
  maxQueriesPerConnection?: number;
  maxConnections?: number;
  /** where tcp and tcp6 are read from (tests); setting it implies lookup 'proc' */
  procNetDir?: string;
  /** how sockets are found; default 'auto' (netlink, else /proc/net) */
  lookup?: LookupMethod;
  /** uid → name; default getent passwd (cached) */
  nameOf?: (uid: number) => string | undefined;
}

/** One socket of /proc/net/tcp or tcp6. Addresses are 4 or 16 bytes in network order. */
export interface TcpEntry {
  localAddress: Buffer;
  localPort: number;
  remoteAddress: Buffer;
  remotePort: number;
  state: number;
  uid: number;
  inode: number;
}

// TCP states whose uid column means nothing (no owning socket) or that are not connections.
const TCP_TIME_WAIT = 0x06;
const TCP_CLOSE = 0x07;
const TCP_LISTEN = 0x0a;

const LITTLE_ENDIAN = endianness() === 'LE';

/** "0100007F" (the kernel prints each 32-bit word in host order) → bytes in network order. */
function procAddress(hex: string): Buffer | undefined {
  if (hex.length !== 8 && hex.length !== 32) return undefined;
  if (!/^[0-9A-Fa-f]+$/.test(hex)) return undefined;
  const out = Buffer.alloc(hex.length / 2);
  for (let i = 0; i < hex.length / 8; i++) {
    const word = parseInt(hex.slice(i * 8, i * 8 + 8), 16);
    if (LITTLE_ENDIAN) out.writeUInt32LE(word, i * 4);
    else out.writeUInt32BE(word, i * 4);
  }
  return canonicalBytes(out);
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) → the 4 IPv4 bytes; anything else unchanged. */
function canonicalBytes(bytes: Buffer): Buffer {
  if (bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return Buffer.from(bytes.subarray(12));
  }
  return bytes;
}

/** A textual IP address (as Node reports it) → 4 or 16 bytes, IPv4-mapped folded to 4. */
export function addressBytes(address: string): Buffer | undefined {
  const plain = address.replace(/%.*$/, '');
  if (net.isIPv4(plain)) return Buffer.from(plain.split('.').map(Number));
  if (!net.isIPv6(plain)) return undefined;
  let text = plain;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = (v4[1] as string).split('.').map(Number) as [number, number, number, number];
    text = text.slice(0, v4.index) + `${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head, tail] = text.split('::', 2) as [string, string | undefined];
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (all.length !== 8) return undefined;
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return canonicalBytes(out);
}

/** Parses the text of /proc/net/tcp or /proc/net/tcp6; malformed lines are skipped. */
export function parseProcNetTcp(text: string): TcpEntry[] {
  const entries: TcpEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if (f.length < 10 || !/^\d+:$/.test(f[0] ?? '')) continue;
    const [la, lp] = (f[1] ?? '').split(':');
    const [ra, rp] = (f[2] ?? '').split(':');
    const localAddress = procAddress(la ?? '');
    const remoteAddress = procAddress(ra ?? '');
    const uid = Number(f[7]);
    const inode = Number(f[9]);
    if (!localAddress || !remoteAddress || !/^[0-9A-Fa-f]{4}$/.test(lp ?? '') || !/^[0-9A-Fa-f]{4}$/.test(rp ?? '')) continue;
    if (!Number.isInteger(uid) || !Number.isInteger(inode)) continue;
    entries.push({
      localAddress,
      localPort: parseInt(lp as string, 16),
      remoteAddress,
      remotePort: parseInt(rp as string, 16),
      state: parseInt(f[3] ?? '', 16),
      uid,
      inode,
    });
  }
  return entries;
}

export interface ConnectionKey {
  /** this host's side */
  localAddress: string;
  localPort: number;
  /** the asking host's side */
  remoteAddress: string;
  remotePort: number;
}

/** IPv4 bytes → the IPv4-mapped IPv6 form ::ffff:a.b.c.d, as an IPv6 socket carrying IPv4 shows it. */
function mappedBytes(v4: Buffer): Buffer {
  return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), v4]);
}

/**
 * The one rule of which sockets have an owner, shared by both lookups. TIME_WAIT, CLOSE and
 * LISTEN sockets are not an owned connection, and a socket without inode (orphaned, TIME_WAIT,
 * a half-open request) has no owner: its uid reads 0 and must never be reported as root.
 */
function ownerOf(socket: { state: number; inode: number; uid: number }): number | undefined {
  if (socket.inode === 0 || socket.state === TCP_TIME_WAIT || socket.state === TCP_CLOSE || socket.state === TCP_LISTEN) return undefined;
  return socket.uid;
}

/** Both addresses as 4 bytes (IPv4, mapped folded) or 16 bytes (IPv6); undefined when they cannot name one socket. */
function keyBytes(key: ConnectionKey): { local: Buffer; remote: Buffer } | undefined {
  const local = addressBytes(key.localAddress);
  const remote = addressBytes(key.remoteAddress);
  // an IPv4 address on one side and IPv6 on the other is no TCP connection; neither lookup could match it
  if (!local || !remote || local.length !== remote.length) return undefined;
  return { local, remote };
}

async function ownerByProc(key: ConnectionKey, procNetDir: string): Promise<number | undefined> {
  const bytes = keyBytes(key);
  if (!bytes) return undefined;
  let readable = 0;
  let lastError: unknown;
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = await readFile(join(procNetDir, file), 'latin1');
      readable++;
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') lastError = err; // no tcp6 when IPv6 is disabled
      continue;
    }
    for (const e of parseProcNetTcp(text)) {
      if (e.localPort !== key.localPort || e.remotePort !== key.remotePort) continue;
      if (!e.remoteAddress.equals(bytes.remote) || !e.localAddress.equals(bytes.local)) continue;
      const owner = ownerOf(e);
      if (owner !== undefined) return owner;
      // a TIME_WAIT row and a live one can share the 4-tuple only in theory; keep looking
    }
  }
  if (readable === 0) {
    throw new StateError(`cannot read ${join(procNetDir, 'tcp')}: ${lastError ? errorMessage(lastError) : 'no such file'}`, 'WS_IDENTD_PROC');
  }
  return undefined;
}

/** The addon's sock_diag calls after the kernel answered a probe, and whether IPv6 lookups work. */
interface NetlinkReady {
  diag: SockDiagFunctions;
  ipv6: boolean;
}

/** A failed probe is not repeated for this long (the module may get loaded, the addon built). */
const NETLINK_RETRY_MS = 60_000;
let defaultNetlink: { ready: NetlinkReady } | { failed: SockDiagUnavailable; retryAt: number } | undefined;

/**
 * Loads the sock_diag calls and probes the kernel. The probe matters: without a diag handler
 * (CONFIG_INET_DIAG off, tcp_diag missing) every exact lookup fails with ENOENT, which reads
 * exactly like "no such socket" and would turn every answer into NO-USER.
 */
function probeNetlink(load: () => SockDiagFunctions): NetlinkReady {
  const diag = load();
  try {
    diag.tcpDiagProbe(4);
  } catch (err) {
    throw new SockDiagUnavailable(`the kernel does not answer TCP sock_diag requests (${errorMessage(err)})`, err);
  }
  let ipv6 = true;
  try {
    diag.tcpDiagProbe(6);
  } catch {
    ipv6 = false; // no IPv6 in this kernel: IPv6 keys go to /proc, IPv4 ones need only AF_INET
  }
  return { diag, ipv6 };
}

function netlinkReady(load?: () => SockDiagFunctions): NetlinkReady {
  if (load) return probeNetlink(load); // a caller's own functions (tests): never cached
  const now = Date.now();
  if (defaultNetlink && 'ready' in defaultNetlink) return defaultNetlink.ready;
  if (defaultNetlink && defaultNetlink.retryAt > now) throw defaultNetlink.failed;
  try {
    const ready = probeNetlink(() => sockDiagFunctions());
    defaultNetlink = { ready };
    return ready;
  } catch (err) {
    const failed = err instanceof SockDiagUnavailable ? err : new SockDiagUnavailable(errorMessage(err), err);
    defaultNetlink = { failed, retryAt: now + NETLINK_RETRY_MS };
    throw failed;
  }
}

function sameConnection(found: TcpDiagSocket, local: Buffer, localPort: number, remote: Buffer, remotePort: number): boolean {
  return (
    found.localPort === localPort &&
    found.remotePort === remotePort &&
    canonicalBytes(found.local).equals(local) &&
    canonicalBytes(found.remote).equals(remote)
  );
}

/**
 * The owner through exact sock_diag lookups, no dump: constant time in the number of sockets.
 * An IPv4 key is asked as AF_INET and, like the /proc search that folds ::ffff: rows, as
 * AF_INET6 with the mapped addresses (a dual-stack socket; current kernels find it either way).
 * The kernel only finds a socket bound to a device (SO_BINDTODEVICE, IPv6 link-local) when asked
 * with that device's index, so a miss is asked again once per interface.
 */
function ownerByNetlink(key: ConnectionKey, ready: NetlinkReady): number | undefined {
  const bytes = keyBytes(key);
  if (!bytes) return undefined;
  const { local, remote } = bytes;
  const forms: Array<[4 | 6, Buffer, Buffer]> = [];
  if (local.length === 4) {
    forms.push([4, local, remote]);
    if (ready.ipv6) forms.push([6, mappedBytes(local), mappedBytes(remote)]);
  } else {
    if (!ready.ipv6) throw new SockDiagUnavailable('the kernel does not answer IPv6 sock_diag requests');
    forms.push([6, local, remote]);
  }
  const ask = (ifindex: number): { owner: number | undefined } | undefined => {
    for (const [family, l, r] of forms) {
      const found = ready.diag.tcpDiagLookup(family, l, key.localPort, r, key.remotePort, ifindex);
      // for an unknown 4-tuple the kernel may answer with the listener of the local port
      if (found && sameConnection(found, local, key.localPort, remote, key.remotePort)) return { owner: ownerOf(found) };
    }
    return undefined;
  };
  const unbound = ask(0);
  if (unbound) return unbound.owner;
  for (const ifindex of ready.diag.interfaceIndexes()) {
    const bound = ask(ifindex);
    if (bound) return bound.owner;
  }
  return undefined;
}

/** Whether the default netlink lookup can be used (probing the kernel once), for the start-up log. */
export function netlinkStatus(): { usable: true; ipv6: boolean } | { usable: false; reason: string } {
  try {
    return { usable: true, ipv6: netlinkReady().ipv6 };
  } catch (err) {
    return { usable: false, reason: errorMessage(err) };
  }
}

const FALLBACK_WARNING_EVERY_MS = 10 * 60_000;

/** How sockets are found: 'auto' is netlink sock_diag when usable, else /proc/net. */
export type LookupMethod = 'auto' | 'netlink' | 'proc';

export interface OwnerLookupOptions {
  /** default 'auto', or 'proc' when procNetDir is given; 'netlink' throws when netlink is unavailable */
  method?: LookupMethod;
  /** where tcp and tcp6 are read from; default /proc/net */
  procNetDir?: string;
  /** the sock_diag calls to use instead of the native addon's (tests); probed on every lookup */
  sockDiag?: () => SockDiagFunctions;
}

export interface OwnerLookup {
  /** the owning uid, undefined when there is no such connection with an owner */
  uid: number | undefined;
  via: 'netlink' | 'proc';
  /** why 'auto' read /proc/net instead of asking netlink */
  fallback?: string;
}

/**
 * The uid owning the socket of the TCP connection `key`, and how it was found. TIME_WAIT, CLOSE,
 * LISTEN and orphaned sockets never have an owner (ownerOf). Throws when the method cannot run
 * ('netlink' unavailable, /proc/net unreadable).
 */
export async function lookupConnectionOwner(key: ConnectionKey, options: OwnerLookupOptions = {}): Promise<OwnerLookup> {
  const method = options.method ?? (options.procNetDir === undefined ? 'auto' : 'proc');
  const procNetDir = options.procNetDir ?? '/proc/net';
  if (method === 'proc') return { uid: await ownerByProc(key, procNetDir), via: 'proc' };
  if (method === 'netlink') return { uid: ownerByNetlink(key, netlinkReady(options.sockDiag)), via: 'netlink' };
  let fallback: string;
  try {
    return { uid: ownerByNetlink(key, netlinkReady(options.sockDiag)), via: 'netlink' };
  } catch (err) {
    fallback = errorMessage(err);
  }
  return { uid: await ownerByProc(key, procNetDir), via: 'proc', fallback };
}

/** The uid owning the socket of the TCP connection `key` (see lookupConnectionOwner); a string is a procNetDir. */
export async function findConnectionOwner(key: ConnectionKey, options: string | OwnerLookupOptions = {}): Promise<number | undefined> {
  return (await lookupConnectionOwner(key, typeof options === 'string' ? { procNetDir: options } : options)).uid;
}

/** The pair of one query line, or why it is not one. */
export function parseIdentQuery(line: string): { ok: true; here: number; there: number } | { ok: false; ports?: string; reason: string } {
  const m = /^[ \t]*(\d{1,10})[ \t]*,[ \t]*(\d{1,10})[ \t]*$/.exec(line);
  if (!m) return { ok: false, reason: 'not "<port> , <port>"' };
  const here = Number(m[1]);
  const there = Number(m[2]);
  if (here < 1 || here > 65535 || there < 1 || there > 65535) {
    return { ok: false, ports: `${m[1]} , ${m[2]}`, reason: 'port out of range' };
  }
  return { ok: true, here, there };
}

export class Identd {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly idleTimeoutMs: number;
  private readonly maxQueries: number;
  private readonly lookup: OwnerLookupOptions;
  private readonly nameOf: (uid: number) => string | undefined;
  /** when the last "falling back to /proc/net" warning was logged, and why */
  private lastFallbackWarning: { reason: string; at: number } | undefined;
  readonly addresses: HostPort[] = [];

  constructor(private readonly options: IdentdOptions) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? IDENTD_DEFAULTS.idleTimeoutMs;
    this.maxQueries = options.maxQueriesPerConnection ?? IDENTD_DEFAULTS.maxQueriesPerConnection;
    this.lookup = {
      method: options.lookup ?? (options.procNetDir === undefined ? 'auto' : 'proc'),
      ...(options.procNetDir === undefined ? {} : { procNetDir: options.procNetDir }),
    };
    this.nameOf = options.nameOf ?? userName;
  }

  async start(): Promise<void> {
    for (const hp of this.options.listen) await this.listen(hp);
    if (this.lookup.method !== 'proc') {
      const status = netlinkStatus();
      if (status.usable) this.options.log.info({ lookup: 'netlink', ipv6: status.ipv6 }, 'identd finds connections with netlink sock_diag');
      else if (this.lookup.method === 'auto') this.warnFallback(status.reason);
      else this.options.log.error({ reason: status.reason }, 'identd: netlink sock_diag unavailable; every query will answer UNKNOWN-ERROR');
    }
  }

  /** Falling back is correct but slow with many sockets: say so once, then at most every 10 minutes. */
  private warnFallback(reason: string): void {
    const now = Date.now();
    const last = this.lastFallbackWarning;
    if (last && last.reason === reason && now - last.at < FALLBACK_WARNING_EVERY_MS) return;
    this.lastFallbackWarning = { reason, at: now };
    this.options.log.warn({ reason }, 'identd: netlink sock_diag unavailable; reading all of /proc/net/tcp and tcp6 for every query (slow with many sockets)');
  }

  private listen(hp: HostPort): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.serve(socket));
    server.maxConnections = this.options.maxConnections ?? IDENTD_DEFAULTS.maxConnections;
    return new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? 'the address is already in use (another identd, e.g. oidentd?)'
            : err.code === 'EACCES'
              ? 'permission denied (port 113 needs root; see --user)'
              : err.message;
        reject(new StateError(`identd cannot listen on ${formatHostPort(hp)}: ${why}`, err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL' ? `WS_LISTEN_${err.code}` : 'WS_LISTEN'));
      });
      server.listen({ host: hp.host, port: hp.port, ipv6Only: false }, () => {
        const address = server.address() as net.AddressInfo;
        const bound = { host: address.address, port: address.port };
        this.addresses.push(bound);
        this.servers.push(server);
        server.on('error', (err) => this.options.log.error({ err: errorMessage(err) }, 'identd listener error'));
        this.options.log.info({ listen: formatHostPort(bound) }, 'identd listening');
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
  }

  private serve(socket: net.Socket): void {
    const log = this.options.log.child({ from: `${socket.remoteAddress}:${socket.remotePort}` });
    const querier = { address: socket.remoteAddress, local: socket.localAddress };
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', (err) => log.debug({ err: errorMessage(err) }, 'identd client error'));

    let buffered: Buffer = Buffer.alloc(0);
    const queue: string[] = [];
    let answered = 0;
    let busy = false;
    let inputDone = false; // the client ended, or we stopped reading
    let timer: NodeJS.Timeout | undefined;
    const armTimer = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        log.debug({ idleTimeoutMs: this.idleTimeoutMs }, 'identd client too slow; closing');
        socket.destroy();
      }, this.idleTimeoutMs);
    };
    socket.on('close', () => clearTimeout(timer));
    armTimer();

    // After the last query we take, input is still read (and dropped) so the client's FIN
    // arrives and the socket closes; the idle timer stays armed until 'close' as a backstop.
    const stopReading = (): void => {
      inputDone = true;
      if (socket.isPaused()) socket.resume();
    };
    const finishIfIdle = (): void => {
      if (!busy && queue.length === 0 && inputDone && !socket.destroyed && socket.writable) socket.end();
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (queue.length > 0 && !socket.destroyed) {
          const line = queue.shift() as string;
          const reply = await this.answer(line, querier.address, querier.local, log);
          if (socket.destroyed) return;
          if (reply === undefined) {
            // not a query at all: like oidentd, close without an answer
            queue.length = 0;
            stopReading();
            break;
          }
          socket.write(reply + '\r\n');
          answered++;
          armTimer();
          if (answered >= this.maxQueries) {
            queue.length = 0;
            stopReading();
          }
        }
      } finally {
        busy = false;
      }
      if (!inputDone && socket.isPaused()) socket.resume();
      finishIfIdle();
    };

    const onData = (chunk: Buffer): void => {
      if (inputDone) return;
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      let eol: number;
      while ((eol = buffered.indexOf(0x0a)) >= 0) {
        if (eol + 1 > IDENTD_DEFAULTS.maxLineBytes) break;
        queue.push(buffered.subarray(0, eol).toString('latin1').replace(/\r$/, ''));
        buffered = buffered.subarray(eol + 1);
      }
      const tooLong = (eol >= 0 ? eol + 1 : buffered.length) > IDENTD_DEFAULTS.maxLineBytes;
      if (tooLong) {
        log.info({ maxLineBytes: IDENTD_DEFAULTS.maxLineBytes }, 'identd query line too long; closing after the earlier queries');
        buffered = Buffer.alloc(0);
        stopReading();
      } else if (queue.length > 16) {
        socket.pause(); // resumed by pump() once the queue is answered
      }
      void pump();
    };
    socket.on('data', onData);
    socket.on('end', () => {
      // a last query without CR LF (`echo -n 1 , 2 | nc`) is still answered
      if (!inputDone && buffered.length > 0 && buffered.length <= IDENTD_DEFAULTS.maxLineBytes) queue.push(buffered.toString('latin1').replace(/\r$/, ''));
      buffered = Buffer.alloc(0);
      inputDone = true;
      void pump();
    });
  }

  /** One reply line (without CR LF) to one query line; undefined: not a query, close. */
  private async answer(line: string, asker: string | undefined, local: string | undefined, log: Logger): Promise<string | undefined> {
    const query = parseIdentQuery(line);
    if (!query.ok) {
      log.info({ query: JSON.stringify(line.slice(0, 80)), reason: query.reason }, 'identd: invalid query');
      return query.ports === undefined ? undefined : `${query.ports} : ERROR : INVALID-PORT`;
    }
    const pair = `${query.here} , ${query.there}`;
    if (!asker || !local) return `${pair} : ERROR : UNKNOWN-ERROR`;
    let found: OwnerLookup;
    try {
      found = await lookupConnectionOwner({ localAddress: local, localPort: query.here, remoteAddress: asker, remotePort: query.there }, this.lookup);
    } catch (err) {
      log.error({ err: errorMessage(err), lookup: this.lookup.method }, 'identd: connection table unreadable');
      return `${pair} : ERROR : UNKNOWN-ERROR`;
    }
    if (found.fallback !== undefined) this.warnFallback(found.fallback);
    const uid = found.uid;
    if (uid === undefined) {
      log.info({ query: pair, answer: 'NO-USER', via: found.via }, 'identd answered');
      return `${pair} : ERROR : NO-USER`;
    }
    const name = this.nameOf(uid) ?? String(uid);
    log.info({ query: pair, uid, answer: name, via: found.via }, 'identd answered');
    return `${pair} : USERID : UNIX : ${name}`;
  }
}
