// The relay server: one TLS port (default 7443) for agents and clients. A plain TCP front door
// takes each connection first (bounded time for the first byte; plain HTTP gets a readable 400
// instead of a TLS alert), then TLS with mutual certificates. After the handshake the identity
// is checked against the store, and the connection goes by role and ALPN: agent -> AgentHub;
// user with ALPN warpstone/1 -> HTTP/2 gateway; user without ALPN -> VPN-Warp text CONNECT.
// Owns: listeners, connection dispatch, revocation enforcement, shutdown. Must not: parse
// client protocols or open streams itself.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Logger } from '../common/log.js';
import type { Store } from '../store/store.js';
import { homePaths } from '../common/home.js';
import { formatAddress, formatHostPort, type HostPort } from '../common/hostport.js';
import { StateError, StreamRefused, errorMessage } from '../common/errors.js';
import { splitPem } from '../pki/pem.js';
import { DEFAULTS } from '../wire/defaults.js';
import { ALPN_V1 } from '../wire/protocol.js';
import { Policy } from './policy.js';
import { authenticate } from './authenticate.js';
import { AgentHub, refuseAgent } from './agents.js';
import { LiveStreams } from './streams.js';
import { Gateway } from './gateway.js';
import { H2ClientGateway } from './h2-clients.js';
import { TextClientGateway, refusalResponse } from './text-clients.js';
import { AdminSocket, type RelayStatus } from './admin.js';

export interface RelayOptions {
  home?: string;
  listen: HostPort[];
  store: Store;
  log: Logger;
  /** Serve the admin UNIX socket (status). Default true. */
  adminSocket?: boolean;
  idleTimeoutMs?: number;
}

const HTTP_METHODS = /^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT) /;

export class Relay {
  private readonly log: Logger;
  private readonly store: Store;
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
  private readonly startedAt = new Date();
  readonly addresses: HostPort[] = [];

  constructor(private readonly options: RelayOptions) {
    this.log = options.log;
    this.store = options.store;
    this.policy = new Policy(this.store, this.log.child({ part: 'policy' }));
    this.hub = new AgentHub(this.store, this.log.child({ part: 'agents' }));
    this.gateway = new Gateway(this.policy, this.hub, this.live, this.log.child({ part: 'streams' }), options.idleTimeoutMs);
    this.h2Clients = new H2ClientGateway(this.gateway, this.log.child({ part: 'clients' }));
    this.textClients = new TextClientGateway(this.gateway, this.log.child({ part: 'clients' }));
    this.policy.onChange(() => this.enforceRevocations());
  }

  private loadTlsMaterial(): tls.SecureContextOptions {
    const paths = homePaths(this.options.home);
    try {
      const relay = readFileSync(paths.relayIdentity, 'utf8');
      const blocks = splitPem(relay);
      const key = blocks.find((b) => b.label.endsWith('PRIVATE KEY'))?.text;
      const cert = blocks.find((b) => b.label === 'CERTIFICATE')?.text;
      if (!key || !cert) throw new Error('relay.pem lacks a key or a certificate');
      return { key, cert, ca: readFileSync(paths.caCert, 'utf8') };
    } catch (err) {
      throw new StateError(`cannot load the relay's certificate from ${paths.dir} (${errorMessage(err)}); run 'warpstone init' first`, 'WS_NO_RELAY_CERT');
    }
  }

  async start(): Promise<void> {
    const material = this.loadTlsMaterial();
    await this.policy.start();
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
      socket.destroy();
    });
    if (this.options.adminSocket !== false) {
      // First, so a second relay on the same home stops before it binds anything.
      this.admin = new AdminSocket(homePaths(this.options.home).adminSocket, () => this.status(), this.log);
      await this.admin.start();
    }
    for (const hp of this.options.listen) await this.listen(hp);
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
    this.frontSockets.add(socket);
    socket.once('close', () => this.frontSockets.delete(socket));
    socket.setNoDelay(true);
    socket.setTimeout(DEFAULTS.handshakeTimeoutMs, () => {
      this.log.warn({ source: address, code: 'WS_HANDSHAKE', reason: `no TLS handshake within ${DEFAULTS.handshakeTimeoutMs / 1000} s` }, 'connection refused');
      socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.once('data', (first: Buffer) => {
      socket.pause();
      const head = first.subarray(0, 8).toString('latin1');
      if (HTTP_METHODS.test(head)) {
        this.log.warn({ source: address, code: 'WS_PLAIN_HTTP', reason: 'plain HTTP on the TLS port' }, 'connection refused');
        socket.end(refusalResponse(400, 'this port speaks TLS with client certificates; plain HTTP is refused', { body: true }));
        return;
      }
      if (first[0] !== 0x16) {
        this.log.warn({ source: address, code: 'WS_NOT_TLS', reason: `first byte 0x${(first[0] ?? 0).toString(16)} is not a TLS handshake` }, 'connection refused');
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
      result = await authenticate(socket, this.store, this.policy);
    } catch (err) {
      this.log.error({ source: address, err: errorMessage(err) }, 'authentication failed with an internal error');
      socket.destroy();
      return;
    }
    if (!result.ok) {
      this.log.warn({ source: address, name: result.name, code: result.code, reason: result.reason }, 'connection refused');
      this.explainRefusal(socket, result.code, result.reason);
      return;
    }
    const { identity } = result;
    const alpn = socket.alpnProtocol;
    if (identity.role === 'agent') {
      if (alpn !== ALPN_V1) {
        this.log.warn({ source: address, agent: identity.name, code: 'WS_AGENT_ALPN', reason: `agent did not negotiate ${ALPN_V1}` }, 'connection refused');
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
    };
  }

  async stop(): Promise<void> {
    for (const server of this.servers) server.close();
    for (const socket of this.frontSockets) socket.destroy();
    this.policy.stop();
    this.live.closeWhere(() => true, 'relay shutting down');
    this.h2Clients.closeAll();
    this.textClients.closeAll();
    this.hub.closeAgentsWhere(() => true, 'relay shutting down');
    await this.admin?.stop();
  }
}
