// Admin client certificates for the admin HTTP listener (when it runs TLS with the relay's CA):
// a certificate is an admin's when OpenSSL verified its chain against the relay's CA, it is
// within its validity, its OU (the project's role field) is "admin", and the store knows its
// serial as an admin certificate of the same name that is not revoked. Proposed role: the pki
// Role type has no "admin" yet (see the report); until `warpstone issue admin NAME` exists no
// certificate passes, which is the safe default.
// Owns: this decision. Must not: accept a certificate the store does not know.
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { ClientCertificateCheck } from './admin-access.js';

export const ADMIN_ROLE = 'admin';

/** What the check needs from the store (Store.findCertificate has this shape). */
export interface CertificateLookup {
  findCertificate(serial: string): Promise<{ name: string; role: string; revokedAt: Date | null } | undefined>;
}

function subjectOf(cert: PeerCertificate, field: 'CN' | 'OU'): string | undefined {
  const value = (cert.subject as unknown as Record<string, string | string[] | undefined>)[field];
  return Array.isArray(value) ? value[0] : value;
}

export function adminCertificateCheck(store: CertificateLookup, options: { isRevoked?: (serial: string) => boolean; now?: () => Date } = {}): ClientCertificateCheck {
  return async (cert: PeerCertificate, socket: TLSSocket) => {
    if (!socket.authorized) return undefined;
    const now = options.now?.() ?? new Date();
    if (now < new Date(cert.valid_from) || now > new Date(cert.valid_to)) return undefined;
    const name = subjectOf(cert, 'CN');
    if (!name || subjectOf(cert, 'OU') !== ADMIN_ROLE) return undefined;
    const serial = cert.serialNumber.toUpperCase();
    if (options.isRevoked?.(serial)) return undefined;
    const record = await store.findCertificate(serial);
    if (!record || record.revokedAt || record.role !== ADMIN_ROLE || record.name !== name) return undefined;
    return name;
  };
}
