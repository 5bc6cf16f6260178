// PEM files: splitting blocks, and the identity file (private key, certificate, CA certificate)
// that `warpstone issue` writes and `agent`/`connect` read.
// Owns: the identity file format. Must not: make trust decisions (tls and relay/ do).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync, chmodSync } from 'node:fs';
import { IdentityError, errorMessage } from '../common/errors.js';

export interface PemBlock {
  label: string;
  text: string;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----\r?\n?/g;

export function splitPem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const match of text.matchAll(BLOCK)) {
    blocks.push({ label: match[1] as string, text: match[0].endsWith('\n') ? match[0] : `${match[0]}\n` });
  }
  return blocks;
}

export interface Identity {
  keyPem: string;
  certPem: string;
  caPem: string;
  /** CN of the certificate */
  name: string;
  /** OU of the certificate: user, agent or relay */
  role: string;
  serial: string;
  notAfter: Date;
}

export function subjectField(subject: string, field: string): string | undefined {
  for (const line of subject.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0 && line.slice(0, eq) === field) return line.slice(eq + 1);
  }
  return undefined;
}

export function parseIdentity(text: string, source: string): Identity {
  const blocks = splitPem(text);
  const keys = blocks.filter((b) => b.label.endsWith('PRIVATE KEY'));
  const certs = blocks.filter((b) => b.label === 'CERTIFICATE');
  if (keys.length !== 1) throw new IdentityError(`${source}: expected one private key, found ${keys.length}`);
  if (certs.length < 2) {
    throw new IdentityError(`${source}: expected the identity's certificate followed by the CA certificate, found ${certs.length} certificate(s)`);
  }
  const keyPem = (keys[0] as PemBlock).text;
  const certPem = (certs[0] as PemBlock).text;
  const caPem = certs.slice(1).map((c) => c.text).join('');
  let cert: X509Certificate;
  try {
    createPrivateKey(keyPem);
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new IdentityError(`${source}: cannot be read: ${errorMessage(err)}`);
  }
  const name = subjectField(cert.subject, 'CN');
  const role = subjectField(cert.subject, 'OU');
  if (!name || !role) throw new IdentityError(`${source}: certificate subject has no CN/OU; was it issued by warpstone?`);
  return { keyPem, certPem, caPem, name, role, serial: cert.serialNumber.toUpperCase(), notAfter: new Date(cert.validTo) };
}

export function readIdentityFile(path: string): Identity {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new IdentityError(`identity file ${path} cannot be read: ${errorMessage(err)}`, 'WS_IDENTITY_FILE');
  }
  return parseIdentity(text, `identity file ${path}`);
}

/** Writes key + certificate + CA certificate, mode 0600. Refuses to overwrite unless told. */
export function writeIdentityFile(path: string, parts: { keyPem: string; certPem: string; caPem: string }, overwrite = false): void {
  if (!overwrite && existsSync(path)) {
    throw new IdentityError(`${path} already exists; remove it or pass --force to overwrite`, 'WS_EXISTS');
  }
  writeFileSync(path, parts.keyPem + parts.certPem + parts.caPem, { mode: 0o600 });
  chmodSync(path, 0o600);
}
