// Clients speaking warpstone/1 (HTTP/2): the relay is the HTTP/2 server on the client's TLS
// connection; each `CONNECT <tunnel>[:<port>]` request becomes one stream to the tunnel.
// Owns: the client-side HTTP/2 session. Must not: authorise (gateway.ts does).
import http2 from 'node:http2';
import type { ServerHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../common/log.js';
import type { PeerIdentity } from './authenticate.js';
import type { Gateway } from './gateway.js';
import { DEFAULTS, h2Settings } from '../wire/defaults.js';
import { HEADER_REASON, HEADER_CODE, parseTarget, headerSafe } from '../wire/protocol.js';
import { StreamRefused, errorCode, errorMessage } from '../common/errors.js';

const PEER = Symbol('warpstone.peer');

interface PeerInfo {
  identity: PeerIdentity | undefined;
  address: string;
  /** set when the connection itself was refused: every stream gets this answer */
  refusal?: StreamRefused;
}

type TaggedSocket = TLSSocket & { [PEER]?: PeerInfo };

export class H2ClientGateway {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(
    private readonly gateway: Gateway,
    private readonly log: Logger,
  ) {
    this.server = http2.createServer({ settings: h2Settings(), maxSessionMemory: DEFAULTS.maxSessionMemoryMb });
    this.server.on('session', (session) => {
      const peer = (session.socket as TaggedSocket | undefined)?.[PEER];
      this.sessions.add(session);
      const pings = setInterval(() => this.probe(session, peer), DEFAULTS.pingIntervalMs);
      pings.unref();
      session.once('close', () => {
        clearInterval(pings);
        this.sessions.delete(session);
      });
      session.on('error', (err) =>
        this.log.warn({ user: peer?.identity?.name, source: peer?.address, code: 'WS_PROTOCOL', err: err.message }, 'client session error'),
      );
      session.once('connect', () => session.setLocalWindowSize(DEFAULTS.connectionWindow));
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  /**
   * Node answers an HTTP/2 protocol error (an oversized or malformed frame) with GOAWAY, then
   * neither closes the connection nor emits anything, although RFC 9113 section 5.4.1 says the
   * connection MUST be closed. Such a session never answers a ping again, and neither does a
   * client whose host vanished: both are closed here, with a log line that says so.
   */
  private probe(session: http2.ServerHttp2Session, peer: PeerInfo | undefined): void {
    if (session.destroyed || session.closed) return;
    const timer = setTimeout(() => {
      this.log.warn(
        {
          user: peer?.identity?.name,
          source: peer?.address,
          code: 'WS_PROTOCOL',
          reason: `HTTP/2 session did not answer a ping within ${DEFAULTS.pingTimeoutMs / 1000} s (it broke the protocol, or its host is gone)`,
        },
        'client connection closed',
      );
      session.destroy();
    }, DEFAULTS.pingTimeoutMs);
    timer.unref();
    try {
      if (!session.ping(() => clearTimeout(timer))) clearTimeout(timer);
    } catch {
      clearTimeout(timer);
    }
  }

  attach(socket: TLSSocket, identity: PeerIdentity, address: string): void {
    (socket as TaggedSocket)[PEER] = { identity, address };
    // Half-open is for text clients; an HTTP/2 peer that sends FIN is gone.
    socket.once('end', () => socket.destroy());
    this.server.emit('connection', socket);
  }

  /** A refused connection: answers whatever it asks with the refusal, then closes. */
  attachRefused(socket: TLSSocket, refusal: StreamRefused): void {
    (socket as TaggedSocket)[PEER] = { identity: undefined, address: '', refusal };
    this.server.emit('connection', socket);
    setTimeout(() => socket.destroy(), DEFAULTS.refusalLingerMs).unref();
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const peer = (stream.session?.socket as TaggedSocket | undefined)?.[PEER];
    stream.on('error', () => undefined);
    if (peer?.refusal) {
      const session = stream.session;
      stream.respond({ ':status': peer.refusal.status, [HEADER_REASON]: headerSafe(peer.refusal.message), [HEADER_CODE]: peer.refusal.code }, { endStream: true });
      stream.once('close', () => session?.close());
      return;
    }
    if (!peer?.identity) {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const identity = peer.identity;
    const authority = String(headers[':authority'] ?? '').slice(0, 200);
    if (headers[':method'] !== 'CONNECT') {
      this.refuse(stream, peer, new StreamRefused(400, 'WS_BAD_METHOD', `expected CONNECT, got ${String(headers[':method'])}`), authority);
      return;
    }
    const target = parseTarget(authority);
    if (typeof target === 'string') {
      this.refuse(stream, peer, new StreamRefused(400, 'WS_BAD_TARGET', target), authority);
      return;
    }
    this.gateway
      .open({ identity, target, source: peer.address, via: 'h2' }, () => {
        stream.respond({ ':status': 200 });
        return stream;
      })
      .catch((err: unknown) => this.refuse(stream, peer, err, target.tunnel));
  }

  /** `tunnel`: the name asked for, or '' when the request named none. */
  private refuse(stream: ServerHttp2Stream, peer: PeerInfo, err: unknown, tunnel: string): void {
    const refused =
      err instanceof StreamRefused ? err : new StreamRefused(502, errorCode(err) ?? 'WS_INTERNAL', `stream failed: ${errorMessage(err)}`);
    const explain = this.gateway.refused(peer.identity, peer.address, tunnel, refused);
    this.log.warn(
      { user: peer.identity?.name, source: peer.address, tunnel, code: refused.code, reason: refused.message, ...(explain ? { explain } : {}), via: 'h2' },
      'stream refused',
    );
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
      return;
    }
    stream.respond(
      { ':status': refused.status, [HEADER_REASON]: headerSafe(refused.message), [HEADER_CODE]: refused.code },
      { endStream: true },
    );
  }

  revokedSessions(isRevoked: (serial: string) => boolean): void {
    for (const session of this.sessions) {
      const peer = (session.socket as TaggedSocket | undefined)?.[PEER];
      if (peer?.identity && isRevoked(peer.identity.serial)) {
        this.log.info({ user: peer.identity.name }, 'certificate revoked; closing its connection');
        session.destroy();
      }
    }
  }

  /** Closes the sessions of sources banned after they connected (a ban must not spare them). */
  bannedSessions(isBanned: (remoteAddress: string | undefined) => boolean): number {
    let closed = 0;
    for (const session of this.sessions) {
      if (isBanned(session.socket?.remoteAddress)) {
        session.destroy();
        closed += 1;
      }
    }
    return closed;
  }

  closeAll(): void {
    for (const session of this.sessions) session.close();
  }
}
