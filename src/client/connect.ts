// `warpstone connect`: a local listener whose every accepted connection becomes a stream to a
// tunnel, or (stdio mode) stdin/stdout joined to one stream for ssh's ProxyCommand.
// Owns: the user's local end. Must not: speak to agents directly.
import net from 'node:net';
import { Duplex } from 'node:stream';
import type { Logger } from '../common/log.js';
import type { RelayClient } from './relay-client.js';
import { splice, type SpliceHandle } from '../common/splice.js';
import { formatAddress, formatHostPort, type HostPort } from '../common/hostport.js';
import { errorCode, errorMessage } from '../common/errors.js';

export class LocalForwarder {
  private server: net.Server | undefined;
  private readonly handles = new Set<SpliceHandle>();
  address: HostPort | undefined;

  constructor(
    private readonly client: RelayClient,
    private readonly target: string,
    private readonly log: Logger,
  ) {}

  async listen(hp: HostPort): Promise<HostPort> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: hp.host, port: hp.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const a = server.address() as net.AddressInfo;
    this.server = server;
    this.address = { host: a.address, port: a.port };
    this.log.info({ listen: formatHostPort(this.address), tunnel: this.target }, 'forwarding local connections');
    return this.address;
  }

  private onConnection(socket: net.Socket): void {
    const source = formatAddress(socket.remoteAddress, socket.remotePort);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    this.client
      .open(this.target)
      .then((stream) => {
        if (socket.destroyed) {
          stream.destroy();
          return;
        }
        const handle = splice(socket, stream);
        this.handles.add(handle);
        void handle.done.then(() => this.handles.delete(handle));
      })
      .catch((err: unknown) => {
        this.log.warn({ source, tunnel: this.target, code: errorCode(err), reason: errorMessage(err) }, 'stream refused');
        socket.destroy();
      });
  }

  async close(): Promise<void> {
    const server = this.server;
    for (const h of this.handles) h.destroy(new Error('shutting down'));
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    this.client.close();
  }
}

/** Joins stdin/stdout to one stream; resolves when both directions are done. */
export async function connectStdio(client: RelayClient, target: string): Promise<void> {
  const stream = await client.open(target);
  const local = Duplex.from({ readable: process.stdin, writable: process.stdout });
  const handle = splice(local, stream);
  const result = await handle.done;
  client.close();
  if (result.error) throw result.error;
}
