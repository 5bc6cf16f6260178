// Agents connected to the relay and the tunnels they serve. The relay is the HTTP/2 *client* on
// an agent's TLS connection (the agent dialled out, the relay asks it to open streams). On
// attach it fetches the agent's hello (its tunnel list), settles name conflicts, and tells the
// agent which tunnels were registered. Pings detect a dead link. Emits agent-connected,
// agent-lost and address-changed (the agent's host differs from its previous sighting's), and
// target-health for each target whose state changed (a HealthPoller per link, PROTOCOL §3.5).
// Owns: the tunnel -> agent map and stream opening towards agents. Must not: check user grants.
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../common/log.js';
import type { Store } from '../store/store.js';
import type { PeerIdentity } from './authenticate.js';
import { DEFAULTS, h2Settings } from '../wire/defaults.js';
import {
  PATH_HELLO,
  PATH_REGISTRATION,
  HEADER_USER,
  HEADER_SOURCE,
  HEADER_REASON,
  HEADER_CODE,
  parseHello,
  formatTarget,
  type Target,
  type TunnelInfo,
  type Registration,
} from '../wire/protocol.js';
import { StreamRefused, ProtocolError, errorMessage } from '../common/errors.js';
import type { RelayEvents } from '../ops/events.js';
import { hostOfSource } from '../guard/prefix.js';
import { HealthPoller, HEALTH_POLL_MS, type TargetHealthChange } from './health-poller.js';

export interface AgentLinkView {
  name: string;
  address: string;
  connectedSince: string;
  tunnels: string[];
  streams: number;
}

export class AgentLink {
  readonly connectedAt = new Date();
  tunnels: TunnelInfo[] = [];
  private pingTimer: NodeJS.Timeout | undefined;
  closed = false;
  /** why the link closed: the first reason given wins */
  closeReason: string | undefined;
  /** registered and announced (agent-connected emitted); its loss is announced too */
  online = false;
  sightingId: number | undefined;
  /** polls the agent's target health while the link lives */
  health: HealthPoller | undefined;

  constructor(
    readonly identity: PeerIdentity,
    readonly address: string,
    readonly session: ClientHttp2Session,
    readonly socket: TLSSocket,
  ) {}

  startPings(log: Logger): void {
    this.pingTimer = setInterval(() => {
      const timeout = setTimeout(() => {
        log.warn({ agent: this.identity.name, address: this.address }, 'agent did not answer a ping; dropping the link');
        this.close('ping timeout');
      }, DEFAULTS.pingTimeoutMs);
      const sent = this.session.ping((err) => {
        clearTimeout(timeout);
        if (err && !this.closed) this.close(`ping failed: ${err.message}`);
      });
      if (!sent) clearTimeout(timeout);
    }, DEFAULTS.pingIntervalMs);
    this.pingTimer.unref();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.health?.stop();
    try {
      this.session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0, Buffer.from(reason.slice(0, 200)));
    } catch {
      // session already gone
    }
    this.session.destroy();
    this.socket.destroy();
  }

  request(headers: http2.OutgoingHttpHeaders): ClientHttp2Stream {
    return this.session.request(headers, { endStream: false });
  }
}

function readBody(stream: ClientHttp2Stream, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stream.destroy();
        reject(new ProtocolError(`agent answer longer than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}

function awaitResponse(stream: ClientHttp2Stream, timeoutMs: number): Promise<http2.IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new StreamRefused(504, 'WS_AGENT_TIMEOUT', `agent did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    stream.once('response', (headers) => {
      clearTimeout(timer);
      resolve(headers);
    });
    stream.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    stream.once('close', () => {
      clearTimeout(timer);
      reject(new StreamRefused(502, 'WS_AGENT_CLOSED', 'agent closed the stream before answering'));
    });
  });
}

/** Refuses an agent link with a reason it can log: GOAWAY debug data, then close. */
export function refuseAgent(socket: TLSSocket, reason: string): void {
  const session = http2.connect('http://agent.invalid', { createConnection: () => socket, settings: h2Settings() });
  session.on('error', () => undefined);
  const timer = setTimeout(() => session.destroy(), DEFAULTS.refusalLingerMs);
  timer.unref();
  session.once('connect', () => {
    session.goaway(http2.constants.NGHTTP2_REFUSED_STREAM, 0, Buffer.from(reason.slice(0, 300)));
    setTimeout(() => session.destroy(), 200).unref();
  });
}

export class AgentHub {
  private readonly byTunnel = new Map<string, AgentLink>();
  private readonly byAgent = new Map<string, AgentLink>();
  /** Every tunnel name ever registered (from the store at start, then live): offline vs unknown. */
  private readonly known = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly events: RelayEvents,
  ) {}

  /** Takes over an authenticated agent connection. Resolves once it is registered (or refused). */
  async attach(socket: TLSSocket, identity: PeerIdentity, address: string): Promise<AgentLink | undefined> {
    const session = http2.connect('http://agent.invalid', {
      createConnection: () => socket,
      settings: h2Settings(),
      maxSessionMemory: DEFAULTS.maxSessionMemoryMb,
    });
    session.on('error', (err) => this.log.debug({ agent: identity.name, err: err.message }, 'agent session error'));
    session.once('connect', () => session.setLocalWindowSize(DEFAULTS.connectionWindow));
    const link = new AgentLink(identity, address, session, socket);
    session.once('close', () => this.detach(link, 'connection closed'));
    // The TLS server allows half-open sockets (VPN-Warp text clients half-close and still read
    // the reply), but an agent link has no use for one: the agent's FIN (it stopped, or its
    // process died and the kernel closed the socket) ends the link now, not at the next ping.
    socket.once('end', () => this.detach(link, 'agent closed the connection'));
    try {
      const helloStream = link.request({ ':method': 'GET', ':path': PATH_HELLO });
      helloStream.end();
      const headers = await awaitResponse(helloStream, DEFAULTS.streamOpenTimeoutMs);
      if (Number(headers[':status']) !== 200) throw new ProtocolError(`agent answered hello with status ${String(headers[':status'])}`);
      const hello = parseHello(await readBody(helloStream, DEFAULTS.controlBodyMaxBytes));
      if (typeof hello === 'string') throw new ProtocolError(hello);
      if (hello.agent !== identity.name) {
        throw new ProtocolError(`agent calls itself '${hello.agent}' but its certificate says '${identity.name}'`);
      }
      // read before this link's own sighting is written: where the agent was seen last
      const previous = await this.store.lastSighting(identity.name).catch(() => undefined);
      const registration = this.register(link, hello.tunnels);
      await this.sendRegistration(link, registration);
      if (registration.accepted.length === 0 && hello.tunnels.length > 0) {
        link.close('no tunnel could be registered');
        return undefined;
      }
      if (link.closed) return undefined;
      link.startPings(this.log);
      this.announce(link, previous?.address);
      const sightingId = await this.store.recordAgentConnected(identity.name, address).catch(() => undefined);
      if (link.closed && sightingId !== undefined) {
        // lost while the sighting was being written: end it now
        void this.store.recordAgentDisconnected(sightingId, link.closeReason).catch(() => undefined);
      } else {
        link.sightingId = sightingId;
      }
      for (const t of link.tunnels) await this.store.recordTunnel(t.name, identity.name, t.port).catch(() => undefined);
      await this.startHealth(link);
      this.log.info({ agent: identity.name, address, tunnels: link.tunnels.map((t) => t.name) }, 'agent online');
      return link;
    } catch (err) {
      this.log.warn({ agent: identity.name, address, err: errorMessage(err) }, 'agent refused during registration');
      link.close(errorMessage(err));
      return undefined;
    }
  }

  /** agent-connected, and address-changed when the host differs from the previous sighting's. */
  private announce(link: AgentLink, previousAddress: string | undefined): void {
    link.online = true;
    const time = new Date();
    const agent = link.identity.name;
    this.events.emit('agent-connected', { time, agent, address: link.address, ...(previousAddress ? { previousAddress } : {}) });
    if (previousAddress === undefined) return;
    const from = hostOfSource(previousAddress);
    const to = hostOfSource(link.address);
    if (from !== to) {
      this.events.emit('address-changed', { time, agent, from, to });
      this.log.info({ agent, from, to }, 'agent address changed');
    }
  }

  /** Polls the agent's target health; the last states in the store make a reconnect quiet. */
  private async startHealth(link: AgentLink): Promise<void> {
    const agent = link.identity.name;
    const known = await this.store.listTargetHealth().catch(() => []);
    const initial = new Map(known.filter((h) => h.agent === agent).map((h) => [h.tunnel, h.state] as const));
    if (link.closed) return;
    // An agent reports only on the tunnels it registered: anything else would let it write health
    // rows, metrics and alerts for names it does not serve (and grow them without bound).
    const registered = new Set(link.tunnels.map((t) => t.name));
    const onChange = (change: TargetHealthChange): void => {
      if (registered.has(change.tunnel)) this.targetHealthChanged(change);
      else this.log.warn({ agent, tunnel: change.tunnel }, 'health report for a tunnel this agent did not register; ignored');
    };
    link.health = new HealthPoller(link.session, agent, HEALTH_POLL_MS, onChange, { log: this.log, initial });
  }

  private targetHealthChanged(c: TargetHealthChange): void {
    this.events.emit('target-health', { time: c.since, agent: c.agent, tunnel: c.tunnel, state: c.state, detail: c.detail });
    const fields = { agent: c.agent, tunnel: c.tunnel, from: c.previous, to: c.state, detail: c.detail };
    if (c.state === 'down') this.log.warn(fields, 'target down');
    else this.log.info(fields, 'target up');
    void this.store
      .putTargetHealth({ agent: c.agent, tunnel: c.tunnel, state: c.state, detail: c.detail, since: c.since, checkedAt: c.checkedAt })
      .catch((err: unknown) => this.log.error({ agent: c.agent, tunnel: c.tunnel, err: errorMessage(err) }, 'cannot record target health'));
  }

  private register(link: AgentLink, tunnels: TunnelInfo[]): Registration {
    const name = link.identity.name;
    const previous = this.byAgent.get(name);
    if (previous && previous !== link) {
      // The same identity reconnecting: the newest session wins, the stale one goes.
      this.log.info({ agent: name, old: previous.address, new: link.address }, 'agent reconnected; replacing the stale session');
      previous.close('replaced by a newer session of the same agent');
      this.detach(previous, 'replaced');
    }
    const registration: Registration = { accepted: [], refused: [] };
    for (const tunnel of tunnels) {
      const owner = this.byTunnel.get(tunnel.name);
      if (owner && owner !== link && owner.identity.name !== name) {
        const reason = `tunnel '${tunnel.name}' is already served by agent '${owner.identity.name}' (connected from ${owner.address} since ${owner.connectedAt.toISOString()})`;
        registration.refused.push({ name: tunnel.name, reason });
        this.log.warn({ agent: name, address: link.address, tunnel: tunnel.name, owner: owner.identity.name }, 'tunnel name conflict; refused');
        continue;
      }
      this.byTunnel.set(tunnel.name, link);
      this.known.add(tunnel.name);
      link.tunnels.push(tunnel);
      registration.accepted.push(tunnel.name);
    }
    this.byAgent.set(name, link);
    return registration;
  }

  private async sendRegistration(link: AgentLink, registration: Registration): Promise<void> {
    const stream = link.request({ ':method': 'PUT', ':path': PATH_REGISTRATION, 'content-type': 'application/json' });
    stream.end(JSON.stringify(registration));
    await awaitResponse(stream, DEFAULTS.streamOpenTimeoutMs);
    stream.resume();
  }

  private detach(link: AgentLink, reason: string): void {
    if (this.byAgent.get(link.identity.name) === link) this.byAgent.delete(link.identity.name);
    let removed = 0;
    for (const tunnel of link.tunnels) {
      if (this.byTunnel.get(tunnel.name) === link) {
        this.byTunnel.delete(tunnel.name);
        removed += 1;
      }
    }
    if (!link.closed) link.close(reason);
    const why = link.closeReason ?? reason;
    if (link.sightingId !== undefined) {
      const id = link.sightingId;
      link.sightingId = undefined;
      void this.store.recordAgentDisconnected(id, why).catch(() => undefined);
    }
    if (link.online) {
      link.online = false;
      this.events.emit('agent-lost', { time: new Date(), agent: link.identity.name, address: link.address, reason: why });
      this.log.info({ agent: link.identity.name, address: link.address, reason: why, tunnelsOffline: removed }, 'agent offline');
    }
  }

  rememberTunnel(name: string): void {
    this.known.add(name);
  }

  isKnown(tunnel: string): boolean {
    return this.known.has(tunnel);
  }

  /** Every tunnel name ever registered: for explanations in the admin's log, never for peers. */
  knownTunnels(): Iterable<string> {
    return this.known;
  }

  lookup(tunnel: string): AgentLink | undefined {
    return this.byTunnel.get(tunnel);
  }

  /** Opens a stream to the tunnel's target through its agent; rejects with StreamRefused. */
  async open(link: AgentLink, target: Target, user: string, source: string): Promise<ClientHttp2Stream> {
    const tunnel = link.tunnels.find((t) => t.name === target.tunnel);
    if (target.port !== undefined && tunnel && tunnel.port !== target.port) {
      throw new StreamRefused(404, 'WS_NO_SUCH_PORT', `tunnel '${target.tunnel}' has no port ${target.port}`);
    }
    let stream: ClientHttp2Stream;
    try {
      stream = link.request({
        ':method': 'CONNECT',
        ':authority': formatTarget({ tunnel: target.tunnel, port: undefined }),
        [HEADER_USER]: user,
        [HEADER_SOURCE]: source,
      });
    } catch (err) {
      throw new StreamRefused(503, 'WS_AGENT_GONE', `agent of tunnel '${target.tunnel}' is going away: ${errorMessage(err)}`);
    }
    let headers: http2.IncomingHttpHeaders;
    try {
      headers = await awaitResponse(stream, DEFAULTS.streamOpenTimeoutMs);
    } catch (err) {
      stream.destroy();
      if (err instanceof StreamRefused) throw err;
      throw new StreamRefused(502, 'WS_AGENT_ERROR', `agent of tunnel '${target.tunnel}' failed to open the stream: ${errorMessage(err)}`);
    }
    const status = Number(headers[':status']);
    if (status !== 200) {
      stream.destroy();
      const reason = String(headers[HEADER_REASON] ?? `agent answered ${status}`);
      throw new StreamRefused(status, String(headers[HEADER_CODE] ?? 'WS_TARGET'), reason);
    }
    return stream;
  }

  closeAgentsWhere(predicate: (link: AgentLink) => boolean, reason: string): number {
    let count = 0;
    for (const link of [...this.byAgent.values()]) {
      if (predicate(link)) {
        link.close(reason);
        this.detach(link, reason);
        count += 1;
      }
    }
    return count;
  }

  view(streamsPerAgent: (name: string) => number): AgentLinkView[] {
    return [...this.byAgent.values()].map((link) => ({
      name: link.identity.name,
      address: link.address,
      connectedSince: link.connectedAt.toISOString(),
      tunnels: link.tunnels.map((t) => t.name),
      streams: streamsPerAgent(link.identity.name),
    }));
  }

  onlineTunnels(): Map<string, string> {
    const map = new Map<string, string>();
    for (const [tunnel, link] of this.byTunnel) map.set(tunnel, link.identity.name);
    return map;
  }
}
