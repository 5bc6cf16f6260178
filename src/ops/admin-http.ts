// The relay's admin HTTP listener (default 127.0.0.1:7444): Prometheus `/metrics`, `/healthz`
// (the process answers), `/readyz` (relay listeners bound and the store answering), the
// dashboard pages, the JSON they are made of, and the live I/O graph's event stream.
// It is fed only by the event bus and the read-only OpsView, so it cannot change the relay.
// Access (admin-access.ts): loopback without credentials by default, otherwise an admin token
// (Bearer header or a login cookie) or an admin client certificate over TLS. /healthz, /readyz,
// /login and the static files need no credentials; they reveal nothing about the relay's users.
// Bounds: request heads of 16 KiB and URLs of 2 KiB, form bodies of 4 KiB, timeouts on heads,
// requests and idle sockets, at most `maxConnections` sockets and `maxSseClients` streams.
// Owns: the listener, routing and response headers. Must not: write the store except through
// AdminTokens (lastUsedAt), or log tokens and cookies.
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../common/log.js';
import { StateError, errorMessage } from '../common/errors.js';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import type { AuditFilter, AuditKind } from '../store/ops-store.js';
import type { RelayEvents } from './events.js';
import type { OpsView } from './view.js';
import { OpsMetrics, type OpsMetricsOptions } from './metrics.js';
import { IoGraph, type IoGraphOptions } from './io-graph.js';
import { IoStream } from './io-stream.js';
import { AdminSessions, AdminTokens } from './admin-token.js';
import { AdminAccess, describePrincipal, isLoopback, normalizeAddress, type ClientCertificateCheck, type Principal } from './admin-access.js';
import { AUDIT_KINDS, agentPage, auditPage, errorPage, gatherOverview, loginPage, overviewPage, type Viewer } from './dashboard/pages.js';
import { DASHBOARD_CSS, DASHBOARD_JS } from './dashboard/client-script.js';

export const ADMIN_HTTP_DEFAULT: HostPort = { host: '127.0.0.1', port: 7444 };

export interface AdminHttpOptions {
  view: OpsView;
  events: RelayEvents;
  log: Logger;
  /** default 127.0.0.1:7444; port 0 picks a free one (tests) */
  listen?: HostPort;
  /** addresses admitted without credentials: "loopback" or IP literals (default ["loopback"]) */
  trusted?: string[];
  /** DNS names a trusted source may use in its Host header (IP literals and localhost always work) */
  allowedHosts?: string[];
  /** serve HTTPS; with `clientCertificate`, admin certificates are accepted as credentials */
  tls?: { key: string; cert: string; ca?: string; clientCertificate?: ClientCertificateCheck };
  metrics?: OpsMetricsOptions;
  ioGraph?: IoGraphOptions;
  maxConnections?: number;
  maxSseClients?: number;
  /** how often an open event stream re-checks its credentials (default 30 s) */
  sseRecheckMs?: number;
  /** time allowed for a request head (default 10 s) */
  headersTimeoutMs?: number;
  /** how long /readyz waits for the store (default 2 s) */
  storeCheckTimeoutMs?: number;
  /** told about every refused credential (for the relay's ban counting); never given the secret */
  onAuthFailure?: (source: string, reason: string) => void;
  /** clock for pages (tests) */
  now?: () => number;
}

const URL_MAX = 2048;
const FORM_MAX = 4096;

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

interface StaticFile {
  type: string;
  body: Buffer | undefined;
}

function loadStatic(log: Logger): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>([
    ['/static/dashboard.js', { type: 'text/javascript; charset=utf-8', body: Buffer.from(DASHBOARD_JS) }],
    ['/static/dashboard.css', { type: 'text/css; charset=utf-8', body: Buffer.from(DASHBOARD_CSS) }],
  ]);
  const require = createRequire(import.meta.url);
  for (const [name, type] of [
    ['uPlot.iife.min.js', 'text/javascript; charset=utf-8'],
    ['uPlot.min.css', 'text/css; charset=utf-8'],
  ] as const) {
    let body: Buffer | undefined;
    try {
      body = readFileSync(require.resolve(`uplot/dist/${name}`));
    } catch (err) {
      log.warn({ file: name, err: errorMessage(err) }, 'uPlot is not installed; the dashboard graphs will not draw');
    }
    files.set(`/static/${name}`, { type, body });
  }
  return files;
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class AdminHttp {
  readonly metrics: OpsMetrics;
  readonly io: IoGraph;
  private readonly stream: IoStream;
  private readonly access: AdminAccess;
  private readonly log: Logger;
  private readonly view: OpsView;
  private readonly staticFiles: Map<string, StaticFile>;
  private readonly cookieName: string;
  private readonly now: () => number;
  private readonly detachIo: () => void;
  private server: http.Server | https.Server | undefined;
  private bound: HostPort | undefined;

  constructor(private readonly options: AdminHttpOptions) {
    this.log = options.log;
    this.view = options.view;
    this.now = options.now ?? Date.now;
    this.metrics = new OpsMetrics(options.view, { log: options.log, ...options.metrics });
    this.metrics.attach(options.events);
    this.io = new IoGraph(options.ioGraph);
    this.detachIo = this.io.attach(options.events);
    this.stream = new IoStream(this.io, { maxClients: options.maxSseClients, recheckMs: options.sseRecheckMs });
    // "__Host-" binds the cookie to this origin, and browsers only accept it over HTTPS.
    this.cookieName = options.tls ? '__Host-ws_admin' : 'ws_admin';
    this.access = new AdminAccess(new AdminTokens(options.view.store), new AdminSessions(), {
      trusted: options.trusted,
      allowedHosts: options.allowedHosts,
      clientCertificate: options.tls?.clientCertificate,
      cookieName: this.cookieName,
    });
    this.staticFiles = loadStatic(options.log);
  }

  /** The bound address (after start). */
  address(): HostPort {
    if (!this.bound) throw new StateError('the admin listener is not started', 'WS_ADMIN_HTTP');
    return this.bound;
  }

  async start(): Promise<void> {
    const hp = this.options.listen ?? ADMIN_HTTP_DEFAULT;
    const serverOptions: http.ServerOptions = {
      maxHeaderSize: 16 * 1024,
      headersTimeout: this.options.headersTimeoutMs ?? 10_000,
      requestTimeout: Math.max(30_000, this.options.headersTimeoutMs ?? 0),
      keepAliveTimeout: 5_000,
      // how often those two timeouts are enforced (Node's default is every 30 s)
      connectionsCheckingInterval: 1_000,
    };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.handle(req, res);
    const tlsOptions = this.options.tls;
    const server = tlsOptions
      ? https.createServer(
          {
            ...serverOptions,
            key: tlsOptions.key,
            cert: tlsOptions.cert,
            ca: tlsOptions.ca,
            requestCert: tlsOptions.clientCertificate !== undefined,
            // the certificate is a credential, not a condition: without one, a token still works
            rejectUnauthorized: false,
            minVersion: 'TLSv1.2',
            handshakeTimeout: 10_000,
          },
          handler,
        )
      : http.createServer(serverOptions, handler);
    server.maxConnections = this.options.maxConnections ?? 64;
    // idle sockets close after a minute; the event stream writes every second, so it stays
    server.setTimeout(60_000, (socket) => socket.destroy());
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      const status =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      else socket.destroy();
      this.log.debug({ err: err.message, code: err.code }, 'admin HTTP client error');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? 'the address is already in use' : err.code === 'EACCES' ? 'permission denied' : err.message;
        reject(new StateError(`cannot listen for admin HTTP on ${formatHostPort(hp)}: ${why}`, 'WS_LISTEN'));
      });
      server.listen({ host: hp.host, port: hp.port }, () => {
        server.removeAllListeners('error');
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err: err.message }, 'admin HTTP listener error'));
    const a = server.address() as AddressInfo;
    this.bound = { host: a.address, port: a.port };
    this.server = server;
    this.stream.start();
    this.log.info({ listen: formatHostPort(this.bound), tls: Boolean(tlsOptions) }, 'admin HTTP listening');
    if (!tlsOptions && !isLoopback(this.bound.host)) {
      this.log.warn({ listen: formatHostPort(this.bound) }, 'admin HTTP listens beyond loopback without TLS: admin tokens and pages cross the network in clear');
    }
  }

  async stop(): Promise<void> {
    this.stream.stop();
    this.metrics.detach();
    this.detachIo();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...SECURITY_HEADERS, 'cache-control': 'no-store', ...extra };
  }

  private send(res: http.ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string | string[]> = {}): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status, { ...this.headers(), 'content-type': type, 'content-length': String(Buffer.byteLength(body)), ...extra });
    res.end(body);
  }

  private json(res: http.ServerResponse, value: unknown, status = 200): void {
    this.send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
  }

  private text(res: http.ServerResponse, status: number, body: string, extra: Record<string, string | string[]> = {}): void {
    this.send(res, status, 'text/plain; charset=utf-8', body, extra);
  }

  private page(res: http.ServerResponse, status: number, body: string, extra: Record<string, string | string[]> = {}): void {
    this.send(res, status, 'text/html; charset=utf-8', body, extra);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const source = normalizeAddress(req.socket.remoteAddress);
    try {
      await this.route(req, res, source);
    } catch (err) {
      if (err instanceof HttpFailure) {
        const extra: Record<string, string> = {};
        if (err.status === 405) extra.allow = 'GET, HEAD, POST';
        if (err.status === 413) extra.connection = 'close';
        this.text(res, err.status, `${err.message}\n`, extra);
        return;
      }
      this.log.error({ source, path: (req.url ?? '').slice(0, 200), err: errorMessage(err) }, 'admin HTTP request failed');
      this.text(res, 500, 'internal error; the relay log says more\n');
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, source: string): Promise<void> {
    const rawUrl = req.url ?? '/';
    if (rawUrl.length > URL_MAX) throw new HttpFailure(414, `URLs are limited to ${URL_MAX} characters`);
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') throw new HttpFailure(405, 'only GET, HEAD and POST are served');
    const url = new URL(rawUrl, 'http://admin.invalid');
    const path = url.pathname;

    // No credentials needed: liveness, readiness, the login form and static files.
    if (path === '/healthz') return this.onlyGet(method, () => this.text(res, 200, 'ok\n'));
    if (path === '/readyz') return this.onlyGet(method, () => this.readyz(res));
    // Browsers ask for it on their own; an empty answer keeps a 404 out of their consoles.
    if (path === '/favicon.ico') return this.onlyGet(method, () => this.send(res, 204, 'image/x-icon', Buffer.alloc(0), { 'cache-control': 'private, max-age=86400' }));
    const file = this.staticFiles.get(path);
    if (file) {
      return this.onlyGet(method, () => {
        if (!file.body) this.text(res, 404, 'not installed\n');
        else this.send(res, 200, file.type, file.body, { 'cache-control': 'private, max-age=300' });
      });
    }
    if (path === '/login') return method === 'POST' ? this.login(req, res, source) : this.onlyGet(method, () => this.page(res, 200, loginPage(undefined)));

    const decision = await this.access.decide(req);
    if (!decision.ok) {
      this.refuse(req, res, source, path, decision.status, decision.reason, decision.clearCookie);
      return;
    }
    const principal = decision.principal;
    const viewer: Viewer = { describe: describePrincipal(principal), session: principal.kind === 'token' && principal.session !== undefined };

    if (path === '/logout') {
      if (method !== 'POST') throw new HttpFailure(405, 'log out with POST');
      this.checkOrigin(req);
      if (principal.kind === 'token' && principal.session) this.access.sessions.close(principal.session);
      res.writeHead(303, { ...this.headers(), location: '/login', 'set-cookie': this.cookie('', 0), 'content-length': '0' });
      res.end();
      return;
    }
    if (method === 'POST') throw new HttpFailure(405, 'this path is read-only');

    if (path === '/') {
      this.page(res, 200, overviewPage(await gatherOverview(this.view, this.io, this.now()), viewer));
      return;
    }
    if (path.startsWith('/agents/')) {
      const name = decodeSegment(path.slice('/agents/'.length));
      this.page(res, 200, await agentPage(this.view, name, this.now(), viewer));
      return;
    }
    if (path === '/audit') {
      const filter = auditFilter(url.searchParams);
      this.page(res, 200, await auditPage(this.view, { ...filter, limit: filter.limit ?? 200 }, viewer));
      return;
    }
    if (path === '/metrics') {
      this.send(res, 200, this.metrics.contentType, await this.metrics.render());
      return;
    }
    if (path.startsWith('/api/')) {
      await this.api(path, url.searchParams, req, res, principal);
      return;
    }
    this.page(res, 404, errorPage(404, 'There is no such page.'));
  }

  private async api(path: string, query: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse, principal: Principal): Promise<void> {
    switch (path) {
      case '/api/status':
        return this.json(res, await this.view.status());
      case '/api/io': {
        const tunnel = query.get('tunnel');
        if (tunnel === null) return this.json(res, { seconds: this.io.seconds, tunnels: this.io.tunnels() });
        const series = this.io.series(tunnel, this.now());
        if (series) return this.json(res, series);
        // A tunnel the relay knows that has moved no byte yet has a graph of zeros (the page asks
        // for it as soon as it loads); only a name the relay does not know is a 404.
        const known = (await this.view.status()).tunnels.some((t) => t.name === tunnel);
        if (!known) return this.json(res, { error: 'no such tunnel' }, 404);
        return this.json(res, this.io.quietSeries(tunnel, this.now()));
      }
      case '/api/io/events': {
        if (req.method === 'HEAD') return this.text(res, 200, '');
        const ok = this.stream.subscribe(res, () => this.access.stillValid(principal), this.headers());
        if (!ok) this.text(res, 503, `at most ${this.stream.maxClients} live graphs at a time\n`, { 'retry-after': '10' });
        return;
      }
      case '/api/bans':
        return this.json(res, await this.view.store.listBans({ all: query.get('all') === '1', now: new Date(this.now()) }));
      case '/api/audit':
        return this.json(res, await this.view.store.queryAudit(auditFilter(query)));
      case '/api/health':
        return this.json(res, await this.view.store.listTargetHealth());
      case '/api/limits':
        return this.json(res, await this.view.store.listLimits());
      case '/api/shaping':
        return this.json(res, this.view.shaping?.() ?? []);
      case '/api/sightings': {
        const agent = query.get('agent');
        if (!agent || agent.length > 200) throw new HttpFailure(400, 'give ?agent=NAME');
        const since = query.get('since');
        const sinceDate = since ? new Date(since) : undefined;
        if (sinceDate && Number.isNaN(sinceDate.getTime())) throw new HttpFailure(400, 'since: not a date');
        return this.json(res, await this.view.store.listSightings(agent, sinceDate));
      }
      default:
        return this.json(res, { error: 'no such API' }, 404);
    }
  }

  private onlyGet(method: string, fn: () => void | Promise<void>): void | Promise<void> {
    if (method !== 'GET' && method !== 'HEAD') throw new HttpFailure(405, 'use GET');
    return fn();
  }

  private async readyz(res: http.ServerResponse): Promise<void> {
    if (!this.view.listening()) {
      this.text(res, 503, 'not ready: the relay listeners are not bound\n');
      return;
    }
    const timeoutMs = this.options.storeCheckTimeoutMs ?? 2_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      const probe = this.view.storeReachable ? this.view.storeReachable() : this.view.store.listLimits().then(() => undefined);
      await Promise.race([
        probe,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'readiness: the store is not reachable');
      this.text(res, 503, 'not ready: the store is not reachable\n');
      return;
    } finally {
      clearTimeout(timer);
    }
    this.text(res, 200, 'ready\n');
  }

  private refuse(req: http.IncomingMessage, res: http.ServerResponse, source: string, path: string, status: 401 | 403, reason: string, clearCookie: boolean): void {
    this.log.warn({ source, path: path.slice(0, 200), status, reason }, 'admin HTTP request refused');
    if (status === 401) this.options.onAuthFailure?.(source, reason);
    const extra: Record<string, string | string[]> = {};
    if (clearCookie) extra['set-cookie'] = this.cookie('', 0);
    const wantsPage = req.method !== 'POST' && !path.startsWith('/api/') && path !== '/metrics' && (req.headers.accept ?? '').includes('text/html');
    if (status === 401 && wantsPage) {
      res.writeHead(303, { ...this.headers(), ...extra, location: '/login', 'content-length': '0' });
      res.end();
      return;
    }
    if (status === 401) extra['www-authenticate'] = 'Bearer realm="warpstone admin"';
    this.text(res, status, `${reason}\n`, extra);
  }

  private cookie(value: string, maxAgeSeconds: number): string {
    return `${this.cookieName}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${this.options.tls ? '; Secure' : ''}`;
  }

  /** A browser's POST must come from this listener's own pages. */
  private checkOrigin(req: http.IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host === undefined || host !== req.headers.host) throw new HttpFailure(403, 'this form may only be sent from the admin pages themselves');
  }

  private async login(req: http.IncomingMessage, res: http.ServerResponse, source: string): Promise<void> {
    this.checkOrigin(req);
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') throw new HttpFailure(415, 'send the login form as application/x-www-form-urlencoded');
    const body = await readBody(req, FORM_MAX);
    const token = new URLSearchParams(body).get('token') ?? '';
    const session = await this.access.login(token);
    if (!session) {
      const reason = 'login with a wrong or revoked admin token';
      this.log.warn({ source, reason }, 'admin HTTP request refused');
      this.options.onAuthFailure?.(source, reason);
      this.page(res, 401, loginPage('That token is not valid: it is wrong, or it was revoked.'));
      return;
    }
    this.log.info({ source }, 'admin signed in with a token');
    res.writeHead(303, { ...this.headers(), location: '/', 'set-cookie': this.cookie(session, Math.floor(this.access.sessions.ttlMs / 1000)), 'content-length': '0' });
    res.end();
  }
}

function decodeSegment(text: string): string {
  try {
    const decoded = decodeURIComponent(text);
    if (decoded.length === 0 || decoded.length > 200) throw new HttpFailure(404, 'no such agent');
    return decoded;
  } catch (err) {
    if (err instanceof HttpFailure) throw err;
    throw new HttpFailure(400, 'the path is not valid percent-encoding');
  }
}

function auditFilter(query: URLSearchParams): AuditFilter & { limit?: number } {
  const filter: AuditFilter & { limit?: number } = {};
  const short = (name: string): string | undefined => {
    const v = query.get(name)?.trim();
    if (!v) return undefined;
    if (v.length > 100) throw new HttpFailure(400, `${name}: at most 100 characters`);
    return v;
  };
  const identity = short('identity');
  if (identity) filter.identity = identity;
  const tunnel = short('tunnel');
  if (tunnel) filter.tunnel = tunnel;
  const kind = short('kind');
  if (kind) {
    if (!(AUDIT_KINDS as readonly string[]).includes(kind)) throw new HttpFailure(400, `kind: one of ${AUDIT_KINDS.join(', ')}`);
    filter.kind = kind as AuditKind;
  }
  for (const name of ['since', 'until'] as const) {
    const v = short(name);
    if (v) {
      const d = new Date(v);
      if (Number.isNaN(d.getTime())) throw new HttpFailure(400, `${name}: not a date (ISO 8601, e.g. 2024-05-01T12:00:00Z)`);
      filter[name] = d;
    }
  }
  const limit = short('limit');
  if (limit) {
    if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000) throw new HttpFailure(400, 'limit: a whole number from 1 to 1000');
    filter.limit = Number(limit);
  }
  return filter;
}

function readBody(req: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > max) {
      reject(new HttpFailure(413, `the form is limited to ${max} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        // stop keeping it, drain the rest; the 413 goes out with `connection: close`
        req.removeAllListeners('data');
        req.resume();
        reject(new HttpFailure(413, `the form is limited to ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
