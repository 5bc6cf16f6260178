// Who is at the other end of one accepted database connection, per listener kind: the IDENT
// answer of the client's host (tcp), the CN of a verified client certificate (tls), the kernel's
// peer uid (unix), the owner a per-user socket was made for (per-user), or the warpstone user
// a relay stream carries (tunnel). Every failure is an identity without a name and with a detail
// saying why; refusing is the session's job (decision 'no-identity').
// Owns: turning a connection into a ClientIdentity. Must not: decide, refuse or close anything.
import type net from 'node:net';
import type tls from 'node:tls';
import { queryIdent, unmapAddress, type IdentResult } from '../identity/ident.js';
import { peerOf } from '../identity/peercred.js';
import { errorMessage } from '../common/errors.js';
import type { ClientIdentity } from './types.js';

/** Asks the identd of the client's host (RFC 1413) who owns the client's end of `socket`. */
export async function identIdentity(socket: net.Socket, options: { port: number; timeoutMs: number }): Promise<ClientIdentity> {
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  if (!remoteAddress || !remotePort || !localAddress || !localPort) {
    return { name: undefined, source: 'ident', detail: 'ident: the connection closed before its addresses could be read' };
  }
  const host = unmapAddress(remoteAddress);
  let result: IdentResult;
  try {
    result = await queryIdent({ remoteAddress, remotePort, localAddress, localPort, identPort: options.port, timeoutMs: options.timeoutMs });
  } catch (err) {
    return { name: undefined, source: 'ident', detail: `ident: ${errorMessage(err)}` };
  }
  switch (result.kind) {
    case 'user':
      // RFC 1413: with the OS token OTHER the id is not a login name (often an opaque token).
      if (result.os.toUpperCase() === 'OTHER') {
        return { name: undefined, source: 'ident', detail: `ident: ${host} answered with an opaque id (OS OTHER), not a login name` };
      }
      return { name: result.user, source: 'ident', detail: `ident: USERID from ${host}:${options.port} (${result.os})` };
    case 'error':
      return { name: undefined, source: 'ident', detail: `ident: ${result.error}` };
    case 'timeout':
      return { name: undefined, source: 'ident', detail: `ident: timeout (${result.detail})` };
    case 'network-error':
      return { name: undefined, source: 'ident', detail: `ident: no answer (${result.detail})` };
    case 'protocol-error':
      return { name: undefined, source: 'ident', detail: `ident: bad reply (${result.detail})` };
  }
}

/** The kernel's record of the peer of a UNIX-socket connection, mapped to a login name. */
export function unixPeerIdentity(socket: net.Socket): ClientIdentity {
  try {
    const peer = peerOf(socket);
    if (peer.user === undefined) {
      return { name: undefined, source: 'unix-peer', detail: `uid ${peer.uid} (pid ${peer.pid}) has no login name on this host` };
    }
    return { name: peer.user, source: 'unix-peer', detail: `uid ${peer.uid}, pid ${peer.pid}` };
  } catch (err) {
    return { name: undefined, source: 'unix-peer', detail: `peer credentials: ${errorMessage(err)}` };
  }
}

/** A per-user socket is mode 0600 and owned by its user: whoever connects is that user (or root). */
export function socketOwnerIdentity(user: string, path: string): ClientIdentity {
  return { name: user, source: 'unix-socket-owner', detail: `owner of ${path}` };
}

function subjectValue(subject: unknown, field: 'CN' | 'OU'): string | undefined {
  if (!subject || typeof subject !== 'object') return undefined;
  const value = (subject as Record<string, string | string[] | undefined>)[field];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The CN of the client certificate a TLS listener verified against its CA. OpenSSL's verdict
 * (`authorized`) is required, validity dates are checked again (resumed sessions skip them), and
 * with `requiredOu` (the warpstone CA: 'user') the certificate must carry that role.
 */
export function certificateIdentity(socket: tls.TLSSocket, requiredOu: string | undefined, now = new Date()): ClientIdentity {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    return { name: undefined, source: 'certificate', detail: 'tls: no client certificate was presented' };
  }
  const cn = subjectValue(cert.subject, 'CN');
  const serial = String(cert.serialNumber ?? '').toUpperCase();
  const label = `certificate of '${cn ?? '?'}' (serial ${serial || '?'})`;
  if (!socket.authorized) {
    return { name: undefined, source: 'certificate', detail: `tls: ${label} not verified: ${String(socket.authorizationError ?? 'unknown reason')}` };
  }
  if (now > new Date(cert.valid_to)) return { name: undefined, source: 'certificate', detail: `tls: ${label} expired on ${new Date(cert.valid_to).toISOString()}` };
  if (now < new Date(cert.valid_from)) return { name: undefined, source: 'certificate', detail: `tls: ${label} is not valid before ${new Date(cert.valid_from).toISOString()}` };
  if (!cn) return { name: undefined, source: 'certificate', detail: `tls: ${label} has no CN` };
  if (requiredOu !== undefined) {
    const ou = subjectValue(cert.subject, 'OU');
    if (ou !== requiredOu) {
      return { name: undefined, source: 'certificate', detail: `tls: ${label} has role '${ou ?? ''}', not '${requiredOu}'` };
    }
  }
  return { name: cn, source: 'certificate', detail: `tls: ${label}` };
}

/** The warpstone user the relay authenticated and put on the stream (header warpstone-user). */
export function tunnelIdentity(user: string, tunnel: string): ClientIdentity {
  if (!user) return { name: undefined, source: 'tunnel', detail: `tunnel ${tunnel}: the relay sent no user name` };
  return { name: user, source: 'tunnel', detail: `warpstone user via tunnel ${tunnel}` };
}
