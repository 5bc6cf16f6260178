// The one place where a user's request for a tunnel becomes a stream: checks the policy on every
// open (identity not revoked, grant present, tunnel known and online), opens the stream through
// the agent, splices it to the user's side and records it as live. Both client dialects (HTTP/2
// and the VPN-Warp text CONNECT) come through here so they cannot drift apart, including for
// what a refusal means: `refused` turns one into events (stream-refused, and a failure that
// counts towards a ban when the peer is at fault) and an explanation for the admin's log.
// Owns: per-stream authorisation, the splice, the stream events. Must not: parse client protocols.
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import type { PeerIdentity } from './authenticate.js';
import type { Policy } from './policy.js';
import type { AgentHub } from './agents.js';
import type { LiveStreams } from './streams.js';
import type { FailureReason, RelayEvents } from '../ops/events.js';
import type { ShapingRegistry } from '../guard/throttle.js';
import { splice } from '../common/splice.js';
import { StreamRefused } from '../common/errors.js';
import { formatTarget, type Target } from '../wire/protocol.js';
import { DEFAULTS } from '../wire/defaults.js';
import { explainUnknownTunnel, nameOddity, quoteName } from '../guard/explain.js';

export interface OpenRequest {
  identity: PeerIdentity;
  target: Target;
  source: string;
  via: 'h2' | 'connect';
}

/**
 * The failure word for a refusal code, and whether the peer is at fault (so it counts towards
 * a ban): asking for tunnels that do not exist or are not granted, or speaking nonsense, does;
 * a tunnel whose agent is away or whose service is down does not.
 */
export function classifyRefusal(code: string): { reason: FailureReason; counts: boolean } {
  switch (code) {
    case 'WS_NO_SUCH_TUNNEL':
    case 'WS_NO_SUCH_PORT':
      return { reason: 'unknown-tunnel', counts: true };
    case 'WS_NOT_GRANTED':
    case 'WS_NOT_A_USER':
      return { reason: 'not-granted', counts: true };
    case 'WS_REVOKED':
      return { reason: 'tls-revoked', counts: true };
    case 'WS_BAD_METHOD':
    case 'WS_BAD_TARGET':
    case 'WS_BAD_REQUEST':
    case 'WS_HEAD_TIMEOUT':
      return { reason: 'bad-request', counts: true };
    case 'WS_TUNNEL_OFFLINE':
    case 'WS_AGENT_GONE':
      return { reason: 'tunnel-offline', counts: false };
    default:
      return { reason: 'target-refused', counts: false };
  }
}

export class Gateway {
  constructor(
    private readonly policy: Policy,
    private readonly hub: AgentHub,
    private readonly live: LiveStreams,
    private readonly log: Logger,
    private readonly events: RelayEvents,
    private readonly idleTimeoutMs: number = DEFAULTS.streamIdleTimeoutMs,
    /** bandwidth limits; streams under none are spliced without throttles (no cost) */
    private readonly shaping?: ShapingRegistry,
  ) {}

  /**
   * Authorises and opens. `accept` is called once the far end is ready: it must send the
   * success answer to the client and return the client-side duplex to splice.
   */
  async open(request: OpenRequest, accept: () => Duplex): Promise<void> {
    const { identity, target, source } = request;
    const link = this.authorize(request);
    const upstream = await this.hub.open(link, target, identity.name, source);
    const downstream = accept();
    // a = the user's side, b = the agent's: aToB is upload (user -> service), bToA download.
    const throttles = this.shaping?.forStream(target.tunnel, identity.name);
    const handle = splice(downstream, upstream, { idleTimeoutMs: this.idleTimeoutMs, throttleAToB: throttles?.up, throttleBToA: throttles?.down });
    const openedAt = new Date();
    const entry = this.live.add({
      user: identity.name,
      userSerial: identity.serial,
      agent: link.identity.name,
      agentSerial: link.identity.serial,
      tunnel: target.tunnel,
      source,
      via: request.via,
      openedAt,
      handle,
    });
    const port = target.port ?? link.tunnels.find((t) => t.name === target.tunnel)?.port;
    const agent = link.identity.name;
    this.events.emit('stream-open', {
      time: openedAt,
      id: entry.id,
      identity: identity.name,
      source,
      tunnel: target.tunnel,
      agent,
      target: formatTarget({ tunnel: target.tunnel, port }),
    });
    this.log.info({ stream: entry.id, user: identity.name, tunnel: target.tunnel, source, via: request.via }, 'stream open');
    void handle.done.then((result) => {
      const durationMs = Date.now() - openedAt.getTime();
      const reason = result.error ? result.error.message : 'closed';
      this.events.emit('stream-close', {
        time: new Date(),
        id: entry.id,
        identity: identity.name,
        source,
        tunnel: target.tunnel,
        agent,
        bytesIn: result.aToB,
        bytesOut: result.bToA,
        durationMs,
        reason,
      });
      this.log.info(
        {
          stream: entry.id,
          user: identity.name,
          tunnel: target.tunnel,
          bytesIn: result.aToB,
          bytesOut: result.bToA,
          ms: durationMs,
          ...(result.error ? { reason } : {}),
        },
        'stream closed',
      );
    });
  }

  /**
   * A stream was refused (by policy, by the far end, or because the request was malformed):
   * emits stream-refused and, when the peer is at fault, a failure. `tunnel` is the name asked
   * for, '' when the request named none; stream failures always carry it, which is how
   * subscribers tell them from handshake failures. Returns an explanation for the admin's log
   * when there is more to say than the refusal itself.
   */
  refused(identity: PeerIdentity | undefined, source: string, tunnel: string, refusal: StreamRefused): string | undefined {
    const { reason, counts } = classifyRefusal(refusal.code);
    const time = new Date();
    const name = identity?.name ?? '';
    this.events.emit('stream-refused', { time, identity: name, source, tunnel, status: refusal.status, reason, message: refusal.message });
    if (counts) {
      this.events.emit('failure', { time, source, reason, ...(identity ? { identity: identity.name } : {}), tunnel, detail: refusal.message });
    }
    if (refusal.code === 'WS_NO_SUCH_TUNNEL') return explainUnknownTunnel(tunnel, this.hub.knownTunnels());
    if (refusal.code === 'WS_NOT_GRANTED' && identity) {
      const grants = this.policy.grantsOf(identity.name);
      const exists = this.hub.isKnown(tunnel) ? `tunnel ${quoteName(tunnel)} exists` : explainUnknownTunnel(tunnel, this.hub.knownTunnels());
      const oddity = nameOddity(identity.name);
      return `${exists}; ${quoteName(identity.name)} is granted ${grants.length > 0 ? grants.map(quoteName).join(', ') : 'no tunnel at all'}${oddity ? `; ${oddity}` : ''}`;
    }
    return nameOddity(tunnel);
  }

  private authorize(request: OpenRequest): ReturnType<AgentHub['lookup']> & object {
    const { identity, target } = request;
    if (identity.role !== 'user') {
      throw new StreamRefused(403, 'WS_NOT_A_USER', `'${identity.name}' holds an ${identity.role} certificate; only users open tunnels`);
    }
    if (this.policy.isRevoked(identity.serial)) {
      throw new StreamRefused(403, 'WS_REVOKED', `certificate of '${identity.name}' is revoked`);
    }
    if (!this.policy.isGranted(identity.name, target.tunnel)) {
      throw new StreamRefused(403, 'WS_NOT_GRANTED', `user '${identity.name}' is not granted tunnel '${target.tunnel}'`);
    }
    const link = this.hub.lookup(target.tunnel);
    if (!link) {
      if (this.hub.isKnown(target.tunnel)) {
        throw new StreamRefused(503, 'WS_TUNNEL_OFFLINE', `tunnel '${target.tunnel}' is offline: its agent is not connected`);
      }
      throw new StreamRefused(404, 'WS_NO_SUCH_TUNNEL', `no tunnel named '${formatTarget({ tunnel: target.tunnel, port: undefined })}'`);
    }
    if (this.policy.isRevoked(link.identity.serial)) {
      throw new StreamRefused(503, 'WS_TUNNEL_OFFLINE', `tunnel '${target.tunnel}' is offline: its agent's certificate is revoked`);
    }
    return link;
  }
}
