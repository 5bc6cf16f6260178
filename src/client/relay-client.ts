// A user's side of the relay: one mutual-TLS HTTP/2 connection (ALPN warpstone/1), opened on
// first use and re-opened after a loss, carrying one CONNECT stream per local connection.
// Owns: the client session. Must not: listen (connect.ts does) or retry refused streams.
import http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import type { Identity } from '../pki/pem.js';
import type { Logger } from '../common/log.js';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import { StreamRefused, errorMessage } from '../common/errors.js';
import { dialRelay, RelayUnreachable } from '../common/dial-relay.js';
import { DEFAULTS, h2Settings } from '../wire/defaults.js';
import { HEADER_REASON, HEADER_CODE } from '../wire/protocol.js';

export class RelayClient {
  private session: ClientHttp2Session | undefined;
  private connecting: Promise<ClientHttp2Session> | undefined;

  constructor(
    private readonly identity: Identity,
    private readonly relay: HostPort,
    private readonly log: Logger,
  ) {}

  private async connect(): Promise<ClientHttp2Session> {
    const socket = await dialRelay(this.identity, this.relay);
    const relay = this.relay;
    return new Promise((resolve, reject) => {
      const session = http2.connect(`https://${formatHostPort(relay)}`, {
        createConnection: () => socket,
        settings: h2Settings(),
        maxSessionMemory: DEFAULTS.maxSessionMemoryMb,
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
