// Helpers of the identity tests: processes running as `nobody` that hold a TCP or UNIX-socket
// connection open, listeners that hand over their accepted sockets, and the nobody account.
// Owns: test plumbing for test/identity. Must not: be imported by anything under src/.
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { startProgram, type Cleanup, type Proc } from '../helpers/harness.ts';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const needsRoot = isRoot ? false : 'needs root to start a process as nobody';

function account(name: string): { uid: number; gid: number } {
  const fields = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

export const NOBODY = isRoot ? account('nobody') : { uid: -1, gid: -1 };
export const NOGROUP_GID = isRoot ? Number(execFileSync('getent', ['group', 'nogroup'], { encoding: 'utf8' }).split(':')[2]) : -1;

// The client as nobody: connects, prints "connected <local port>", closes its end when a line
// "close" arrives on stdin (so nobody is the side that ends in TIME_WAIT), prints "closed".
const CLIENT = `
const net = require('node:net');
const [kind, a, b] = process.argv.slice(1);
const s = kind === 'unix' ? net.connect(a) : net.connect({ host: a, port: Number(b) });
s.on('connect', () => console.log('connected ' + (s.localPort ?? 0)));
s.on('error', (e) => { console.error('client error: ' + e.message); process.exit(3); });
s.on('close', () => console.log('closed'));
s.resume();
process.stdin.on('data', (d) => { if (String(d).includes('close')) s.end(); });
process.stdin.on('end', () => process.exit(0));
`;

export interface NobodyClient {
  proc: Proc;
  /** the client's local port (0 for a UNIX socket) */
  localPort: number;
  /** ends the client's side first and waits until its socket is closed */
  closeFirst(): Promise<void>;
}

/** Starts `node` as nobody:nogroup (no supplementary groups) connected to a TCP or UNIX listener. */
export async function nobodyClient(cleanup: Cleanup, target: { path: string } | { host: string; port: number }): Promise<NobodyClient> {
  const args = 'path' in target ? ['unix', target.path] : ['tcp', target.host, String(target.port)];
  const proc = startProgram(cleanup, 'setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', CLIENT, ...args]);
  const line = await proc.waitFor(/connected \d+/);
  return {
    proc,
    localPort: Number(line.split(' ')[1]),
    closeFirst: async () => {
      proc.child.stdin?.write('close\n');
      await proc.waitFor(/closed/);
    },
  };
}

/** A listener whose accepted sockets are handed out in order by next(). */
export interface Accepting {
  server: net.Server;
  port: number;
  next(): Promise<net.Socket>;
}

export async function accepting(cleanup: Cleanup, listen: { host: string; port?: number; ipv6Only?: boolean } | { path: string }): Promise<Accepting> {
  const waiting: Array<(s: net.Socket) => void> = [];
  const ready: net.Socket[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    const w = waiting.shift();
    if (w) w(socket);
    else ready.push(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('path' in listen) server.listen(listen.path, () => resolve());
    else server.listen({ host: listen.host, port: listen.port ?? 0, ipv6Only: listen.ipv6Only ?? false }, () => resolve());
  });
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : 0,
    next: () => {
      const s = ready.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/** Writes `text` to host:port and collects what comes back until the far end closes or `ms` pass. */
export function talk(port: number, text: string | Buffer, options: { host?: string; ms?: number; halfClose?: boolean } = {}): Promise<{ reply: string; closedByPeer: boolean; elapsedMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect({ host: options.host ?? '127.0.0.1', port, allowHalfOpen: true });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ reply, closedByPeer: false, elapsedMs: Date.now() - started });
    }, options.ms ?? 2000);
    socket.on('connect', () => {
      socket.write(text);
      if (options.halfClose) socket.end();
    });
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ reply, closedByPeer: true, elapsedMs: Date.now() - started });
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
