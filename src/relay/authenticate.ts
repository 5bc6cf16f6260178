// Decides whether a finished TLS handshake belongs to a known, valid identity, and says why not
// in words an admin can act on (expired on a date, another CA, a clock that is off, revoked).
// Runs on every connection, resumed or not: a resumed TLS session skips OpenSSL's chain and
// expiry checks, so validity and revocation are checked here against the store every time.
// Owns: the connection-level identity check. Must not: check grants (per stream, see policy).
import type { TLSSocket, PeerCertificate } from 'node:tls';
import type { Store } from '../store/store.js';
import type { Policy } from './policy.js';
import { subjectField } from '../pki/pem.js';

export interface PeerIdentity {
  name: string;
  role: 'user' | 'agent';
  serial: string;
  notAfter: Date;
}

export type AuthResult = { ok: true; identity: PeerIdentity } | { ok: false; code: string; reason: string; name?: string };

function subjectOf(cert: PeerCertificate, field: 'CN' | 'OU'): string | undefined {
  const value = (cert.subject as unknown as Record<string, string | string[] | undefined>)[field];
  return Array.isArray(value) ? value[0] : value;
}

function issuerName(cert: PeerCertificate): string {
  const cn = (cert.issuer as unknown as Record<string, string | undefined>).CN;
  return cn ?? 'unknown issuer';
}

function describeChainError(code: string, cert: PeerCertificate, name: string): { code: string; reason: string } {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
      return { code: 'WS_CERT_EXPIRED', reason: `certificate of '${name}' expired on ${new Date(cert.valid_to).toISOString()}` };
    case 'CERT_NOT_YET_VALID':
      return {
        code: 'WS_CERT_NOT_YET_VALID',
        reason: `certificate of '${name}' is not valid until ${new Date(cert.valid_from).toISOString()}; is the client's or the relay's clock off?`,
      };
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return { code: 'WS_CERT_FOREIGN_CA', reason: `certificate of '${name}' was issued by another CA ('${issuerName(cert)}'), not this relay's` };
    default:
      return { code: 'WS_CERT_INVALID', reason: `certificate of '${name}' failed verification: ${code}` };
  }
}

export async function authenticate(socket: TLSSocket, store: Store, policy: Policy, now = new Date()): Promise<AuthResult> {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    return { ok: false, code: 'WS_NO_CERT', reason: 'no client certificate was presented' };
  }
  const name = subjectOf(cert, 'CN') ?? subjectField(String(cert.subject), 'CN') ?? '?';
  if (!socket.authorized) {
    const err = String(socket.authorizationError ?? 'UNKNOWN');
    return { ok: false, name, ...describeChainError(err, cert, name) };
  }
  const notBefore = new Date(cert.valid_from);
  const notAfter = new Date(cert.valid_to);
  if (now > notAfter) return { ok: false, name, ...describeChainError('CERT_HAS_EXPIRED', cert, name) };
  if (now < notBefore) return { ok: false, name, ...describeChainError('CERT_NOT_YET_VALID', cert, name) };
  const serial = cert.serialNumber.toUpperCase();
  const role = subjectOf(cert, 'OU');
  if (role !== 'user' && role !== 'agent') {
    return { ok: false, name, code: 'WS_CERT_ROLE', reason: `certificate of '${name}' has role '${role ?? ''}'; only user and agent certificates may connect` };
  }
  if (policy.isRevoked(serial)) {
    return { ok: false, name, code: 'WS_REVOKED', reason: `certificate of '${name}' (serial ${serial}) is revoked` };
  }
  const record = await store.findCertificate(serial);
  if (!record) {
    return { ok: false, name, code: 'WS_CERT_UNKNOWN', reason: `certificate of '${name}' (serial ${serial}) is not in this relay's store` };
  }
  if (record.revokedAt) {
    return { ok: false, name, code: 'WS_REVOKED', reason: `certificate of '${name}' was revoked on ${record.revokedAt.toISOString()}` };
  }
  if (record.name !== name || record.role !== role) {
    return { ok: false, name, code: 'WS_CERT_MISMATCH', reason: `certificate serial ${serial} was issued to ${record.role} '${record.name}', not ${role} '${name}'` };
  }
  return { ok: true, identity: { name, role, serial, notAfter } };
}
