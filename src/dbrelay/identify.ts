// Who is at the other end of one accepted database connection, per listener kind: the IDENT
// answer of the client's host (tcp; only hosts in the listener's ident_from are asked), the CN of a verified client certificate (tls, or tcp with
// `identity: certificate`, where the certificate arrives inside the protocol's TLS upgrade), the
// kernel's peer uid (unix), the owner a per-user socket was made for (per-user), or the
// warpstone user a relay stream carries (tunnel). Certificates are checked against the warpstone
// store when there is one (recorded for that name, not revoked). Every failure is an identity
// without a name and with a detail saying why (and, for certificates, a `problem` the bans
// count); refusing is the session's job (decision 'no-identity').
// Owns: turning a connection into a ClientIdentity. Must not: decide, refuse or close anything.
import type net from 'node:net';
import type tls from 'node:tls';
import { queryIdent, unmapAddress, type IdentResult } from '../identity/ident.js';
import { peerOf } from '../identity/peercred.js';
import { errorMessage } from '../common/errors.js';
import { parseIp, type CidrList } from '../guard/prefix.js';
import type { CertificateRecord, Store } from '../store/store.js';
import type { CertificateProblem, ClientIdentity, PeerVerification } from './types.js';

/**
 * Asks the identd of the client's host (RFC 1413) who owns the client's end of `socket`, when
 * that host is in `from` (the listener's ident_from). Any host can run an identd answering any
 * name, so a client from elsewhere gets no identity and no query is made.
 */
export async function identIdentity(socket: net.Socket, options: { port: number; timeoutMs: number }, from: CidrList): Promise<ClientIdentity> {
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  if (!remoteAddress || !remotePort || !localAddress || !localPort) {
    return { name: undefined, source: 'ident', detail: 'ident: the connection closed before its addresses could be read' };
  }
  const ip = parseIp(remoteAddress);
  if (!ip || !from.match(ip)) return { name: undefined, source: 'ident', detail: 'ident: source not in ident_from' };
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

function refusedCertificate(detail: string, problem: CertificateProblem | undefined): ClientIdentity {
  return { name: undefined, source: 'certificate', detail, ...(problem === undefined ? {} : { problem }) };
}

/** The verdict a tls.Server left on a socket it accepted (Node sets `authorizationError` to OpenSSL's code). */
function serverVerification(socket: tls.TLSSocket): PeerVerification {
  const error = socket.authorizationError as Error | string | null | undefined;
  return { authorized: socket.authorized, error: error === null || error === undefined ? undefined : String(error) };
}

/** OpenSSL's verification error as a problem: dates have their own, anything else is a CA we do not trust. */
function problemOfVerifyError(code: string | undefined): CertificateProblem {
  if (code === 'CERT_HAS_EXPIRED') return 'expired';
  if (code === 'CERT_NOT_YET_VALID') return 'not-yet-valid';
  return 'unknown-ca';
}

/**
 * The CN of the client certificate a TLS listener verified against its CA. OpenSSL's verdict is
 * required (`verification`; by default the socket's own `authorized`, which a tls.Server sets),
 * validity dates are checked again (resumed sessions skip them), and with `requiredOu` (the
 * warpstone CA: 'user') the certificate must carry that role.
 */
export function certificateIdentity(
  socket: tls.TLSSocket,
  requiredOu: string | undefined,
  now = new Date(),
  verification: PeerVerification = serverVerification(socket),
): ClientIdentity {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    return refusedCertificate('tls: no client certificate was presented', 'no-certificate');
  }
  const cn = subjectValue(cert.subject, 'CN');
  const serial = String(cert.serialNumber ?? '').toUpperCase();
  const label = `certificate of '${cn ?? '?'}' (serial ${serial || '?'})`;
  if (!verification.authorized) {
    return refusedCertificate(`tls: ${label} not verified: ${verification.error ?? 'unknown reason'}`, problemOfVerifyError(verification.error));
  }
  if (now > new Date(cert.valid_to)) return refusedCertificate(`tls: ${label} expired on ${new Date(cert.valid_to).toISOString()}`, 'expired');
  if (now < new Date(cert.valid_from)) return refusedCertificate(`tls: ${label} is not valid before ${new Date(cert.valid_from).toISOString()}`, 'not-yet-valid');
  if (!cn) return refusedCertificate(`tls: ${label} has no CN`, 'unknown-certificate');
  if (requiredOu !== undefined) {
    const ou = subjectValue(cert.subject, 'OU');
    if (ou !== requiredOu) {
      return refusedCertificate(`tls: ${label} has role '${ou ?? ''}', not '${requiredOu}'`, 'unknown-certificate');
    }
  }
  return { name: cn, source: 'certificate', detail: `tls: ${label}` };
}

/** How a listener checks a client certificate beyond OpenSSL's chain verification. */
export interface CertificateCheck {
  /** the certificate's OU must be this (warpstone CA: 'user'), or any when undefined */
  requiredOu: string | undefined;
  /** the warpstone store of the CA: the serial must be recorded for that name and not revoked */
  store: Store | undefined;
}

/**
 * The certificate identity, checked against the warpstone store when there is one: the serial
 * must be recorded for that name and not revoked. A store that cannot answer refuses (fail
 * closed; no `problem`, since that is not the client's doing).
 */
export async function checkedCertificateIdentity(socket: tls.TLSSocket, check: CertificateCheck, verification?: PeerVerification): Promise<ClientIdentity> {
  const identity = certificateIdentity(socket, check.requiredOu, new Date(), verification ?? serverVerification(socket));
  if (!check.store || identity.name === undefined) return identity;
  const serial = String(socket.getPeerCertificate().serialNumber ?? '').toUpperCase();
  const label = `certificate of '${identity.name}' (serial ${serial})`;
  let record: CertificateRecord | undefined;
  try {
    record = await check.store.findCertificate(serial);
  } catch (err) {
    return refusedCertificate(`tls: ${label} cannot be checked against the store: ${errorMessage(err)}`, undefined);
  }
  if (!record) return refusedCertificate(`tls: ${label} is not recorded in the warpstone store`, 'unknown-certificate');
  if (record.revokedAt) return refusedCertificate(`tls: ${label} was revoked on ${record.revokedAt.toISOString()}`, 'revoked');
  if (record.name !== identity.name) return refusedCertificate(`tls: ${label} is recorded for '${record.name}'`, 'unknown-certificate');
  return identity;
}

/**
 * A listener that takes the identity from a certificate sent inside the protocol's TLS upgrade,
 * before (or without) that upgrade: nobody yet. The detail says how to send one.
 */
export function noCertificateYet(): ClientIdentity {
  return refusedCertificate(
    'the client did not start TLS, so it sent no certificate (mariadb: --ssl-cert and --ssl-key; psql: sslmode=require sslcert=... sslkey=...)',
    'no-certificate',
  );
}

/** The warpstone user the relay authenticated and put on the stream (header warpstone-user). */
export function tunnelIdentity(user: string, tunnel: string): ClientIdentity {
  if (!user) return { name: undefined, source: 'tunnel', detail: `tunnel ${tunnel}: the relay sent no user name` };
  return { name: user, source: 'tunnel', detail: `warpstone user via tunnel ${tunnel}` };
}
