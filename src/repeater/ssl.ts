// SSL for `warpstone stone`: `sport/ssl` listeners (-z options) and `host:port/ssl` destinations
// (-q options) on node:tls, with stone 2.4's certificate checks (its verify_callback):
// - verify mode: server `verify` / `verify,once` require a client certificate, `verify,ifany`
//   checks one when sent, `verify,none` (default) does not ask; client `verify` checks the
//   server's. Without verify nothing is checked (stone's callback result is ignored then).
// - a certificate that does not chain to CAfile/CApath fails unless `ignore`; a chain deeper than
//   `depth=` fails; `uniq` refuses a leaf serial different from the first one this stone saw.
// - `re<n>=` is matched (POSIX ERE, case-insensitive) against the subject of the certificate at
//   depth n written as X509_NAME_oneline writes it (`/CN=alice/O=warp`); `re-<n>=` counts from
//   the root (re-1 = the root). A rule that does not match refuses the peer.
// - client: the name it checks is servername= or else the destination host; stone checks it
//   (dNSName, else CN) only when there is no re0= rule, and logs `connect to H, but CN=N`.
// Differences, on purpose or forced by node:tls: checks run right after the handshake instead of
// inside it, so a refused TLS 1.2 client sees its handshake complete and then the connection
// closed (TLS 1.3 clients see the same in both); without CAfile/CApath Node's bundled roots are
// trusted (stone's context then trusts nothing); subjects with characters X509_NAME_oneline
// escapes as \xHH are printed as Node prints them; `shutdown=` and `bugs` are recorded only.
// crl_check / crl_check_all: CRLs from CAfile=/CApath= (as OpenSSL's store loads them) given to
// node:tls, which checks every level of the chain for both (stone 2.4 checks only the leaf for
// both, because it matches `crl_check_all` as `crl_check`); with a CA that signs the peer
// directly the two are the same. A revoked peer fails like any unverified one.
// Log lines (stone's wording): `3 TCP 5: SSL_accept lib error:0A000086:SSL routines::certificate
// verify failed` (any -d level), `[depthN=SUBJECT]` with `verbose`.
// Owns: building TLS contexts from SslOptions and deciding on a peer. Must not: accept, connect
// or relay (engine.ts, tcp-relay.ts).
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { WarpstoneError, errorMessage } from '../common/errors.js';
import { toRegExp } from './escapes.js';
import type { SslOptions } from './types.js';

/** A key, certificate or CA file of a -z/-q set cannot be used. */
export class StoneSslError extends WarpstoneError {
  constructor(message: string, cause?: unknown) {
    super('WS_STONE_SSL', message, cause === undefined ? undefined : { cause });
  }
}

const VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
type Version = (typeof VERSIONS)[number];
const VERSION_OF = { tls1: 'TLSv1', 'tls1.1': 'TLSv1.1', 'tls1.2': 'TLSv1.2' } as const;

/**
 * `tls1`/`tls1.1`/`tls1.2` pin one version (the old ones need OpenSSL's security level 0, as on
 * Debian); `no_tls1...` narrow the default range (TLS 1.2 and 1.3, as Debian's OpenSSL allows).
 */
function versionRange(o: SslOptions): { minVersion: Version; maxVersion: Version } | undefined {
  if (o.protocol !== 'any') {
    const v = VERSION_OF[o.protocol];
    return { minVersion: v, maxVersion: v };
  }
  if (o.disabledProtocols.length === 0) return undefined;
  const disabled = new Set<string>(o.disabledProtocols.map((d) => VERSION_OF[d]));
  const allowed = VERSIONS.filter((v) => v !== 'TLSv1' && v !== 'TLSv1.1' && !disabled.has(v));
  // node:tls takes a range: from the lowest allowed version to the highest
  return { minVersion: allowed[0] ?? 'TLSv1.3', maxVersion: allowed.at(-1) ?? 'TLSv1.3' };
}

function readFile(path: string, what: string, role: SslOptions['role']): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StoneSslError(`-${role === 'server' ? 'z' : 'q'} ${what}: cannot read ${path}: ${errorMessage(err)}`, err);
  }
}

/** CAfile= plus every certificate file of CApath= (stone: SSL_CTX_load_verify_locations). */
function trustAnchors(o: SslOptions): Buffer[] | undefined {
  if (o.caFile === undefined && o.caPath === undefined) return undefined;
  const out: Buffer[] = [];
  if (o.caFile !== undefined) out.push(readFile(o.caFile, 'CAfile=', o.role));
  if (o.caPath !== undefined) {
    let names: string[];
    try {
      names = readdirSync(o.caPath).sort();
    } catch (err) {
      throw new StoneSslError(`-${o.role === 'server' ? 'z' : 'q'} CApath=: cannot read the directory ${o.caPath}: ${errorMessage(err)}`, err);
    }
    for (const name of names) {
      const path = join(o.caPath, name);
      try {
        if (!statSync(path).isFile()) continue;
        const text = readFileSync(path);
        if (text.includes('-----BEGIN CERTIFICATE-----')) out.push(text);
      } catch {
        // unreadable entries are skipped, as OpenSSL's hashed-directory lookup skips them
      }
    }
  }
  return out;
}

const CRL_BLOCK = /-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----/g;

/**
 * `crl_check`/`crl_check_all`: the CRLs stone's OpenSSL store would find, i.e. the X509 CRL
 * blocks of CAfile= and of the files in CApath= (hashed `.rN` files or any other). None at all is
 * a start-up error: stone would then refuse every peer with "unable to get certificate CRL".
 */
function revocationLists(o: SslOptions): string[] {
  const out: string[] = [];
  const flag = o.role === 'server' ? 'z' : 'q';
  const collect = (text: string): void => {
    for (const m of text.matchAll(CRL_BLOCK)) out.push(m[0]);
  };
  if (o.caFile !== undefined) collect(readFile(o.caFile, 'CAfile=', o.role).toString('latin1'));
  if (o.caPath !== undefined) {
    let names: string[] = [];
    try {
      names = readdirSync(o.caPath).sort();
    } catch (err) {
      throw new StoneSslError(`-${flag} CApath=: cannot read the directory ${o.caPath}: ${errorMessage(err)}`, err);
    }
    for (const name of names) {
      try {
        const path = join(o.caPath, name);
        if (statSync(path).isFile()) collect(readFileSync(path, 'latin1'));
      } catch {
        // unreadable entries are skipped, as OpenSSL's hashed-directory lookup skips them
      }
    }
  }
  if (out.length === 0) {
    const where = [o.caFile === undefined ? undefined : `CAfile=${o.caFile}`, o.caPath === undefined ? undefined : `CApath=${o.caPath}`].filter((w) => w !== undefined);
    const name = o.crlCheck === 'chain' ? 'crl_check_all' : 'crl_check';
    throw new StoneSslError(
      where.length === 0
        ? `-${flag} ${name}: no X509 CRL found: no CAfile= or CApath= given (the CRL PEM goes there, as for stone)`
        : `-${flag} ${name}: no X509 CRL found in ${where.join(' or ')} (put the CRL PEM there, as for stone)`,
    );
  }
  return out;
}

/** The node:tls options for one -z/-q set (files read now, at start-up). */
export function secureContextOptions(o: SslOptions): tls.SecureContextOptions {
  const opts: tls.SecureContextOptions = {};
  const range = versionRange(o);
  if (range) Object.assign(opts, range);
  if (o.protocol === 'tls1' || o.protocol === 'tls1.1') opts.ciphers = `${o.cipherList ?? 'DEFAULT'}:@SECLEVEL=0`;
  else if (o.cipherList !== undefined) opts.ciphers = o.cipherList;
  if (o.serverPreference) opts.honorCipherOrder = true;
  if (o.sessionIdContext !== undefined) opts.sessionIdContext = o.sessionIdContext.slice(0, 32);
  const ca = trustAnchors(o);
  if (ca) opts.ca = ca;
  // node:tls checks a given CRL for every certificate of the chain (CRL_CHECK_ALL)
  if (o.crlCheck !== 'none') opts.crl = revocationLists(o);
  const passphrase = o.passFile === undefined ? undefined : (readFile(o.passFile, 'passfile=', o.role).toString('utf8').split(/\r?\n/)[0] ?? '');
  if (o.pfxFile !== undefined) {
    opts.pfx = readFile(o.pfxFile, 'pfx=', o.role);
    if (passphrase !== undefined) opts.passphrase = passphrase;
  } else {
    if (o.keyFile !== undefined) opts.key = readFile(o.keyFile, 'key=', o.role);
    if (o.certFile !== undefined) opts.cert = readFile(o.certFile, 'cert=', o.role);
    if (passphrase !== undefined) opts.passphrase = passphrase;
  }
  return opts;
}

/**
 * The tls.createServer() context options of a -z set, checked by building a context once: fails
 * at start-up when the key or certificate is unusable.
 */
export function serverContext(o: SslOptions): tls.SecureContextOptions {
  const opts = secureContextOptions(o);
  if (opts.pfx === undefined && (opts.key === undefined || opts.cert === undefined)) {
    throw new StoneSslError('-z: an SSL listener needs key= and cert= (or certkey=, pfx=)');
  }
  try {
    tls.createSecureContext(opts);
    return opts;
  } catch (err) {
    throw new StoneSslError(`-z: cannot use the key/certificate ${o.pfxFile ?? `${o.keyFile ?? ''}, ${o.certFile ?? ''}`}: ${errorMessage(err)}`, err);
  }
}

/** Options for tls.connect() of a -q set (checked at start-up by building a context once). */
export function clientOptions(o: SslOptions): tls.ConnectionOptions {
  const opts = secureContextOptions(o);
  try {
    tls.createSecureContext(opts);
  } catch (err) {
    throw new StoneSslError(`-q: cannot use these SSL options: ${errorMessage(err)}`, err);
  }
  return { ...opts, rejectUnauthorized: false, checkServerIdentity: () => undefined };
}

/** X509_NAME_oneline's form of a name as Node prints it (`CN=alice\nO=warp`): `/CN=alice/O=warp`. */
function oneline(name: string): string {
  return name
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => `/${l}`)
    .join('');
}

/** X509_NAME_oneline's form of a certificate subject: `/CN=alice/O=warp`. */
export function onelineSubject(cert: X509Certificate): string {
  return oneline(cert.subject);
}

/** `ASN1_INTEGER_get` printed with %lx: lower case, no leading zeros. */
function serialText(cert: X509Certificate): string {
  return cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

/**
 * stone's printSSLinfo() after a handshake with `verbose` (lines without the `3 TCP 5:` head):
 * `[SSL cipher=...]`, and with a peer certificate `[SSL serial=...]`, `[SSL subject=...]`,
 * `[SSL issuer=...]`.
 */
export function sslInfoLines(socket: tls.TLSSocket): string[] {
  const out = [`[SSL cipher=${socket.getCipher()?.name ?? '<NULL>'}]`];
  const raw = socket.getPeerCertificate().raw as Buffer | undefined;
  if (raw) {
    const peer = new X509Certificate(raw);
    out.push(`[SSL serial=${serialText(peer)}]`, `[SSL subject=${onelineSubject(peer)}]`, `[SSL issuer=${oneline(peer.issuer)}]`);
  }
  return out;
}

/** The peer's chain, leaf first, completed from the trust store as node:tls sees it. */
function peerChain(socket: tls.TLSSocket): X509Certificate[] {
  const out: X509Certificate[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    out.push(new X509Certificate(cert.raw));
    cert = cert.issuerCertificate;
  }
  return out;
}

function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase();
  if (p === h) return true;
  if (p.startsWith('*.')) {
    const dot = h.indexOf('.');
    return dot > 0 && h.slice(dot) === p.slice(1);
  }
  return false;
}

function commonName(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) return line.slice(3);
  return undefined;
}

export type PeerDecision =
  | { readonly ok: true; readonly matches: readonly (string | undefined)[] }
  /** `messages`: the lines (after `3 TCP 5: `) stone logs at any -d level; maybe none */
  | { readonly ok: false; readonly messages: readonly string[] };

/** Per-stone state of `uniq`: the serial of the first verified peer. */
export interface SerialMemory {
  serial: string | undefined;
}

const VERIFY_FAILED = 'error:0A000086:SSL routines::certificate verify failed';
const NO_CERTIFICATE = 'error:0A0000C7:SSL routines::peer did not return a certificate';

/**
 * stone's verdict on a peer after the handshake. `verbose` lines (`[depthN=...]`) go to `note`.
 * `serverName`: for a client, the name the server certificate must carry.
 */
export function decidePeer(
  socket: tls.TLSSocket,
  o: SslOptions,
  memory: SerialMemory,
  note: (text: string) => void,
  serverName?: string,
): PeerDecision {
  // a failed check fails the handshake: stone logs `SSL_accept lib <reason>` for a client, and
  // nothing for a server (doSSL_connect logs SSL_ERROR_SSL only at -ddddd)
  const failed = (reason: string, before: string[] = []): PeerDecision => ({ ok: false, messages: o.role === 'server' ? [...before, `SSL_accept lib ${reason}`] : before });
  if (o.verify === 'none') return { ok: true, matches: [] };
  const chain = peerChain(socket);
  const leaf = chain[0];
  if (!leaf) {
    if (o.role === 'server' && o.verify === 'if-any') return { ok: true, matches: [] };
    return failed(o.role === 'server' ? NO_CERTIFICATE : VERIFY_FAILED);
  }
  // stone's verify_callback, once per certificate from the root down to the leaf; node:tls only
  // says whether the whole chain verified, so an unverified chain fails at the first certificate
  const matches: (string | undefined)[] = [serialText(leaf)];
  for (let d = chain.length - 1; d >= 0; d--) {
    const cert = chain[d] as X509Certificate;
    if (d === 0) {
      if (o.uniqueSerial) {
        const serial = serialText(leaf);
        if (memory.serial === undefined) memory.serial = serial;
        else if (memory.serial !== serial) return failed(VERIFY_FAILED, [`SSL callback serial number mismatch ${serial} != ${memory.serial}`]);
      }
      if (o.role === 'client' && serverName !== undefined && o.peerRegexes[0] === undefined) {
        const sans = (leaf.subjectAltName ?? '').split(/,\s*/).filter((n) => n.startsWith('DNS:')).map((n) => n.slice(4));
        if (!sans.some((n) => hostMatches(n, serverName))) {
          const cn = commonName(leaf);
          if (cn === undefined) return failed(VERIFY_FAILED, ['no dNSName nor CN']);
          if (!hostMatches(cn, serverName)) return failed(VERIFY_FAILED, [`connect to ${serverName}, but CN=${cn}`]);
        }
      }
    }
    if (o.verbose > 0) note(`[depth${d}=${onelineSubject(cert)}]`);
    const preverified = socket.authorized && d <= o.depth;
    if (!preverified && !o.ignoreVerifyErrors) return failed(VERIFY_FAILED);
    const rule = (d < 10 ? o.peerRegexes[10 - chain.length + d] : undefined) ?? o.peerRegexes[d];
    if (rule === undefined) continue;
    const m = toRegExp(rule).exec(onelineSubject(cert));
    if (!m) return failed(VERIFY_FAILED);
    for (let i = 1; i < m.length && matches.length <= 9; i++) if (m[i] !== undefined) matches.push(m[i]);
  }
  return { ok: true, matches };
}

/** `error:0A000438:SSL routines::tlsv1 alert internal error` from a node:tls handshake error. */
export function opensslReason(err: unknown): string {
  const text = errorMessage(err);
  const m = /error:([0-9A-Fa-f]{8}):([^:]*):[^:]*:([^\n]*)/.exec(text);
  if (m) return `error:${(m[1] as string).toUpperCase()}:${m[2] as string}::${(m[3] as string).replace(/:\.\.\/.*$/, '')}`;
  return text;
}

/** The servername a client sends and checks: servername=, else the destination host (not an IP). */
export function clientServerName(o: SslOptions, destinationHost: string): string {
  return o.serverName !== undefined && o.serverName !== '' ? o.serverName : destinationHost;
}
