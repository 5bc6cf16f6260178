// The relay server: one TLS port (default 7443) for agents and clients. A plain TCP front door
// takes each connection first (bounded time for the first byte; plain HTTP gets a readable 400
// instead of a TLS alert), then TLS with mutual certificates. After the handshake the identity
// is checked against the store, and the connection goes by role and ALPN: agent -> AgentHub;
// user with ALPN warpstone/1 -> HTTP/2 gateway; user without ALPN -> VPN-Warp text CONNECT.
// What happens is told on `events` (RelayEvents): failures, handshakes, streams, agents, and a
// once-a-second byte tally; bans, audit, metrics and alerts subscribe. A banned source (the
// `admission` check, in memory) is dropped at accept, before any TLS work.
// Owns: listeners, connection dispatch, revocation enforcement, shutdown, connection events.
// Must not: parse client protocols, open streams itself, or wait on anything at accept.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { Logger } from '../common/log.js';
import type { Store } from '../store/store.js';
import { homePaths } from '../common/home.js';
import { formatAddress, formatHostPort, type HostPort } from '../common/hostport.js';
import { StateError, StreamRefused, errorMessage } from '../common/errors.js';
import { splitPem, subjectField } from '../pki/pem.js';
import { RelayEvents, type FailureReason } from '../ops/events.js';
import { ShapingRegistry } from '../guard/throttle.js';
import { DEFAULTS } from '../wire/defaults.js';
import { ALPN_V1 } from '../wire/protocol.js';
import { Policy } from './policy.js';
import { authenticate, type AuthContext } from './authenticate.js';
import { AgentHub, refuseAgent } from './agents.js';
import { LiveStreams } from './streams.js';
import { Gateway } from './gateway.js';
import { H2ClientGateway } from './h2-clients.js';
import { TextClientGateway, refusalResponse } from './text-clients.js';
import { AdminSocket, type RelayStatus } from './admin.js';
import type { OpsView, ShapingSnapshot } from '../ops/view.js';

export interface RelayOptions {
  home?: string;
  listen: HostPort[];
  store: Store;
  log: Logger;
  /** Serve the admin UNIX socket (status). Default true. */
  adminSocket?: boolean;
  idleTimeoutMs?: number;
  /** the bus the relay tells what happens; one is created when absent (see `relay.events`) */
  events?: RelayEvents;
  /** asked at accept, synchronously: is this peer address banned? (BanGuard) */
  admission?: Admission;
}

/** The accept path's one question; must answer from memory, at once. */
export interface Admission {
  isBanned(remoteAddress: string | undefined): boolean;
}

/** How often the relay tallies the bytes of live streams into 'bytes' events. */
const BYTES_TICK_MS = 1_000;

const HTTP_METHODS = /^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT) /;

export class Relay implements OpsView {
  private readonly log: Logger;
  readonly store: Store;
  private readonly policy: Policy;
  private readonly hub: AgentHub;
  private readonly live = new LiveStreams();
  private readonly gateway: Gateway;
  private readonly h2Clients: H2ClientGateway;
  private readonly textClients: TextClientGateway;
  private readonly servers: net.Server[] = [];
  private readonly frontSockets = new Set<net.Socket>();
  private readonly sourceOf = new WeakMap<net.Socket, string>();
  private tlsServer: tls.Server | undefined;
  private admin: AdminSocket | undefined;
  private bytesTimer: NodeJS.Timeout | undefined;
  private serving = false;
  private authContext: AuthContext = {};
  private readonly startedAt = new Date();
  readonly addresses: HostPort[] = [];
  readonly events: RelayEvents;
  /** bandwidth limits from the store, reloaded on every policy change (OpsView.shaping reads it) */
  readonly shaper: ShapingRegistry;

  constructor(private readonly options: RelayOptions) {
    this.log = options.log;
    this.store = options.store;
    this.events = options.events ?? new RelayEvents();
    this.policy = new Policy(this.store, this.log.child({ part: 'policy' }));
    this.hub = new AgentHub(this.store, this.log.child({ part: 'agents' }), this.events);
    const shapingLog = this.log.child({ part: 'shaping' });
    this.shaper = new ShapingRegistry({
      onCredits: (e) => {
        shapingLog.info({ scope: e.scope, name: e.name, baselineBytesPerSecond: e.baselineBytesPerSecond }, e.kind === 'credits-exhausted' ? 'credits exhausted: down to the baseline' : 'credits restored: bursting allowed again');
        if (e.kind === 'credits-exhausted') this.events.emit('credits-exhausted', { time: e.time, scope: e.scope, name: e.name, baselineBytesPerSecond: e.baselineBytesPerSecond });
        else this.events.emit('credits-restored', { time: e.time, scope: e.scope, name: e.name });
      },
      onInvalid: (record, problem) => shapingLog.warn({ scope: record.scope, name: record.name, problem }, 'bandwidth limit ignored'),
    });
    this.gateway = new Gateway(this.policy, this.hub, this.live, this.log.child({ part: 'streams' }), this.events, options.idleTimeoutMs, this.shaper);
    this.h2Clients = new H2ClientGateway(this.gateway, this.log.child({ part: 'clients' }));
    this.textClients = new TextClientGateway(this.gateway, this.log.child({ part: 'clients' }));
    this.policy.onChange(() => this.enforceRevocations());
    // A ban also ends what the source already holds: an authenticated client enumerating tunnel
    // names on one long-lived session would otherwise go on after crossing maxretry.
    this.events.on('ban-issued', (ban) => this.enforceBans(ban.address));
    // Limit changes bump the same revision as grants and revocations.
    this.policy.onChange(() => void this.reloadLimits());
  }

  /** Applies the store's limits; on a read error keeps the buckets it has (and their credits). */
  private async reloadLimits(): Promise<void> {
    try {
      const result = this.shaper.applyLimits(await this.store.listLimits());
      if (result.added.length + result.changed.length + result.removed.length > 0) {
        this.log.info({ part: 'shaping', added: result.added, changed: result.changed, removed: result.removed }, 'bandwidth limits reloaded');
      }
    } catch (err) {
      this.log.error({ part: 'shaping', err: errorMessage(err) }, 'reading bandwidth limits failed; keeping the previous ones');
    }
  }

  private loadTlsMaterial(): tls.SecureContextOptions {
    const paths = homePaths(this.options.home);
    try {
      const relay = readFileSync(paths.relayIdentity, 'utf8');
      const blocks = splitPem(relay);
      const key = blocks.find((b) => b.label.endsWith('PRIVATE KEY'))?.text;
      const cert = blocks.find((b) => b.label === 'CERTIFICATE')?.text;
      if (!key || !cert) throw new Error('relay.pem lacks a key or a certificate');
      const ca = readFileSync(paths.caCert, 'utf8');
      this.authContext = { caName: caCommonName(ca) };
      return { key, cert, ca };
    } catch (err) {
      throw new StateError(`cannot load the relay's certificate from ${paths.dir} (${errorMessage(err)}); run 'warpstone init' first`, 'WS_NO_RELAY_CERT');
    }
  }

  async start(): Promise<void> {
    const material = this.loadTlsMaterial();
    await this.policy.start();
    await this.reloadLimits();
    for (const t of await this.store.listTunnels()) this.hub.rememberTunnel(t.name);
    this.tlsServer = tls.createServer({
      ...material,
      requestCert: true,
      // Verification runs, but the decision is ours (authenticate.ts), so a refusal can say why.
      rejectUnauthorized: false,
      ALPNProtocols: [ALPN_V1, 'http/1.1'],
      minVersion: 'TLSv1.2',
      handshakeTimeout: DEFAULTS.handshakeTimeoutMs,
      allowHalfOpen: true,
    });
    this.tlsServer.on('secureConnection', (socket) => void this.onSecure(socket));
    this.tlsServer.on('tlsClientError', (err, socket) => {
      // By now the socket may be closed and have forgotten its peer: use what the door saw.
      const raw = (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
      const address = (raw && this.sourceOf.get(raw)) ?? formatAddress(socket.remoteAddress, socket.remotePort);
      const reason = /timed out|timeout|ETLSTIMEDOUT/i.test(err.message)
        ? `TLS handshake did not finish within ${DEFAULTS.handshakeTimeoutMs / 1000} s`
        : `TLS handshake failed: ${err.message}`;
      this.log.warn({ source: address, code: 'WS_HANDSHAKE', reason }, 'connection refused');
      this.fail(address, 'tls-handshake', reason);
      socket.destroy();
    });
    if (this.options.adminSocket !== false) {
      // First, so a second relay on the same home stops before it binds anything.
      this.admin = new AdminSocket(homePaths(this.options.home).adminSocket, () => this.status(), this.log);
      await this.admin.start();
    }
    for (const hp of this.options.listen) await this.listen(hp);
    this.serving = true;
    this.bytesTimer = setInterval(() => this.tallyBytes(), BYTES_TICK_MS);
    this.bytesTimer.unref();
  }

  /** A failure that counts towards a ban, at connection level (no tunnel: see Gateway.refused). */
  private fail(source: string, reason: FailureReason, detail: string, identity?: string): void {
    this.events.emit('failure', { time: new Date(), source, reason, detail, ...(identity !== undefined ? { identity } : {}) });
  }

  private tallyBytes(): void {
    for (const t of this.live.tallyBytes()) this.events.emit('bytes', t);
  }

  private async listen(hp: HostPort): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use (another relay or program?)' : err.code === 'EACCES' ? 'permission denied (ports below 1024 need root; see --user)' : err.message;
        reject(new StateError(`cannot listen on ${formatHostPort(hp)}: ${why}`, 'WS_LISTEN'));
      });
      server.listen({ host: hp.host, port: hp.port, ipv6Only: false }, () => {
        server.removeAllListeners('error');
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err: err.message }, 'listener error'));
    const address = server.address() as net.AddressInfo;
    const bound = { host: address.address, port: address.port };
    this.addresses.push(bound);
    this.servers.push(server);
    this.log.info({ listen: formatHostPort(bound) }, 'relay listening');
  }

  /** Front door: waits for the first bytes, answers plain HTTP in plain text, hands TLS on. */
  private onConnection(socket: net.Socket): void {
    const address = formatAddress(socket.remoteAddress, socket.remotePort);
    if (this.options.admission?.isBanned(socket.remoteAddress)) {
      // Before any timer, buffer or TLS state exists for it: a banned peer costs an accept.
      socket.on('error', () => undefined);
      socket.destroy();
      this.events.emit('banned-drop', { time: new Date(), source: address });
      return;
    }
    this.frontSockets.add(socket);
    socket.once('close', () => this.frontSockets.delete(socket));
    socket.setNoDelay(true);
    socket.setTimeout(DEFAULTS.handshakeTimeoutMs, () => {
      const reason = `no TLS handshake within ${DEFAULTS.handshakeTimeoutMs / 1000} s`;
      this.log.warn({ source: address, code: 'WS_HANDSHAKE', reason }, 'connection refused');
      this.fail(address, 'tls-handshake', reason);
      socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.once('data', (first: Buffer) => {
      socket.pause();
      const head = first.subarray(0, 8).toString('latin1');
      if (HTTP_METHODS.test(head)) {
        this.log.warn({ source: address, code: 'WS_PLAIN_HTTP', reason: 'plain HTTP on the TLS port' }, 'connection refused');
        this.fail(address, 'bad-request', 'plain HTTP on the TLS port');
        socket.end(refusalResponse(400, 'this port speaks TLS with client certificates; plain HTTP is refused', { body: true }));
        return;
      }
      if (first[0] !== 0x16) {
        const reason = `first byte 0x${(first[0] ?? 0).toString(16)} is not a TLS handshake`;
        this.log.warn({ source: address, code: 'WS_NOT_TLS', reason }, 'connection refused');
        this.fail(address, 'bad-request', reason);
        socket.destroy();
        return;
      }
      socket.unshift(first);
      // This timer guarded only the first byte; left armed on the raw socket under the TLS
      // layer, it would cut every agent and client connection 10 s after it began. The TLS
      // handshake has its own limit (handshakeTimeout).
      socket.setTimeout(0);
      this.frontSockets.delete(socket);
      this.sourceOf.set(socket, address);
      this.tlsServer?.emit('connection', socket);
    });
  }

  private async onSecure(socket: tls.TLSSocket): Promise<void> {
    const address = formatAddress(socket.remoteAddress, socket.remotePort);
    socket.setTimeout(0);
    socket.on('error', (err) => this.log.debug({ source: address, err: err.message }, 'socket error'));
    socket.pause();
    let result;
    try {
      result = await authenticate(socket, this.store, this.policy, new Date(), this.authContext);
    } catch (err) {
      this.log.error({ source: address, err: errorMessage(err) }, 'authentication failed with an internal error');
      socket.destroy();
      return;
    }
    if (!result.ok) {
      this.log.warn({ source: address, name: result.name, code: result.code, reason: result.reason, explain: result.explain }, 'connection refused');
      // a stranger's certificate can claim any name: only ours count as an identity
      this.fail(address, result.failure, result.explain, result.signedByUs ? result.name : undefined);
      this.explainRefusal(socket, result.code, result.reason);
      return;
    }
    const { identity } = result;
    const alpn = socket.alpnProtocol;
    this.events.emit('handshake-ok', { time: new Date(), source: address, identity: identity.name, role: identity.role, resumed: socket.isSessionReused() });
    if (identity.role === 'agent') {
      if (alpn !== ALPN_V1) {
        const reason = `agent did not negotiate ${ALPN_V1}`;
        this.log.warn({ source: address, agent: identity.name, code: 'WS_AGENT_ALPN', reason }, 'connection refused');
        this.fail(address, 'bad-request', reason, identity.name);
        socket.destroy();
        return;
      }
      socket.resume();
      await this.hub.attach(socket, identity, address);
      return;
    }
    this.log.debug({ source: address, user: identity.name, alpn }, 'client connected');
    if (alpn === ALPN_V1) {
      socket.resume();
      this.h2Clients.attach(socket, identity, address);
    } else {
      this.textClients.attach(socket, identity, address);
      socket.resume();
    }
  }

  /**
   * Tells a refused peer why, in its own dialect, then closes: text clients get a 403 status
   * line; HTTP/2 users get 403 with the reason on every stream they try; agents get a GOAWAY
   * whose debug data carries the reason (the agent logs it).
   */
  private explainRefusal(socket: tls.TLSSocket, code: string, reason: string): void {
    if (socket.alpnProtocol !== ALPN_V1) {
      socket.end(refusalResponse(403, reason));
      // The socket allows half-open: a client that never ends its side would hold it for good.
      setTimeout(() => socket.destroy(), DEFAULTS.refusalLingerMs).unref();
      return;
    }
    socket.resume();
    const cert = socket.getPeerCertificate();
    const role = cert && 'subject' in cert ? (cert.subject as unknown as Record<string, string>).OU : undefined;
    if (role === 'agent') {
      refuseAgent(socket, reason);
      return;
    }
    this.h2Clients.attachRefused(socket, new StreamRefused(403, code, reason));
  }

  /** Closes connections and streams of identities that are now revoked (policy changed). */
  private enforceRevocations(): void {
    const revoked = (serial: string): boolean => this.policy.isRevoked(serial);
    const streams = this.live.closeWhere((s) => revoked(s.userSerial) || revoked(s.agentSerial), 'certificate revoked');
    const agents = this.hub.closeAgentsWhere((link) => revoked(link.identity.serial), 'certificate revoked');
    this.h2Clients.revokedSessions(revoked);
    this.textClients.revokedSockets(revoked);
    if (streams + agents > 0) this.log.info({ streams, agents }, 'closed what revoked certificates held');
  }

  private enforceBans(prefix: string): void {
    const admission = this.options.admission;
    if (!admission) return;
    const isBanned = (address: string | undefined): boolean => admission.isBanned(address);
    const closed = this.h2Clients.bannedSessions(isBanned) + this.textClients.bannedSockets(isBanned);
    if (closed > 0) this.log.info({ prefix, connections: closed }, 'closed the connections of a banned source');
  }

  /** For tests: apply store changes now instead of at the next poll. */
  async refreshPolicy(): Promise<void> {
    await this.policy.poll();
  }

  async status(): Promise<RelayStatus> {
    const online = this.hub.onlineTunnels();
    const known = await this.store.listTunnels();
    const streams = this.live.view();
    const perAgent = (name: string): number => streams.filter((s) => s.agent === name).length;
    return {
      relay: {
        pid: process.pid,
        startedAt: this.startedAt.toISOString(),
        listen: this.addresses.map(formatHostPort),
        version: '1',
      },
      agents: this.hub.view(perAgent),
      tunnels: known.map((t) => ({
        name: t.name,
        agent: online.get(t.name) ?? t.agent,
        port: t.port,
        online: online.has(t.name),
        lastSeen: t.lastSeen.toISOString(),
      })),
      streams,
      shaping: this.shaper.snapshot(),
    };
  }

  /** The shaper's buckets for metrics and the dashboard (OpsView). */
  shaping(): ShapingSnapshot[] {
    return this.shaper.opsSnapshot();
  }

  /** Every listener is bound, and shutdown has not begun (readiness, for /readyz). */
  listening(): boolean {
    return this.serving;
  }

  /** Resolves when the store answers a trivial query (the policy revision). */
  async storeReachable(): Promise<void> {
    await this.store.revision();
  }

  async stop(): Promise<void> {
    this.serving = false;
    if (this.bytesTimer) clearInterval(this.bytesTimer);
    for (const server of this.servers) server.close();
    for (const socket of this.frontSockets) socket.destroy();
    this.policy.stop();
    this.live.closeWhere(() => true, 'relay shutting down');
    this.h2Clients.closeAll();
    this.textClients.closeAll();
    this.hub.closeAgentsWhere(() => true, 'relay shutting down');
    this.shaper.close();
    await this.admin?.stop();
    // the last bytes of the streams just closed
    this.tallyBytes();
  }
}

/** The CA's common name, to name it when a peer's certificate comes from another CA. */
function caCommonName(pem: string): string | undefined {
  try {
    return subjectField(new X509Certificate(pem).subject, 'CN');
  } catch {
    return undefined;
  }
}
