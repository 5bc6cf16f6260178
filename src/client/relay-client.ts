// A user's side of the relay: one mutual-TLS HTTP/2 connection (ALPN warpstone/1), opened on
// first use and re-opened after a loss, carrying one CONNECT stream per local connection.
// Owns: the client session. Must not: listen (connect.ts does) or retry refused streams.
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { Identity } from '../pki/pem.js';
import type { Logger } from '../common/log.js';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import { StreamRefused, WarpstoneError, errorMessage } from '../common/errors.js';
import { DEFAULTS, h2Settings } from '../wire/defaults.js';
import { ALPN_V1, HEADER_REASON, HEADER_CODE } from '../wire/protocol.js';

export class RelayUnreachable extends WarpstoneError {
  constructor(message: string) {
    super('WS_RELAY_UNREACHABLE', message);
  }
}

export class RelayClient {
  private session: ClientHttp2Session | undefined;
  private connecting: Promise<ClientHttp2Session> | undefined;

  constructor(
    private readonly identity: Identity,
    private readonly relay: HostPort,
    private readonly log: Logger,
  ) {}

  private connect(): Promise<ClientHttp2Session> {
    const { relay, identity } = this;
    return new Promise((resolve, reject) => {
      const servername = net.isIP(relay.host) ? undefined : relay.host;
      const socket = tls.connect({
        host: relay.host,
        port: relay.port,
        ...(servername ? { servername } : {}),
        key: identity.keyPem,
        cert: identity.certPem,
        ca: identity.caPem,
        ALPNProtocols: [ALPN_V1],
      });
      socket.setNoDelay(true);
      socket.setTimeout(DEFAULTS.handshakeTimeoutMs, () => socket.destroy(new Error(`no TLS handshake within ${DEFAULTS.handshakeTimeoutMs / 1000} s`)));
      const fail = (err: Error): void => reject(new RelayUnreachable(`cannot reach relay ${formatHostPort(relay)}: ${err.message}`));
      socket.once('error', fail);
      socket.once('secureConnect', () => {
        socket.setTimeout(0);
        socket.off('error', fail);
        if (socket.alpnProtocol !== ALPN_V1) {
          socket.destroy();
          fail(new Error(`it did not agree to ${ALPN_V1}`));
          return;
        }
        const session = http2.connect(`https://${formatHostPort(relay)}`, {
          createConnection: () => socket,
          settings: h2Settings(),
          maxSessionMemory: 64,
        });
        session.on('error', (err) => this.log.debug({ err: err.message }, 'relay session error'));
        session.once('connect', () => {
          session.setLocalWindowSize(DEFAULTS.connectionWindow);
          resolve(session);
        });
        session.once('close', () => {
          if (this.session === session) this.session = undefined;
          reject(new RelayUnreachable(`relay ${formatHostPort(relay)} closed the connection during setup`));
        });
      });
    });
  }

  async getSession(): Promise<ClientHttp2Session> {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    if (!this.connecting) {
      this.connecting = this.connect()
        .then((session) => {
          this.session = session;
          return session;
        })
        .finally(() => {
          this.connecting = undefined;
        });
    }
    return this.connecting;
  }

  /** Opens a stream to `target` ("tunnel" or "tunnel:port"); rejects with StreamRefused. */
  async open(target: string): Promise<ClientHttp2Stream> {
    const session = await this.getSession();
    const stream = session.request({ ':method': 'CONNECT', ':authority': target }, { endStream: false });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new StreamRefused(504, 'WS_OPEN_TIMEOUT', `relay did not answer within ${DEFAULTS.streamOpenTimeoutMs / 1000} s`));
      }, DEFAULTS.streamOpenTimeoutMs);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        const status = Number(headers[':status']);
        if (status === 200) {
          resolve(stream);
          return;
        }
        stream.destroy();
        reject(new StreamRefused(status, String(headers[HEADER_CODE] ?? 'WS_REFUSED'), String(headers[HEADER_REASON] ?? `relay answered ${status}`)));
      });
      stream.once('error', (err) => {
        clearTimeout(timer);
        reject(new StreamRefused(502, 'WS_STREAM_ERROR', `stream to '${target}' failed: ${errorMessage(err)}`));
      });
      stream.once('close', () => {
        clearTimeout(timer);
        reject(new StreamRefused(502, 'WS_STREAM_CLOSED', `relay closed the stream to '${target}' before answering`));
      });
    });
  }

  close(): void {
    this.session?.close();
  }
}
