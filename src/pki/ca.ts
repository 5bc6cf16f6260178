// The project's own certificate authority: creates the CA, the relay's server certificate and
// the user/agent client certificates. Keys are ECDSA P-256, signed through WebCrypto.
// Owns: certificate contents (subject layout CN=<name>, OU=<role>, O=warpstone). Must not: store
// anything (the caller records serials in the store and writes files).
import 'reflect-metadata';
import { webcrypto, randomBytes, X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { hostname } from 'node:os';
import { isIP } from 'node:net';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export type Role = 'user' | 'agent' | 'relay';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

export interface IssuedCertificate {
  keyPem: string;
  certPem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export interface CaMaterial {
  keyPem: string;
  certPem: string;
}

function pemOf(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x10; // positive, and no leading zero byte to strip
  return bytes.toString('hex').toUpperCase();
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pemOf('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', key));
}

async function importCaKey(keyPem: string): Promise<CryptoKey> {
  const b64 = keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return webcrypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), ALG, false, ['sign']);
}

/** Backdate a little so a client whose clock is slightly behind still accepts a fresh certificate. */
function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - 5 * 60_000), notAfter: new Date(now + days * DAY_MS) };
}

export async function createCa(days = 3650): Promise<CaMaterial> {
  const keys = await generateKeys();
  const { notBefore, notAfter } = validity(days);
  // A random tag in the name keeps two installations' CAs apart in error messages.
  const tag = randomBytes(4).toString('hex');
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=warpstone CA ${hostname().replace(/[,=+<>#;"\\]/g, '_')} ${tag}, O=warpstone`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keyPem: await exportKey(keys.privateKey), certPem: cert.toString('pem') + '\n' };
}

export interface IssueOptions {
  name: string;
  role: Role;
  days: number;
  /** Subject alternative names for a server certificate (DNS names or IP addresses). */
  altNames?: string[];
  /** Explicit validity window (tests of expired and not-yet-valid certificates). */
  notBefore?: Date;
  notAfter?: Date;
}

export async function issueCertificate(ca: CaMaterial, options: IssueOptions): Promise<IssuedCertificate> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importCaKey(ca.keyPem);
  const keys = await generateKeys();
  const window = validity(options.days);
  const notBefore = options.notBefore ?? window.notBefore;
  const notAfter = options.notAfter ?? window.notAfter;
  const serial = randomSerial();
  const usage = options.role === 'relay' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([usage], false),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (options.altNames && options.altNames.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        options.altNames.map((value) => ({ type: isIP(value) ? ('ip' as const) : ('dns' as const), value })),
        false,
      ),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: [{ CN: [options.name] }, { OU: [options.role] }, { O: ['warpstone'] }],
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALG,
    extensions,
  });
  const certPem = cert.toString('pem') + '\n';
  // Read the serial back the way node:tls will report it, so store lookups match exactly.
  const nodeSerial = new NodeX509(certPem).serialNumber.toUpperCase();
  return { keyPem: await exportKey(keys.privateKey), certPem, serial: nodeSerial, notBefore, notAfter };
}
