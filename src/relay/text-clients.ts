// VPN-Warp compatible clients (stone `host:port/ssl,http`, openssl s_client, curl as an HTTPS
// proxy): after TLS with no ALPN, the client sends `CONNECT <tunnel>[:<port>] HTTP/1.1` and an
// empty line; the relay answers `HTTP/1.1 200 OK` and relays raw bytes, or a 4xx/5xx status
// line whose reason phrase says why, and closes.
// Owns: the text-mode dialect. Must not: authorise (gateway.ts does).
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../common/log.js';
import type { PeerIdentity } from './authenticate.js';
import type { Gateway } from './gateway.js';
import { ConnectHeadParser } from '../wire/connect-head.js';
import { DEFAULTS } from '../wire/defaults.js';
import { STATUS_TEXT } from '../wire/protocol.js';
import { StreamRefused, errorCode, errorMessage } from '../common/errors.js';

/**
 * The answer to a refused request: the reason is the status line's phrase. No body by default:
 * stone's `/http` mode strips the response head whatever its status and hands everything after
 * it to the local client as if the service had sent it. `body: true` (plain HTTP on the TLS
 * port, read by browsers and curl users) repeats the reason as text.
 */
export function refusalResponse(status: number, reason: string, options: { body?: boolean } = {}): string {
  const phrase = reason.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 300);
  const body = options.body ? `${STATUS_TEXT[status] ?? 'Error'}: ${phrase}\n` : '';
  return (
    `HTTP/1.1 ${status} ${phrase}\r\n` +
    (body ? 'Content-Type: text/plain; charset=utf-8\r\n' : '') +
    'Connection: close\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
    body
  );
}

export class TextClientGateway {
  private readonly sockets = new Map<TLSSocket, PeerIdentity>();

  constructor(
    private readonly gateway: Gateway,
    private readonly log: Logger,
  ) {}

  attach(socket: TLSSocket, identity: PeerIdentity, address: string): void {
    this.sockets.set(socket, identity);
    socket.once('close', () => this.sockets.delete(socket));
    const parser = new ConnectHeadParser(DEFAULTS.connectHeadMaxBytes);
    const timer = setTimeout(() => {
      this.refuse(socket, identity, address, new StreamRefused(408, 'WS_HEAD_TIMEOUT', `no CONNECT request within ${DEFAULTS.connectHeadTimeoutMs / 1000} s`), '');
    }, DEFAULTS.connectHeadTimeoutMs);
    const onData = (chunk: Buffer): void => {
      const result = parser.push(chunk);
      if (result.kind === 'more') return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      if (result.kind === 'bad') {
        this.refuse(socket, identity, address, new StreamRefused(result.status, 'WS_BAD_REQUEST', result.reason), '');
        return;
      }
      if (result.rest.length > 0) socket.unshift(result.rest);
      this.gateway
        .open({ identity, target: result.target, source: address, via: 'connect' }, () => {
          socket.write('HTTP/1.1 200 OK\r\n\r\n');
          return socket;
        })
        .catch((err: unknown) => this.refuse(socket, identity, address, err, result.target.tunnel));
    };
    socket.on('data', onData);
    socket.on('error', (err) => this.log.debug({ user: identity.name, err: err.message }, 'text client socket error'));
    socket.once('end', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
  }

  /** `tunnel`: the name asked for, or '' when the request named none. */
  private refuse(socket: TLSSocket, identity: PeerIdentity, address: string, err: unknown, tunnel: string): void {
    const refused =
      err instanceof StreamRefused ? err : new StreamRefused(502, errorCode(err) ?? 'WS_INTERNAL', `stream failed: ${errorMessage(err)}`);
    const explain = this.gateway.refused(identity, address, tunnel, refused);
    this.log.warn(
      { user: identity.name, source: address, tunnel, code: refused.code, reason: refused.message, ...(explain ? { explain } : {}), via: 'connect' },
      'stream refused',
    );
    if (socket.destroyed) return;
    socket.end(refusalResponse(refused.status, refused.message));
    setTimeout(() => socket.destroy(), DEFAULTS.refusalLingerMs).unref();
  }

  revokedSockets(isRevoked: (serial: string) => boolean): void {
    for (const [socket, identity] of this.sockets) {
      if (isRevoked(identity.serial)) socket.destroy();
    }
  }

  /** Closes the connections of sources banned after they connected. */
  bannedSockets(isBanned: (remoteAddress: string | undefined) => boolean): number {
    let closed = 0;
    for (const socket of this.sockets.keys()) {
      if (isBanned(socket.remoteAddress)) {
        socket.destroy();
        closed += 1;
      }
    }
    return closed;
  }

  closeAll(): void {
    for (const socket of this.sockets.keys()) socket.destroy();
  }
}
