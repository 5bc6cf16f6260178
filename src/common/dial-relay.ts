// Dialling the relay: mutual TLS with the identity's key, certificate and CA, ALPN warpstone/1,
// a bounded handshake. Used by the agent and by clients, so both fail the same clear way.
// Owns: the outbound TLS handshake. Must not: speak HTTP/2 (callers do).
import net from 'node:net';
import tls from 'node:tls';
import type { Identity } from '../pki/pem.js';
import { formatHostPort, type HostPort } from './hostport.js';
import { WarpstoneError } from './errors.js';
import { DEFAULTS } from '../wire/defaults.js';
import { ALPN_V1 } from '../wire/protocol.js';

export class RelayUnreachable extends WarpstoneError {
  constructor(message: string) {
    super('WS_RELAY_UNREACHABLE', message);
  }
}

export interface DialOptions {
  /** the local address to connect from (a host with several addresses; tests on 127.0.0.x) */
  localAddress?: string;
}

export function dialRelay(identity: Identity, relay: HostPort, options: DialOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const servername = net.isIP(relay.host) ? undefined : relay.host;
    const socket = tls.connect({
      host: relay.host,
      port: relay.port,
      ...(servername ? { servername } : {}),
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      key: identity.keyPem,
      cert: identity.certPem,
      ca: identity.caPem,
      ALPNProtocols: [ALPN_V1],
    });
    socket.setNoDelay(true);
    const fail = (err: Error): void => {
      socket.destroy();
      reject(new RelayUnreachable(`cannot reach relay ${formatHostPort(relay)}: ${err.message}`));
    };
    socket.setTimeout(DEFAULTS.handshakeTimeoutMs, () => fail(new Error(`no TLS handshake within ${DEFAULTS.handshakeTimeoutMs / 1000} s`)));
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      socket.setTimeout(0);
      socket.off('error', fail);
      if (socket.alpnProtocol !== ALPN_V1) {
        fail(new Error(`it did not agree to ${ALPN_V1}; is it a warpstone relay?`));
        return;
      }
      resolve(socket);
    });
  });
}
