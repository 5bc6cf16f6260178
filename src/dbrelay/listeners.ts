// The database relay's listeners: accept a client (TCP with IDENT, TCP with a client certificate
// sent inside the protocol's TLS upgrade, TLS with a client certificate, a UNIX socket with peer
// credentials, per-user UNIX sockets, or streams from a warpstone relay as an agent), refuse
// banned sources at once (TCP and TLS, when bans are configured: bans.ts), find out who it is
// (identify.ts), build the DbSessionContext (bounded upstream connections with a connect
// timeout) and hand it to the protocol session. Decisions of TCP and TLS listeners are handed
// to the bans to count.
// Owns: sockets and socket files, accept limits, the session context, the banned refusal's
// socket. Must not: parse database protocols, decide policy or write the audit trail itself
// (sessions and the sink do; the one exception is a banned connection's line, which no session
// ever sees).
import net from 'node:net';
import tls from 'node:tls';
import { existsSync, lstatSync, lchownSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import { StateError, errorMessage } from '../common/errors.js';
import { formatAddress, formatHostPort, type HostPort } from '../common/hostport.js';
import { Agent } from '../agent/agent.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { Exposure } from '../agent/expose.js';
import type { ListenerConfig, TcpListenerConfig, TlsListenerConfig, UnixListenerConfig, PerUserListenerConfig, TunnelListenerConfig, Upstream } from './config.js';
import { PER_USER_SOCKET_DIR } from './config.js';
import { peercredAddon } from '../identity/peercred.js';
import { checkedCertificateIdentity, identIdentity, noCertificateYet, socketOwnerIdentity, tunnelIdentity, unixPeerIdentity } from './identify.js';
import { DB_BAN_DEFAULTS, bannedMessage, bannedReply, type DbBans } from './bans.js';
import { closeWithReply } from './session-io.js';
import type { ClientIdentity, DbAuditSink, DbSessionContext, DbSessionHandler, Decision, DecisionInput, PeerVerification } from './types.js';

export interface ListenerParts<L extends ListenerConfig = ListenerConfig> {
  config: L;
  handler: DbSessionHandler;
  decide: (input: DecisionInput) => Promise<Decision>;
  audit: DbAuditSink;
  log: Logger;
  /** the database relay's bans, when configured; only TCP and TLS listeners use them */
  bans?: DbBans;
}

/** A listener's way of learning the identity from the certificate sent inside the protocol's TLS. */
export type PeerIdentify = (peer: { socket: tls.TLSSocket; verification: PeerVerification }) => Promise<ClientIdentity>;

export interface RunnerOptions {
  /** `kind: tcp, identity: certificate`: ask for the client's certificate in the TLS upgrade and take the identity from it */
  peerIdentity?: { ca: string; identify: PeerIdentify };
  /** count decisions against their source (TCP and TLS listeners with bans configured) */
  bans?: DbBans;
}

export interface RunningListener {
  name: string;
  /** where clients reach it: "127.0.0.1:3307", "unix:/run/db.sock", "tunnel db at relay:7443" */
  addresses: string[];
  /** TCP and TLS listeners: the bound addresses (port 0 in the config becomes the real port) */
  bound: HostPort[];
  /** sessions running now (handshake or pipe) */
  sessions(): number;
  stop(): Promise<void>;
}

export class UpstreamUnavailable extends StateError {
  constructor(message: string) {
    super(message, 'WS_DBRELAY_UPSTREAM');
  }
}

/** Accepts clients for one listener: bans, admission limit, identity, context, the session itself. */
export class SessionRunner {
  private readonly clients = new Set<Duplex>();
  private readonly upstreams = new Set<net.Socket>();
  private readonly running = new Set<Promise<void>>();
  /** banned clients reading their refusal (bounded by DB_BAN_DEFAULTS.maxLingering) */
  private readonly refusing = new Set<Duplex>();
  private readonly tlsForClients: DbSessionContext['tls'];
  private stopping = false;

  constructor(
    private readonly parts: ListenerParts,
    private readonly options: RunnerOptions = {},
  ) {
    const clientTls = parts.config.policy.clientTls;
    const ca = options.peerIdentity?.ca;
    this.tlsForClients =
      clientTls.mode === 'terminate'
        ? {
            mode: 'terminate',
            // with a CA, OpenSSL verifies the client's certificate against it (the session reads the verdict)
            secureContext: tls.createSecureContext({ key: clientTls.key, cert: clientTls.cert, ...(ca ? { ca } : {}), minVersion: 'TLSv1.2' }),
            requestClientCert: ca !== undefined,
          }
        : { mode: 'refuse' };
  }

  /**
   * Refuses a banned source at accept: one audit line, the guard told (it logs, rate-limited),
   * `reply` (the protocol's refusal; none on TLS-first listeners) and the socket closed. Nothing
   * is read, IDENT is not asked, the database is not contacted.
   */
  refuseBanned(socket: net.Socket, source: string, reply: Buffer | undefined): void {
    const { config, audit, log, bans } = this.parts;
    socket.on('error', (err: Error) => log.debug({ source, err: err.message }, 'banned client connection error'));
    bans?.refused(source);
    try {
      audit.record({
        time: new Date(),
        listener: config.name,
        protocol: config.upstream.protocol,
        source,
        identity: undefined,
        identitySource: identitySourceOf(config),
        identityDetail: 'not looked up: the source is banned',
        dbUser: undefined,
        decision: 'deny',
        reason: 'banned',
        message: bannedMessage(socket.remoteAddress),
      });
    } catch (err) {
      log.error({ err: errorMessage(err) }, 'audit record failed');
    }
    if (!reply || this.stopping || this.refusing.size >= DB_BAN_DEFAULTS.maxLingering) {
      // Under a flood of banned connections the refusal may be cut short; no slot is held for it.
      if (reply && !this.stopping) socket.end(reply);
      socket.destroy();
      return;
    }
    this.refusing.add(socket);
    void closeWithReply(socket, reply, DB_BAN_DEFAULTS.lingerMs).finally(() => this.refusing.delete(socket));
  }

  count(): number {
    return this.clients.size;
  }

  /**
   * Takes one client: refuses it when the listener is full or stopping (closing only that
   * connection, with a log line), else finds its identity and runs the session.
   */
  accept(client: Duplex, source: string, identify: () => ClientIdentity | Promise<ClientIdentity>): void {
    const { config, log } = this.parts;
    client.on('error', (err: Error) => log.debug({ source, err: err.message }, 'client connection error'));
    if (this.stopping) {
      client.destroy();
      return;
    }
    if (this.clients.size >= config.policy.maxConnections) {
      log.warn({ source, limit: config.policy.maxConnections }, 'connection refused: the listener has reached max_connections');
      client.destroy();
      return;
    }
    this.clients.add(client);
    client.once('close', () => this.clients.delete(client));
    const session = this.runSession(client, source, identify).finally(() => {
      this.clients.delete(client);
      this.running.delete(session);
    });
    this.running.add(session);
  }

  private async runSession(client: Duplex, source: string, identify: () => ClientIdentity | Promise<ClientIdentity>): Promise<void> {
    const { config, handler, decide, audit, log } = this.parts;
    let identity: ClientIdentity;
    try {
      identity = await identify();
    } catch (err) {
      identity = { name: undefined, source: identitySourceOf(config), detail: `identity lookup failed: ${errorMessage(err)}` };
    }
    if (client.destroyed || this.stopping) {
      log.debug({ source, identity: identity.name }, 'client left before its session started');
      client.destroy();
      return;
    }
    const { peerIdentity, bans } = this.options;
    // An identity learnt later (from the certificate inside TLS) is bound by the session itself.
    const sessionLog = peerIdentity ? log.child({ source }) : log.child({ source, identity: identity.name });
    let opened = 0;
    const context: DbSessionContext = {
      listener: config.name,
      client,
      source,
      identity,
      connectUpstream: () => {
        opened += 1;
        // A session needs one database connection (two leave room for a retry); more would be a
        // session bug multiplying connections, so it is cut off here.
        if (opened > 2) return Promise.reject(new UpstreamUnavailable('the relay opens at most two database connections per client'));
        return this.connectUpstream(config.upstream, sessionLog);
      },
      decide: bans
        ? async (input) => {
            const decision = await decide(input);
            bans.decided(source, input.identity, decision);
            return decision;
          }
        : decide,
      ...(peerIdentity ? { identifyFromPeer: peerIdentity.identify } : {}),
      tls: this.tlsForClients,
      audit,
      log: sessionLog,
      handshakeTimeoutMs: config.policy.handshakeTimeoutMs,
      idleTimeoutMs: config.policy.idleTimeoutMs,
    };
    try {
      await handler(context);
    } catch (err) {
      // A session must not throw for client bytes; if it does anyway, only this client pays.
      sessionLog.error({ err: errorMessage(err) }, 'session failed');
    } finally {
      client.destroy();
    }
  }

  /** A new connection to the database: bounded in number and in connect time. */
  connectUpstream(upstream: Upstream, log: Logger): Promise<Duplex> {
    const { policy } = this.parts.config;
    if (this.stopping) return Promise.reject(new UpstreamUnavailable('the database relay is stopping'));
    if (this.upstreams.size >= policy.maxConnections * 2) {
      log.warn({ limit: policy.maxConnections * 2 }, 'upstream connection refused: too many open');
      return Promise.reject(new UpstreamUnavailable('the database relay has too many database connections open; try again later'));
    }
    return new Promise<Duplex>((resolve, reject) => {
      const socket =
        upstream.transport === 'tcp'
          ? net.connect({ host: upstream.address.host, port: upstream.address.port, allowHalfOpen: true, noDelay: true })
          : net.connect({ path: upstream.path, allowHalfOpen: true });
      this.upstreams.add(socket);
      socket.once('close', () => this.upstreams.delete(socket));
      const timer = setTimeout(() => {
        socket.destroy();
        log.warn({ upstream: upstream.url, timeoutMs: policy.connectTimeoutMs }, 'database did not answer in time');
        reject(new UpstreamUnavailable(`the database did not answer within ${policy.connectTimeoutMs / 1000} s`));
      }, policy.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.setKeepAlive(true, 30_000);
        resolve(socket);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        log.warn({ upstream: upstream.url, err: err.message }, 'cannot connect to the database');
        // The client sees why in general terms; the address stays in our log.
        reject(new UpstreamUnavailable(`the database is not reachable (${err.code ?? 'error'})`));
      });
    });
  }

  /** Stops taking clients and ends every session and database connection of this listener. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const client of this.refusing) client.destroy();
    for (const client of this.clients) client.destroy();
    for (const upstream of this.upstreams) upstream.destroy();
    await Promise.allSettled([...this.running]);
  }
}

function identitySourceOf(config: ListenerConfig): ClientIdentity['source'] {
  switch (config.kind) {
    case 'tcp':
      return 'ident';
    case 'tls':
      return 'certificate';
    case 'unix':
      return 'unix-peer';
    case 'per-user':
      return 'unix-socket-owner';
    case 'tunnel':
      return 'tunnel';
  }
}

// ---------------------------------------------------------------------------------------------
// TCP and TLS

function listenTcp(server: net.Server, hp: HostPort, name: string, log: Logger): Promise<HostPort> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EACCES' ? 'permission denied (ports below 1024 need root)' : err.message;
      reject(new StateError(`listener '${name}': cannot listen on ${formatHostPort(hp)}: ${why}`, 'WS_LISTEN'));
    });
    server.listen({ host: hp.host, port: hp.port, ipv6Only: false }, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => log.error({ err: err.message }, 'listener error'));
      const address = server.address() as net.AddressInfo;
      resolve({ host: address.address, port: address.port });
    });
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function watchServer(server: net.Server, parts: ListenerParts): void {
  server.maxConnections = parts.config.policy.maxConnections;
  server.on('drop', (data?: { remoteAddress?: string; remotePort?: number }) =>
    parts.log.warn({ source: formatAddress(data?.remoteAddress, data?.remotePort), limit: parts.config.policy.maxConnections }, 'connection refused: the listener has reached max_connections'),
  );
}

/** Bound TCP listener: its server stops first, then its sessions, then what it opened (a store). */
function tcpRunning(config: TcpListenerConfig | TlsListenerConfig, bound: HostPort, runner: SessionRunner, server: net.Server, store: Store | undefined): RunningListener {
  return {
    name: config.name,
    addresses: [formatHostPort(bound)],
    bound: [bound],
    sessions: () => runner.count(),
    stop: async () => {
      const closed = closeServer(server);
      await runner.stop();
      await closed;
      await store?.close();
    },
  };
}

/**
 * The store a certificate listener checks certificates against (recorded, not revoked), opened
 * now, while the relay may still be root (the store is the home's, mode 0600).
 */
function openRevocationStore(path: string | undefined): Promise<Store | undefined> {
  return path ? openStore(path) : Promise.resolve(undefined);
}

async function startTcp(parts: ListenerParts<TcpListenerConfig>): Promise<RunningListener> {
  const { config, log, bans } = parts;
  const store = config.identity === 'certificate' ? await openRevocationStore(config.clientCert.revocationStore) : undefined;
  const options: RunnerOptions = bans ? { bans } : {};
  let identify: (socket: net.Socket) => ClientIdentity | Promise<ClientIdentity>;
  if (config.identity === 'certificate') {
    const check = { requiredOu: config.clientCert.requiredOu, store };
    options.peerIdentity = { ca: config.clientCert.ca, identify: (peer) => checkedCertificateIdentity(peer.socket, check, peer.verification) };
    identify = () => noCertificateYet();
  } else {
    const { ident, identFrom } = config;
    identify = (socket) => identIdentity(socket, ident, identFrom);
  }
  const runner = new SessionRunner(parts, options);
  const protocol = config.upstream.protocol;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const source = formatAddress(socket.remoteAddress, socket.remotePort);
    if (bans?.isBanned(socket.remoteAddress)) {
      runner.refuseBanned(socket, source, bannedReply(protocol, socket.remoteAddress));
      return;
    }
    runner.accept(socket, source, () => identify(socket));
  });
  watchServer(server, parts);
  let bound: HostPort;
  try {
    bound = await listenTcp(server, config.listen, config.name, log);
  } catch (err) {
    await store?.close();
    throw err;
  }
  return tcpRunning(config, bound, runner, server, store);
}

async function startTls(parts: ListenerParts<TlsListenerConfig>): Promise<RunningListener> {
  const { config, log, bans } = parts;
  const runner = new SessionRunner(parts, bans ? { bans } : {});
  const store = await openRevocationStore(config.revocationStore);
  const check = { requiredOu: config.requiredOu, store };
  // Never listens itself: the plain server below accepts, turns banned sources away before any
  // TLS work, and hands the rest over ('connection'), as the relay's front door does.
  const tlsServer = tls.createServer({
    key: config.key,
    cert: config.cert,
    ca: config.ca,
    requestCert: true,
    // OpenSSL verifies the chain; the verdict is read in certificateIdentity, so a client
    // without a valid certificate is refused in its own protocol's words, with the reason.
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    handshakeTimeout: config.policy.handshakeTimeoutMs,
    allowHalfOpen: true,
    // PostgreSQL 17 clients with sslnegotiation=direct insist on this ALPN.
    ...(config.upstream.protocol === 'postgres' ? { ALPNProtocols: ['postgresql'] } : {}),
  });
  tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
    socket.setNoDelay(true);
    runner.accept(socket, formatAddress(socket.remoteAddress, socket.remotePort), () => checkedCertificateIdentity(socket, check));
  });
  tlsServer.on('tlsClientError', (err, socket) => {
    const source = formatAddress(socket.remoteAddress, socket.remotePort);
    log.warn({ source, err: err.message }, 'TLS handshake failed');
    bans?.handshakeFailed(source, `TLS handshake failed: ${err.message}`);
    socket.destroy();
  });
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    if (bans?.isBanned(socket.remoteAddress)) {
      // The client expects a TLS server: nothing it could read in clear, so only dropped.
      runner.refuseBanned(socket, formatAddress(socket.remoteAddress, socket.remotePort), undefined);
      return;
    }
    tlsServer.emit('connection', socket);
  });
  watchServer(server, parts);
  let bound: HostPort;
  try {
    bound = await listenTcp(server, config.listen, config.name, log);
  } catch (err) {
    await store?.close();
    throw err;
  }
  return tcpRunning(config, bound, runner, server, store);
}

// ---------------------------------------------------------------------------------------------
// UNIX sockets

/**
 * Makes `path` free for a new socket: a leftover socket nobody answers on is removed; a live
 * one, anything that is not a socket, or a socket owned by anyone but root (or the relay's own
 * account) and `intendedUid` is an error (never delete what is not ours: a user could plant a
 * socket of their own there and have root remove it, or point the path at something else).
 */
async function clearStaleSocket(path: string, name: string, intendedUid?: number): Promise<void> {
  let isSocket: boolean;
  let owner: number;
  try {
    const st = lstatSync(path);
    isSocket = st.isSocket();
    owner = st.uid;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new StateError(`listener '${name}': cannot inspect ${path}: ${errorMessage(err)}`, 'WS_LISTEN');
  }
  if (!isSocket) throw new StateError(`listener '${name}': ${path} exists and is not a socket; refusing to replace it`, 'WS_LISTEN');
  const ours = new Set([0, process.getuid?.() ?? 0, ...(intendedUid === undefined ? [] : [intendedUid])]);
  if (!ours.has(owner)) {
    throw new StateError(`listener '${name}': ${path} is a socket owned by uid ${owner}, neither root nor the socket's intended owner; refusing to remove it`, 'WS_LISTEN');
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true);
    }, 1000);
    probe.once('connect', () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  if (alive) throw new StateError(`listener '${name}': ${path} is in use by another process`, 'WS_LISTEN');
  unlinkSync(path);
}

/**
 * Binds `server` at `path` so the socket is born with `mode`: the umask is narrowed around the
 * bind (Node binds synchronously inside listen()), so there is no moment where the socket is
 * more open than configured and no chmod that could follow a swapped-in symlink.
 */
function listenUnix(server: net.Server, path: string, mode: number, name: string, log: Logger): Promise<void> {
  // libuv reports a missing directory as EACCES; say what it is
  if (!existsSync(dirname(path))) return Promise.reject(new StateError(`listener '${name}': cannot listen on ${path}: the directory ${dirname(path)} does not exist`, 'WS_LISTEN'));
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new StateError(`listener '${name}': cannot listen on ${path}: ${err.message}`, 'WS_LISTEN'));
    });
    const previous = process.umask(0o777 & ~mode);
    try {
      server.listen({ path }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => log.error({ err: err.message }, 'listener error'));
        resolve();
      });
    } finally {
      process.umask(previous);
    }
  });
}

function removeSocketFile(path: string, log: Logger): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // after dropping privileges the directory may not be ours: the next start clears it
    if (code !== 'ENOENT') log.debug({ path, err: errorMessage(err) }, 'socket file left behind');
  }
}

async function startUnix(parts: ListenerParts<UnixListenerConfig>): Promise<RunningListener> {
  const runner = new SessionRunner(parts);
  const { config, log } = parts;
  const source = `unix:${config.path}`;
  peercredAddon(); // without the addon no client could be identified: fail now, with the fix in the message
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    runner.accept(socket, source, () => unixPeerIdentity(socket));
  });
  watchServer(server, parts);
  await clearStaleSocket(config.path, config.name);
  await listenUnix(server, config.path, config.mode, config.name, log);
  if (config.group) {
    try {
      lchownSync(config.path, -1, config.group.gid);
    } catch (err) {
      await closeServer(server);
      throw new StateError(`listener '${config.name}': cannot give ${config.path} to group ${config.group.name}: ${errorMessage(err)}`, 'WS_LISTEN');
    }
  }
  return {
    name: config.name,
    addresses: [source],
    bound: [],
    sessions: () => runner.count(),
    stop: async () => {
      const closed = closeServer(server);
      await runner.stop();
      await closed;
      removeSocketFile(config.path, log);
    },
  };
}

/** Creates PER_USER_SOCKET_DIR (0755, root's: the relay runs as root here) when a socket is to go there and it is missing. */
function ensurePerUserSocketDir(socket: string): void {
  if (dirname(socket) !== PER_USER_SOCKET_DIR || existsSync(PER_USER_SOCKET_DIR)) return;
  const previous = process.umask(0o022);
  try {
    mkdirSync(PER_USER_SOCKET_DIR, { mode: 0o755 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new StateError(`cannot create ${PER_USER_SOCKET_DIR}: ${errorMessage(err)}`, 'WS_LISTEN');
  } finally {
    process.umask(previous);
  }
}

async function startPerUser(parts: ListenerParts<PerUserListenerConfig>): Promise<RunningListener> {
  const runner = new SessionRunner(parts);
  const { config, log } = parts;
  const servers: Array<{ server: net.Server; path: string }> = [];
  const stopAll = async (): Promise<void> => {
    const closed = servers.map((s) => closeServer(s.server));
    await runner.stop();
    await Promise.all(closed);
    for (const s of servers) removeSocketFile(s.path, log);
  };
  try {
    for (const entry of config.sockets) {
      const source = `unix:${entry.path}`;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        runner.accept(socket, source, () => socketOwnerIdentity(entry.user, entry.path));
      });
      watchServer(server, parts);
      ensurePerUserSocketDir(entry.path);
      await clearStaleSocket(entry.path, config.name, entry.uid);
      await listenUnix(server, entry.path, 0o600, config.name, log);
      servers.push({ server, path: entry.path });
      // lchown: never follows a symlink someone put in the socket's place after the bind.
      lchownSync(entry.path, entry.uid, entry.gid);
      const st = lstatSync(entry.path);
      if (!st.isSocket() || st.uid !== entry.uid || (st.mode & 0o777) !== 0o600) {
        throw new StateError(`listener '${config.name}': ${entry.path} is not a 0600 socket owned by ${entry.user} after creating it; was it replaced?`, 'WS_LISTEN');
      }
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  return {
    name: config.name,
    addresses: config.sockets.map((s) => `unix:${s.path} (${s.user})`),
    bound: [],
    sessions: () => runner.count(),
    stop: stopAll,
  };
}

// ---------------------------------------------------------------------------------------------
// Tunnels: the relay is dialled as an agent; each relay stream is one client.

/** The port announced to the relay for a tunnel (clients may say `CONNECT db:3306`). */
function announcedTarget(upstream: Upstream): HostPort {
  if (upstream.transport === 'tcp') return upstream.address;
  return { host: 'localhost', port: upstream.protocol === 'mysql' ? 3306 : 5432 };
}

/**
 * Starts one agent per (identity, relay) — the relay keeps only the newest link of an agent
 * name, so tunnel listeners sharing an identity must share the link — with one in-process
 * exposure per listener.
 */
export function startTunnels(
  all: Array<ListenerParts<TunnelListenerConfig>>,
  agentLog: Logger,
  onRegistered?: (tunnels: string[]) => void,
): RunningListener[] {
  const groups = new Map<string, Array<ListenerParts<TunnelListenerConfig>>>();
  for (const parts of all) {
    const key = `${parts.config.identity.serial}@${formatHostPort(parts.config.relay)}`;
    groups.set(key, [...(groups.get(key) ?? []), parts]);
  }
  const running: RunningListener[] = [];
  for (const group of groups.values()) {
    const first = group[0] as ListenerParts<TunnelListenerConfig>;
    const runners = group.map((parts) => ({ parts, runner: new SessionRunner(parts) }));
    const exposures: Exposure[] = runners.map(({ parts, runner }) => ({
      name: parts.config.tunnel,
      target: announcedTarget(parts.config.upstream),
      handler: (stream: Duplex, meta: { user: string; source: string }) => {
        runner.accept(stream, meta.source || 'relay', () => tunnelIdentity(meta.user, parts.config.tunnel));
      },
    }));
    const agent = new Agent({
      identity: first.config.identity,
      relay: first.config.relay,
      exposures,
      log: agentLog.child({ agent: first.config.identity.name }),
      onRegistered: (registration) => onRegistered?.(registration.accepted),
    });
    agent.start();
    let agentStopped: Promise<void> | undefined;
    for (const { parts, runner } of runners) {
      running.push({
        name: parts.config.name,
        addresses: [`tunnel ${parts.config.tunnel} at ${formatHostPort(parts.config.relay)}`],
        bound: [],
        sessions: () => runner.count(),
        stop: async () => {
          await runner.stop();
          agentStopped ??= agent.stop();
          await agentStopped;
        },
      });
    }
  }
  return running;
}

/** Binds one socket-based listener (tcp, tls, unix, per-user). Tunnels go through startTunnels. */
export function startListener(parts: ListenerParts): Promise<RunningListener> {
  const config = parts.config;
  switch (config.kind) {
    case 'tcp':
      return startTcp({ ...parts, config });
    case 'tls':
      return startTls({ ...parts, config });
    case 'unix':
      return startUnix({ ...parts, config });
    case 'per-user':
      return startPerUser({ ...parts, config });
    case 'tunnel':
      return Promise.reject(new StateError(`listener '${config.name}' is a tunnel; start it with startTunnels`, 'WS_DBRELAY_INTERNAL'));
  }
}
