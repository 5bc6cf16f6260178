// UDP peers for the repeater's UDP tests: an echo service that answers `re:<payload>` and records
// which source address and port each datagram came from (so a test can see stone's per-client
// origins), and a client that sends datagrams and waits for answers. Every socket is closed by
// the Cleanup.
import dgram from 'node:dgram';
import type { Cleanup } from '../helpers/harness.ts';

export interface Seen {
  readonly address: string;
  readonly port: number;
  readonly data: Buffer;
}

export interface UdpEcho {
  readonly port: number;
  readonly socket: dgram.Socket;
  /** every datagram received, in order */
  readonly seen: Seen[];
}

/** `re:` + payload back to the sender, from `127.0.0.1:<port>` (or ::1 for 'udp6'). */
export async function udpEcho(cleanup: Cleanup, type: 'udp4' | 'udp6' = 'udp4', port = 0): Promise<UdpEcho> {
  const socket = dgram.createSocket(type);
  const seen: Seen[] = [];
  socket.on('message', (data, from) => {
    seen.push({ address: from.address, port: from.port, data });
    socket.send(Buffer.concat([Buffer.from('re:'), data]), from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(port, type === 'udp6' ? '::1' : '127.0.0.1', resolve));
  cleanup.add(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return { port: socket.address().port, socket, seen };
}

export interface UdpClient {
  readonly port: number;
  send(data: Buffer | string, port: number, host?: string): void;
  /** the next datagram received, or undefined after `timeoutMs` */
  next(timeoutMs?: number): Promise<{ data: Buffer; port: number } | undefined>;
}

export async function udpClient(cleanup: Cleanup, type: 'udp4' | 'udp6' = 'udp4'): Promise<UdpClient> {
  const socket = dgram.createSocket(type);
  const queue: { data: Buffer; port: number }[] = [];
  const waiters: ((d: { data: Buffer; port: number }) => void)[] = [];
  socket.on('message', (data, from) => {
    const item = { data, port: from.port };
    const w = waiters.shift();
    if (w) w(item);
    else queue.push(item);
  });
  await new Promise<void>((resolve) => socket.bind(0, type === 'udp6' ? '::1' : '127.0.0.1', resolve));
  cleanup.add(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return {
    port: socket.address().port,
    send: (data, port, host = type === 'udp6' ? '::1' : '127.0.0.1') => socket.send(typeof data === 'string' ? Buffer.from(data) : data, port, host),
    next: (timeoutMs = 3000) => {
      const queued = queue.shift();
      if (queued) return Promise.resolve(queued);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          const at = waiters.indexOf(take);
          if (at >= 0) waiters.splice(at, 1);
          resolve(undefined);
        }, timeoutMs);
        function take(d: { data: Buffer; port: number }): void {
          clearTimeout(timer);
          resolve(d);
        }
        waiters.push(take);
      });
    },
  };
}

/** Sends `data` and waits for one answer (undefined when none came). */
export async function ask(client: UdpClient, data: Buffer | string, port: number, timeoutMs = 3000): Promise<Buffer | undefined> {
  client.send(data, port);
  return (await client.next(timeoutMs))?.data;
}
