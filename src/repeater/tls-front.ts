// The TLS side of a `/ssl` listener: a tls.Server that never listens, fed the accepted sockets
// (so node:tls does the client-certificate bookkeeping: `authorized`), then stone's checks
// (ssl.ts decidePeer), then whatever pair the stone makes (TCP, TCP->UDP) through `start`.
// Pending handshakes are known by their raw socket (TLSSocket's `_parent`), so UNIX-socket
// clients, which have no address, work too.
// Owns: the handshake of accepted clients. Must not: accept, decide xhost access or relay.
import type net from 'node:net';
import tls from 'node:tls';
import { decidePeer, opensslReason, sslInfoLines, type SerialMemory } from './ssl.js';
import type { StoneLog } from './stone-log.js';
import type { SslOptions } from './types.js';

/** A `/ssl` listener: its context and -z set. */
export interface ListenerTls {
  readonly settings: SslOptions;
  readonly context: tls.SecureContextOptions;
  readonly memory: SerialMemory;
}

interface PendingHandshake {
  readonly fd: number;
  /** called with the secured socket and the client certificate's `\0`..`\9` */
  readonly start: (socket: tls.TLSSocket, matches: readonly (string | undefined)[]) => void;
}

export class TlsFront {
  private readonly server: tls.Server;
  private readonly pending = new Map<net.Socket, PendingHandshake>();

  constructor(
    private readonly listenerTls: ListenerTls,
    private readonly log: StoneLog,
    private readonly listenFd: number,
  ) {
    const o = listenerTls.settings;
    const context = tls.createSecureContext(listenerTls.context);
    this.server = tls.createServer({
      ...listenerTls.context,
      requestCert: o.verify !== 'none',
      rejectUnauthorized: false,
      allowHalfOpen: true,
      ...(o.sni && o.serverName !== undefined
        ? {
            // stone's servername callback: a ClientHello naming another server is refused
            SNICallback: (name: string, done: (err: Error | null, ctx?: tls.SecureContext) => void) => {
              if (name === o.serverName) done(null, context);
              else done(new Error(`servername ${name} is not ${o.serverName ?? ''}`));
            },
          }
        : {}),
    });
    this.server.on('secureConnection', (socket: tls.TLSSocket) => this.secured(socket));
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.failed(err, socket));
  }

  private line(fd: number, text: string): void {
    this.log.message(`${this.listenFd} TCP ${fd}: ${text}`);
  }

  /** Starts the handshake on an accepted (paused) client. */
  handshake(client: net.Socket, fd: number, start: PendingHandshake['start']): void {
    this.pending.set(client, { fd, start });
    client.once('close', () => this.pending.delete(client));
    this.server.emit('connection', client);
    client.resume();
  }

  private take(socket: tls.TLSSocket): PendingHandshake | undefined {
    const raw = (socket as unknown as { _parent?: net.Socket | null })._parent;
    if (!raw) return undefined;
    const found = this.pending.get(raw);
    this.pending.delete(raw);
    return found;
  }

  private failed(err: Error, socket: tls.TLSSocket): void {
    const p = this.take(socket);
    socket.destroy();
    if (!p) return;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE' || /socket disconnected|socket hang up/i.test(err.message)) {
      if (this.log.debug > 0) this.line(p.fd, 'SSL_accept shutdowned by peer sf=0 errno=0');
    } else {
      this.line(p.fd, `SSL_accept lib ${opensslReason(err)}`);
    }
  }

  private secured(socket: tls.TLSSocket): void {
    const p = this.take(socket);
    if (!p) {
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    const verdict = decidePeer(socket, this.listenerTls.settings, this.listenerTls.memory, (text) => this.line(p.fd, text));
    if (!verdict.ok) {
      for (const m of verdict.messages) this.line(p.fd, m);
      socket.destroy();
      return;
    }
    if (this.listenerTls.settings.verbose > 0) for (const l of sslInfoLines(socket)) this.log.message(l);
    socket.pause();
    p.start(socket, verdict.matches);
  }
}
