// The one place where a user's request for a tunnel becomes a stream: checks the policy on every
// open (identity not revoked, grant present, tunnel known and online), opens the stream through
// the agent, splices it to the user's side and records it as live. Both client dialects (HTTP/2
// and the VPN-Warp text CONNECT) come through here so they cannot drift apart.
// Owns: per-stream authorisation and the splice. Must not: parse client protocols.
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import type { PeerIdentity } from './authenticate.js';
import type { Policy } from './policy.js';
import type { AgentHub } from './agents.js';
import type { LiveStreams } from './streams.js';
import { splice } from '../common/splice.js';
import { StreamRefused } from '../common/errors.js';
import { formatTarget, type Target } from '../wire/protocol.js';
import { DEFAULTS } from '../wire/defaults.js';

export interface OpenRequest {
  identity: PeerIdentity;
  target: Target;
  source: string;
  via: 'h2' | 'connect';
}

export class Gateway {
  constructor(
    private readonly policy: Policy,
    private readonly hub: AgentHub,
    private readonly live: LiveStreams,
    private readonly log: Logger,
    private readonly idleTimeoutMs: number = DEFAULTS.streamIdleTimeoutMs,
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
    const handle = splice(downstream, upstream, { idleTimeoutMs: this.idleTimeoutMs });
    const entry = this.live.add({
      user: identity.name,
      userSerial: identity.serial,
      agent: link.identity.name,
      agentSerial: link.identity.serial,
      tunnel: target.tunnel,
      source,
      via: request.via,
      openedAt: new Date(),
      handle,
    });
    this.log.info({ stream: entry.id, user: identity.name, tunnel: target.tunnel, source, via: request.via }, 'stream open');
    void handle.done.then((result) => {
      this.log.info(
        {
          stream: entry.id,
          user: identity.name,
          tunnel: target.tunnel,
          bytesIn: result.aToB,
          bytesOut: result.bToA,
          ms: Date.now() - entry.openedAt.getTime(),
          ...(result.error ? { reason: result.error.message } : {}),
        },
        'stream closed',
      );
    });
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
