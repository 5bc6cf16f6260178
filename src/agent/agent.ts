// The agent: runs on the private side, dials out to the relay over mutual TLS and serves HTTP/2
// on that connection (the relay asks, the agent connects to its local targets). It never
// listens on a port. Reconnects forever with jittered exponential backoff capped at 30 s and
// re-registers its tunnels each time. Checks the health of its targets on its own schedule
// (health.ts) and answers the relay's `GET /v1/health` from that.
// Owns: the outbound link and target connections. Must not: decide who may use a tunnel (the
// relay does), or expose anything not listed in its configuration.
import net from 'node:net';
import type tls from 'node:tls';
import http2 from 'node:http2';
import type { ServerHttp2Stream, IncomingHttpHeaders, ServerHttp2Session } from 'node:http2';
import type { Logger } from '../common/log.js';
import type { Identity } from '../pki/pem.js';
import type { Exposure } from './expose.js';
import { Backoff } from './backoff.js';
import { HealthMonitor, healthTargets } from './health.js';
import { splice, type SpliceHandle } from '../common/splice.js';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import { errorMessage } from '../common/errors.js';
import { dialRelay } from '../common/dial-relay.js';
import { DEFAULTS, h2Settings } from '../wire/defaults.js';
import {
  PATH_HELLO,
  PATH_REGISTRATION,
  PATH_HEALTH,
  PROTOCOL_VERSION,
  HEADER_REASON,
  HEADER_CODE,
  HEADER_USER,
  HEADER_SOURCE,
  parseTarget,
  headerSafe,
  type AgentHello,
  type Registration,
} from '../wire/protocol.js';

export interface AgentOptions {
  identity: Identity;
  relay: HostPort;
  exposures: Exposure[];
  log: Logger;
  /** Called after each registration (tests and the demo wait on it). */
  onRegistered?: (registration: Registration) => void;
  /** Run the targets' health checks (default true). */
  healthChecks?: boolean;
  /** Dial the relay from this local address (hidden `--source-address`). */
  localAddress?: string;
}

export class Agent {
  private readonly backoff = new Backoff({ initialMs: DEFAULTS.backoffInitialMs, maxMs: DEFAULTS.backoffMaxMs, jitter: DEFAULTS.backoffJitter });
  private readonly server: http2.Http2Server;
  private readonly streams = new Set<SpliceHandle>();
  private socket: tls.TLSSocket | undefined;
  private session: ServerHttp2Session | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private connectedAt = 0;
  /** the targets' health, served to the relay on `GET /v1/health` */
  readonly health: HealthMonitor;

  constructor(private readonly options: AgentOptions) {
    this.health = new HealthMonitor(healthTargets(options.healthChecks === false ? [] : options.exposures), options.log.child({ part: 'health' }));
    this.server = http2.createServer({ settings: h2Settings(), maxSessionMemory: DEFAULTS.maxSessionMemoryMb });
    this.server.on('session', (session) => {
      this.session = session;
      session.on('error', (err) => this.options.log.debug({ err: err.message }, 'relay session error'));
      session.once('connect', () => session.setLocalWindowSize(DEFAULTS.connectionWindow));
      session.on('goaway', (_code, _last, data) => {
        if (data && data.length > 0) this.options.log.warn({ reason: data.toString('utf8') }, 'relay closed the link');
      });
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  start(): void {
    this.health.start();
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const { identity, relay, log } = this.options;
    dialRelay(identity, relay, this.options.localAddress ? { localAddress: this.options.localAddress } : {}).then(
      (socket) => {
        if (this.stopped) {
          socket.destroy();
          return;
        }
        this.socket = socket;
        socket.setKeepAlive(true, DEFAULTS.tcpKeepAliveMs);
        socket.on('error', (err) => log.warn({ relay: formatHostPort(relay), err: err.message }, 'relay connection error'));
        socket.once('close', () => this.onClosed(socket));
        this.connectedAt = Date.now();
        log.info({ relay: formatHostPort(relay) }, 'connected to relay');
        this.server.emit('connection', socket);
        this.startPings();
      },
      (err: unknown) => {
        log.warn({ relay: formatHostPort(relay), err: errorMessage(err) }, 'relay connection failed');
        this.scheduleRetry();
      },
    );
  }

  private startPings(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      const session = this.session;
      if (!session || session.destroyed) return;
      const timer = setTimeout(() => {
        this.options.log.warn('relay did not answer a ping; reconnecting');
        this.socket?.destroy();
      }, DEFAULTS.pingTimeoutMs);
      if (!session.ping(() => clearTimeout(timer))) clearTimeout(timer);
    }, DEFAULTS.pingIntervalMs);
    this.pingTimer.unref();
  }

  private onClosed(socket: tls.TLSSocket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.session = undefined;
    if (this.pingTimer) clearInterval(this.pingTimer);
    for (const handle of this.streams) handle.destroy(new Error('relay link lost'));
    if (this.connectedAt && Date.now() - this.connectedAt > DEFAULTS.backoffResetAfterMs) this.backoff.reset();
    this.connectedAt = 0;
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.options.log.info({ inMs: delay, attempt: this.backoff.attempts }, 'reconnecting to relay');
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private hello(): AgentHello {
    return {
      version: PROTOCOL_VERSION,
      agent: this.options.identity.name,
      tunnels: this.options.exposures.map((e) => ({ name: e.name, port: e.target.port })),
    };
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const method = headers[':method'];
    if (method === 'GET' && headers[':path'] === PATH_HELLO) {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify(this.hello()));
      return;
    }
    if (method === 'GET' && headers[':path'] === PATH_HEALTH) {
      stream.respond({ ':status': 200, 'content-type': 'application/json', 'cache-control': 'no-store' });
      stream.end(JSON.stringify(this.health.report(this.options.identity.name)));
      return;
    }
    if (method === 'PUT' && headers[':path'] === PATH_REGISTRATION) {
      this.readRegistration(stream);
      return;
    }
    if (method === 'CONNECT') {
      this.openTarget(stream, headers);
      return;
    }
    stream.respond({ ':status': 400, [HEADER_REASON]: 'unknown request' }, { endStream: true });
  }

  private readRegistration(stream: ServerHttp2Stream): void {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= DEFAULTS.controlBodyMaxBytes) chunks.push(c);
    });
    stream.on('end', () => {
      stream.respond({ ':status': 204 }, { endStream: true });
      try {
        const registration = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Registration;
        for (const name of registration.accepted) this.options.log.info({ tunnel: name }, 'tunnel registered');
        for (const r of registration.refused) this.options.log.error({ tunnel: r.name, reason: r.reason }, 'tunnel refused by the relay');
        this.options.onRegistered?.(registration);
      } catch (err) {
        this.options.log.warn({ err: errorMessage(err) }, 'unreadable registration answer');
      }
    });
  }

  private openTarget(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const { log } = this.options;
    const target = parseTarget(String(headers[':authority'] ?? ''));
    const refuse = (status: number, code: string, reason: string): void => {
      log.warn({ tunnel: typeof target === 'string' ? undefined : target.tunnel, user: headers[HEADER_USER], code, reason }, 'stream refused');
      if (!stream.destroyed && !stream.headersSent) {
        stream.respond({ ':status': status, [HEADER_REASON]: headerSafe(reason), [HEADER_CODE]: code }, { endStream: true });
      }
    };
    if (typeof target === 'string') return refuse(400, 'WS_BAD_TARGET', target);
    const exposure = this.options.exposures.find((e) => e.name === target.tunnel);
    if (!exposure) return refuse(404, 'WS_NO_SUCH_TUNNEL', `this agent does not expose '${target.tunnel}'`);
    if (exposure.handler) return this.handOver(stream, headers, exposure.handler);
    const socket = net.connect({ host: exposure.target.host, port: exposure.target.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(
      () => socket.destroy(Object.assign(new Error(`no answer within ${DEFAULTS.targetConnectTimeoutMs / 1000} s`), { code: 'ETIMEDOUT' })),
      DEFAULTS.targetConnectTimeoutMs,
    );
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (stream.headersSent) return;
      log.warn({ tunnel: target.tunnel, target: formatHostPort(exposure.target), err: err.message }, 'target connection failed');
      const what = err.code === 'ECONNREFUSED' ? 'refused the connection' : `could not be reached (${err.code ?? err.message})`;
      refuse(502, 'WS_TARGET_REFUSED', `target refused: the service behind tunnel '${target.tunnel}' ${what}`);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      if (stream.destroyed) {
        socket.destroy();
        return;
      }
      stream.respond({ ':status': 200 });
      const handle = splice(stream, socket);
      this.streams.add(handle);
      log.debug({ tunnel: target.tunnel, user: headers[HEADER_USER], source: headers[HEADER_SOURCE] }, 'stream open');
      void handle.done.then(() => this.streams.delete(handle));
    });
  }

  // In-process exposures (the database relay's tunnel listeners): no target connection; the
  // handler owns the stream from here, including closing it.
  private handOver(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, handler: NonNullable<Exposure['handler']>): void {
    const meta = { user: String(headers[HEADER_USER] ?? ''), source: String(headers[HEADER_SOURCE] ?? '') };
    stream.respond({ ':status': 200 });
    try {
      handler(stream, meta);
    } catch (err) {
      this.options.log.error({ user: meta.user, err: errorMessage(err) }, 'in-process handler failed');
      stream.destroy();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const healthStopped = this.health.stop();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    for (const handle of this.streams) handle.destroy(new Error('agent stopping'));
    this.session?.close();
    this.socket?.end();
    const socket = this.socket;
    if (socket) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          socket.destroy();
          resolve();
        }, DEFAULTS.shutdownGraceMs);
        socket.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await healthStopped;
  }
}
