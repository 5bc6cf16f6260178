// Who may use the admin HTTP listener, decided per request, deny unless allowed:
//  1. an admin client certificate (only when the listener runs TLS and the relay supplied a
//     verifier that checks the certificate against its store: role admin, not revoked);
//  2. `Authorization: Bearer <token>`: a wrong token is refused even from a trusted address, so
//     a mistake is visible instead of silently masked;
//  3. the session cookie a login with a token set (the token must still exist);
//  4. a trusted source address (default: loopback) whose Host header is an IP literal,
//     "localhost" or a configured name; any other Host name is refused, because a web page
//     elsewhere could otherwise point a DNS name at 127.0.0.1 and read the dashboard through
//     the owner's browser (DNS rebinding).
// Owns: these rules and the parsing of the credentials. Must not: render pages or log secrets.
import type { IncomingMessage } from 'node:http';
import type { TLSSocket, PeerCertificate } from 'node:tls';
import { isIP, isIPv4 } from 'node:net';
import { AdminSessions, AdminTokens, hashToken, looksLikeToken } from './admin-token.js';

export type Principal =
  | { kind: 'trusted'; source: string }
  | { kind: 'token'; id: number; label: string; tokenHash: string; session: string | undefined }
  /** `recheck` runs the certificate check again (long-lived responses re-admit with it) */
  | { kind: 'certificate'; name: string; recheck: () => Promise<boolean> };

export type AccessResult =
  | { ok: true; principal: Principal }
  /** `status` 401 = credentials missing or wrong; 403 = a trusted source with a foreign Host name */
  | { ok: false; status: 401 | 403; reason: string; clearCookie: boolean };

/** Checks an admin client certificate; returns the admin's name, or undefined to refuse. */
export type ClientCertificateCheck = (cert: PeerCertificate, socket: TLSSocket) => Promise<string | undefined>;

export interface AccessOptions {
  /** Addresses admitted without credentials: IP literals, or "loopback" (127.0.0.0/8, ::1).
   * Default ["loopback"]; [] requires credentials from everyone. */
  trusted?: string[];
  /** Host names (besides IP literals and "localhost") a trusted source may use. */
  allowedHosts?: string[];
  /** Set when the listener runs TLS with the relay's CA. */
  clientCertificate?: ClientCertificateCheck;
  cookieName: string;
}

export function normalizeAddress(address: string | undefined): string {
  if (!address) return '';
  const bare = address.replace(/^::ffff:/i, '');
  return isIPv4(bare) ? bare : bare.toLowerCase();
}

export function isLoopback(address: string): boolean {
  const a = normalizeAddress(address);
  return a === '::1' || (isIPv4(a) && a.startsWith('127.'));
}

/** The host part of a Host header: "[::1]:7444" -> "::1", "example.org:7444" -> "example.org". */
export function hostOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const close = h.indexOf(']');
    return close > 0 ? h.slice(1, close) : undefined;
  }
  const colon = h.lastIndexOf(':');
  return colon >= 0 ? h.slice(0, colon) : h;
}

export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export class AdminAccess {
  private readonly trustLoopback: boolean;
  private readonly trustedAddresses: Set<string>;
  private readonly allowedHosts: Set<string>;
  /** certificate checks are per connection: a keep-alive socket is checked once */
  private readonly certOf = new WeakMap<object, Promise<string | undefined>>();

  constructor(
    readonly tokens: AdminTokens,
    readonly sessions: AdminSessions,
    private readonly options: AccessOptions,
  ) {
    const trusted = options.trusted ?? ['loopback'];
    this.trustLoopback = trusted.includes('loopback');
    this.trustedAddresses = new Set(trusted.filter((t) => t !== 'loopback').map(normalizeAddress));
    this.allowedHosts = new Set(['localhost', ...(options.allowedHosts ?? []).map((h) => h.toLowerCase())]);
  }

  isTrustedSource(address: string): boolean {
    const a = normalizeAddress(address);
    return (this.trustLoopback && isLoopback(a)) || this.trustedAddresses.has(a);
  }

  hostAllowed(header: string | undefined): boolean {
    const host = hostOf(header);
    if (host === undefined) return false;
    return isIP(host) !== 0 || this.allowedHosts.has(host);
  }

  async decide(req: IncomingMessage): Promise<AccessResult> {
    const source = normalizeAddress(req.socket.remoteAddress);
    const check = this.options.clientCertificate;
    const tlsSocket = req.socket as TLSSocket;
    if (check && typeof tlsSocket.getPeerCertificate === 'function') {
      let pending = this.certOf.get(tlsSocket);
      if (!pending) {
        const cert = tlsSocket.getPeerCertificate();
        pending = cert && Object.keys(cert).length > 0 ? check(cert, tlsSocket).catch(() => undefined) : Promise.resolve(undefined);
        this.certOf.set(tlsSocket, pending);
      }
      const name = await pending;
      if (name !== undefined) {
        const cert = tlsSocket.getPeerCertificate();
        const recheck = (): Promise<boolean> => check(cert, tlsSocket).then((again) => again === name, () => false);
        return { ok: true, principal: { kind: 'certificate', name, recheck } };
      }
    }

    const authorization = req.headers.authorization;
    if (authorization !== undefined) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
      if (!m || !m[1]) return { ok: false, status: 401, reason: 'the Authorization header is not "Bearer <admin token>"', clearCookie: false };
      const token = m[1];
      const record = looksLikeToken(token) ? await this.tokens.verify(token) : undefined;
      if (!record) return { ok: false, status: 401, reason: 'the admin token is not valid (wrong, or revoked)', clearCookie: false };
      return { ok: true, principal: { kind: 'token', id: record.id, label: record.label, tokenHash: record.hash, session: undefined } };
    }

    let staleCookie = false;
    const session = readCookie(req.headers.cookie, this.options.cookieName);
    if (session !== undefined) {
      const tokenHash = this.sessions.tokenHashOf(session);
      const record = tokenHash ? await this.tokens.findByHash(tokenHash) : undefined;
      if (record) return { ok: true, principal: { kind: 'token', id: record.id, label: record.label, tokenHash: record.hash, session } };
      // expired, or its token was revoked: forget it and fall through to the other rules
      if (tokenHash) this.sessions.close(session);
      staleCookie = true;
    }

    // A request relayed by a reverse proxy on this host arrives from loopback on behalf of anyone:
    // headers that say it was forwarded take the loopback trust away (nginx, Caddy, HAProxy and
    // Apache add one of them by default or in every documented setup).
    const forwarded = req.headers.forwarded !== undefined || req.headers['x-forwarded-for'] !== undefined || req.headers['x-real-ip'] !== undefined || req.headers.via !== undefined;
    if (this.isTrustedSource(source) && forwarded) {
      return { ok: false, status: 401, reason: 'this request was forwarded by a proxy: an admin token is required', clearCookie: staleCookie };
    }
    if (this.isTrustedSource(source)) {
      if (!this.hostAllowed(req.headers.host)) {
        return {
          ok: false,
          status: 403,
          reason: `Host '${hostOf(req.headers.host) ?? ''}' is not an address of this listener; use an IP address or localhost, or add the name with the allowed hosts option`,
          clearCookie: staleCookie,
        };
      }
      return { ok: true, principal: { kind: 'trusted', source } };
    }
    return { ok: false, status: 401, reason: 'an admin token or an admin client certificate is required from this address', clearCookie: staleCookie };
  }

  /** For long-lived responses (SSE): is this principal still admitted? */
  async stillValid(principal: Principal): Promise<boolean> {
    if (principal.kind === 'certificate') return principal.recheck();
    if (principal.kind !== 'token') return true;
    if (principal.session !== undefined && this.sessions.tokenHashOf(principal.session) === undefined) return false;
    return (await this.tokens.findByHash(principal.tokenHash)) !== undefined;
  }

  /** Logs in with a token text; the session id for the cookie, or undefined. */
  async login(token: string): Promise<string | undefined> {
    const record = await this.tokens.verify(token.trim());
    if (!record) return undefined;
    return this.sessions.open(hashToken(token.trim()));
  }
}

export function describePrincipal(p: Principal): string {
  switch (p.kind) {
    case 'trusted':
      return `this host (${p.source}), no credentials needed`;
    case 'token':
      return `admin token '${p.label}'`;
    case 'certificate':
      return `admin certificate '${p.name}'`;
  }
}
