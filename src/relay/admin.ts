// The relay's local admin endpoint: HTTP on a UNIX socket in the home directory (mode 0600), so
// only the relay's owner can read live state. `warpstone status` reads GET /v1/status.
// Owns: the admin socket. Must not: change policy (the CLI writes the store for that).
import http from 'node:http';
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import type { Logger } from '../common/log.js';
import { StateError } from '../common/errors.js';
import type { ShapingSnapshot } from '../guard/throttle.js';

export interface RelayStatus {
  relay: { pid: number; startedAt: string; listen: string[]; version: string };
  agents: Array<{ name: string; address: string; connectedSince: string; tunnels: string[]; streams: number }>;
  tunnels: Array<{ name: string; agent: string; port: number; online: boolean; lastSeen: string }>;
  streams: Array<{ id: number; user: string; agent: string; tunnel: string; source: string; via: string; openedAt: string; bytesIn: number; bytesOut: number }>;
  /** one entry per bandwidth limit: credits, allowed and measured rates, state (absent from old relays) */
  shaping?: ShapingSnapshot[];
}

export class AdminSocket {
  private server: http.Server | undefined;

  constructor(
    private readonly path: string,
    private readonly status: () => Promise<RelayStatus>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    if (existsSync(this.path)) {
      // Either a live relay with this home (refuse: two relays on one home would fight over
      // the store and the socket) or one that died and left its socket behind (remove it).
      const live = await fetchStatus(this.path, 1_000).catch(() => undefined);
      if (live) {
        throw new StateError(`another relay (pid ${live.relay.pid}) is already running with this home; stop it first`, 'WS_RELAY_RUNNING');
      }
      unlinkSync(this.path);
    }
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/v1/status') {
        this.status()
          .then((s) => {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify(s));
          })
          .catch((err: unknown) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(String(err));
          });
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    chmodSync(this.path, 0o600);
    this.server = server;
    this.log.debug({ path: this.path }, 'admin socket listening');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
  }
}

export function fetchStatus(path: string, timeoutMs = 3_000): Promise<RelayStatus> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: path, path: '/v1/status', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as RelayStatus);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('relay admin socket did not answer')));
    req.on('error', reject);
  });
}
