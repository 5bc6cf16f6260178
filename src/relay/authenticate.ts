// Decides whether a finished TLS handshake belongs to a known, valid identity, and says why not
// twice: a short reason for the peer (sent in its dialect) and, for the admin's log, an
// explanation in words they can act on (expired on a date and how long ago, another CA by name,
// a clock that is off, revoked since when, a name with stray whitespace). Each refusal also
// carries a FailureReason, the stable word that bans, audit and metrics count.
// Runs on every connection, resumed or not: a resumed TLS session skips OpenSSL's chain and
// expiry checks, so validity and revocation are checked here against the store every time.
// Owns: the connection-level identity check. Must not: check grants (per stream, see policy).
import type { TLSSocket, PeerCertificate } from 'node:tls';
import type { Store } from '../store/store.js';
import type { Policy } from './policy.js';
import type { FailureReason } from '../ops/events.js';
import { subjectField } from '../pki/pem.js';
import {
  explainExpired,
  explainForeignCa,
  explainNoCertificate,
  explainNotYetValid,
  explainRevoked,
  explainUnknownCertificate,
  nameOddity,
  quoteName,
} from '../guard/explain.js';

export interface PeerIdentity {
  name: string;
  role: 'user' | 'agent';
  serial: string;
  notAfter: Date;
}

export interface AuthRefusal {
  ok: false;
  code: string;
  /** told to the peer */
  reason: string;
  /** for the admin's log: the reason in more words (dates, names, what to do) */
  explain: string;
  failure: FailureReason;
  /** the certificate's CN, as it claims */
  name?: string;
  /** the certificate carries this relay's CA signature, so `name` is one this CA issued (even
   * if expired or revoked); false for a stranger's certificate, whose name proves nothing */
  signedByUs?: boolean;
}

export type AuthResult = { ok: true; identity: PeerIdentity } | AuthRefusal;

export interface AuthContext {
  /** the CN of this relay's CA, to name it when a certificate comes from another one */
  caName?: string;
}

function subjectOf(cert: PeerCertificate, field: 'CN' | 'OU'): string | undefined {
  const value = (cert.subject as unknown as Record<string, string | string[] | undefined>)[field];
  return Array.isArray(value) ? value[0] : value;
}

function issuerName(cert: PeerCertificate): string | undefined {
  const issuer = cert.issuer as unknown as Record<string, string | string[] | undefined> | undefined;
  const cn = issuer?.CN ?? issuer?.O;
  return Array.isArray(cn) ? cn[0] : cn;
}

const FOREIGN_CA_ERRORS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
]);

function refuse(name: string, code: string, failure: FailureReason, reason: string, explain: string, signedByUs = true): AuthRefusal {
  const oddity = nameOddity(name);
  return { ok: false, name, code, failure, reason, explain: oddity ? `${explain}; ${oddity}` : explain, signedByUs };
}

function describeChainError(code: string, cert: PeerCertificate, name: string, now: Date, context: AuthContext): AuthRefusal {
  const who = quoteName(name);
  switch (code) {
    case 'CERT_HAS_EXPIRED': {
      const notAfter = new Date(cert.valid_to);
      return refuse(name, 'WS_CERT_EXPIRED', 'tls-expired', `certificate of '${name}' expired on ${notAfter.toISOString()}`, explainExpired(who, notAfter, now));
    }
    case 'CERT_NOT_YET_VALID': {
      const notBefore = new Date(cert.valid_from);
      return refuse(
        name,
        'WS_CERT_NOT_YET_VALID',
        'tls-not-yet-valid',
        `certificate of '${name}' is not valid until ${notBefore.toISOString()}; is the client's or the relay's clock off?`,
        explainNotYetValid(who, notBefore, now),
      );
    }
    default:
      if (FOREIGN_CA_ERRORS.has(code)) {
        const issuer = issuerName(cert);
        return refuse(
          name,
          'WS_CERT_FOREIGN_CA',
          'tls-unknown-ca',
          `certificate of '${name}' was issued by another CA ('${issuer ?? 'unknown issuer'}'), not this relay's`,
          explainForeignCa(who, issuer, context.caName),
          false,
        );
      }
      return refuse(name, 'WS_CERT_INVALID', 'tls-unknown-certificate', `certificate of '${name}' failed verification: ${code}`, `the certificate of ${who} failed OpenSSL's verification with ${code}`, false);
  }
}

export async function authenticate(socket: TLSSocket, store: Store, policy: Policy, now = new Date(), context: AuthContext = {}): Promise<AuthResult> {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    return { ok: false, code: 'WS_NO_CERT', failure: 'tls-no-certificate', reason: 'no client certificate was presented', explain: explainNoCertificate() };
  }
  const name = subjectOf(cert, 'CN') ?? subjectField(String(cert.subject), 'CN') ?? '?';
  const who = quoteName(name);
  if (!socket.authorized) {
    const err = String(socket.authorizationError ?? 'UNKNOWN');
    return describeChainError(err, cert, name, now, context);
  }
  const notBefore = new Date(cert.valid_from);
  const notAfter = new Date(cert.valid_to);
  if (now > notAfter) return describeChainError('CERT_HAS_EXPIRED', cert, name, now, context);
  if (now < notBefore) return describeChainError('CERT_NOT_YET_VALID', cert, name, now, context);
  const serial = cert.serialNumber.toUpperCase();
  const role = subjectOf(cert, 'OU');
  if (role !== 'user' && role !== 'agent') {
    const reason = `certificate of '${name}' has role '${role ?? ''}'; only user and agent certificates may connect`;
    return refuse(name, 'WS_CERT_ROLE', 'tls-unknown-certificate', reason, `the certificate of ${who} has role ${JSON.stringify(role ?? '')}; only user and agent certificates may connect (a relay or CA certificate used as a client?)`);
  }
  if (policy.isRevoked(serial)) {
    const record = await store.findCertificate(serial).catch(() => undefined);
    return refuse(name, 'WS_REVOKED', 'tls-revoked', `certificate of '${name}' (serial ${serial}) is revoked`, explainRevoked(who, record?.revokedAt ?? null, now));
  }
  const record = await store.findCertificate(serial);
  if (!record) {
    return refuse(name, 'WS_CERT_UNKNOWN', 'tls-unknown-certificate', `certificate of '${name}' (serial ${serial}) is not in this relay's store`, explainUnknownCertificate(who, serial));
  }
  if (record.revokedAt) {
    return refuse(name, 'WS_REVOKED', 'tls-revoked', `certificate of '${name}' was revoked on ${record.revokedAt.toISOString()}`, explainRevoked(who, record.revokedAt, now));
  }
  if (record.name !== name || record.role !== role) {
    const reason = `certificate serial ${serial} was issued to ${record.role} '${record.name}', not ${role} '${name}'`;
    return refuse(name, 'WS_CERT_MISMATCH', 'tls-unknown-certificate', reason, `certificate serial ${serial} says ${role} ${who} but the store recorded it for ${record.role} ${quoteName(record.name)}: the certificate was altered or the store does not match this CA`);
  }
  return { ok: true, identity: { name, role, serial, notAfter } };
}
