// Shared by the database-protocol tests: run a real client program to completion, and a TCP
// proxy in front of a real server that records what each side sent.
import net from 'node:net';
import { execFile } from 'node:child_process';

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: options.timeoutMs ?? 15_000, encoding: 'utf8', env: { ...process.env, ...options.env } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Recorder {
  port: number;
  /** bytes each side sent, per accepted connection */
  connections: Array<{ client: Buffer[]; server: Buffer[] }>;
  close(): Promise<void>;
}

/** A TCP proxy in front of `upstreamPort` that records both directions; `rewrite` may alter the server's first chunk. */
export function recordingProxy(upstreamPort: number, rewrite?: (firstServerChunk: Buffer) => Buffer): Promise<Recorder> {
  const connections: Recorder['connections'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const record = { client: [] as Buffer[], server: [] as Buffer[] };
    connections.push(record);
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let first = true;
    client.on('data', (d: Buffer) => {
      record.client.push(Buffer.from(d));
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      const out = first && rewrite ? rewrite(d) : d;
      first = false;
      record.server.push(Buffer.from(out));
      client.write(out);
    });
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        connections,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
