// Client-side helpers for tests that talk to a relay directly: the VPN-Warp text CONNECT path,
// the HTTP/2 path through RelayClient, raw TCP/TLS connections that misbehave on purpose, and
// reading the relay's pino JSON log lines. Real sockets on loopback, no mocks.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Cleanup, Proc } from './harness.ts';
import type { Identity } from '../../src/pki/pem.ts';
import { RelayClient } from '../../src/client/relay-client.ts';
import { silentLogger } from '../../src/common/log.ts';

export type LogLine = Record<string, unknown> & { msg?: string; code?: string; reason?: string };

/**
 * Every JSON line a process printed (non-JSON lines are skipped); with `since` (a length of
 * `proc.output()` taken earlier), only the lines printed after that point.
 */
export function logLines(proc: Proc, since = 0): LogLine[] {
  const out: LogLine[] = [];
  for (const line of proc.output().slice(since).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut in the middle of a write; the next poll sees it whole
    }
  }
  return out;
}

/**
 * Waits until the process has logged a line matching `predicate` (after `since`, a length of
 * `proc.output()` taken earlier); returns that line.
 */
export async function waitForLog(proc: Proc, predicate: (l: LogLine) => boolean, timeoutMs = 5_000, what = 'a matching log line', since = 0): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = logLines(proc, since).find(predicate);
    if (hit) return hit;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log so far:\n${proc.output().slice(-4000)}`);
    }
    await sleep(50);
  }
}

/** Waits until the process output matches `pattern` at least `count` times. */
export async function waitForCount(proc: Proc, pattern: RegExp, count: number, timeoutMs: number): Promise<void> {
  const global = new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : pattern.flags + 'g');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = proc.output().match(global)?.length ?? 0;
    if (n >= count) return;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${count}x ${String(pattern)} (seen ${n}); output:\n${proc.output().slice(-4000)}`);
    }
    await sleep(100);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface TlsOptions {
  host?: string;
  port: number;
  /** CA the client trusts for the relay's certificate */
  ca: string;
  /** client key and certificate; omit both to present no certificate */
  key?: string;
  cert?: string;
  ALPNProtocols?: string[];
}

/** A TLS connection that has finished its handshake (client side). */
export function tlsOpen(options: TlsOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: options.host ?? '127.0.0.1',
      port: options.port,
      ca: options.ca,
      ...(options.key ? { key: options.key } : {}),
      ...(options.cert ? { cert: options.cert } : {}),
      ...(options.ALPNProtocols ? { ALPNProtocols: options.ALPNProtocols } : {}),
      // certificates name 127.0.0.1 and ::1; a name check is not what these tests are about
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export interface TextAnswer {
  /** e.g. `HTTP/1.1 403 user 'bob' is not granted tunnel 'echo'` */
  statusLine: string;
  status: number;
  /** everything received (head and body) */
  text: string;
  /** the relay's view of this client, `127.0.0.1:PORT`, as it appears in the relay's `source` field */
  source: string;
  socket: tls.TLSSocket;
  /** bytes that followed the head (a 200 answer: the start of the stream) */
  rest: Buffer;
}

/**
 * The VPN-Warp text path: TLS without ALPN, `CONNECT target HTTP/1.1` and an empty line, then
 * the status line. For a refusal, waits until the relay closes and returns all it sent.
 */
export async function textConnect(options: TlsOptions & { target: string; timeoutMs?: number }): Promise<TextAnswer> {
  const socket = await tlsOpen({ ...options, ALPNProtocols: undefined });
  const source = formatSource(socket.localAddress, socket.localPort);
  socket.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`no answer to CONNECT ${options.target} within ${options.timeoutMs ?? 5_000} ms; got ${JSON.stringify(buf.toString('latin1'))}`)), options.timeoutMs ?? 5_000);
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      if (err) {
        socket.destroy();
        reject(err);
        return;
      }
      const text = buf.toString('latin1');
      const headEnd = text.indexOf('\r\n\r\n');
      const statusLine = text.split('\r\n')[0] ?? '';
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
      resolve({ statusLine, status, text, source, socket, rest: headEnd >= 0 ? buf.subarray(headEnd + 4) : Buffer.alloc(0) });
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const text = buf.toString('latin1');
      // a 200 answer leaves the connection open for the stream: return as soon as the head is in
      if (/^HTTP\/1\.[01] 200 /.test(text) && text.includes('\r\n\r\n')) finish();
    };
    socket.on('data', onData);
    socket.once('end', () => finish());
    socket.once('close', () => finish());
    socket.write(`CONNECT ${options.target} HTTP/1.1\r\n\r\n`);
  });
}

export function formatSource(address: string | undefined, port: number | undefined): string {
  const a = (address ?? '').replace(/^::ffff:/, '');
  return a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}

/** Writes `payload` and reads exactly as many bytes back (an echo service at the far end). */
export function echoOnce(stream: Duplex, payload: Buffer, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => done(new Error(`echo: ${got} of ${payload.length} bytes after ${timeoutMs} ms`)), timeoutMs);
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= payload.length) done();
    };
    const onEnd = (): void => done(new Error(`echo: stream ended after ${got} of ${payload.length} bytes`));
    const done = (err?: Error): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
    stream.resume(); // a reader before (readBytes) may have paused it
    stream.write(payload);
  });
}

/** A RelayClient with a silent logger. Call close() when done. */
export function relayClient(identity: Identity, port: number, host = '127.0.0.1'): RelayClient {
  return new RelayClient(identity, { host, port }, silentLogger());
}

/**
 * Opens `target` on a fresh HTTP/2 connection with `identity`, sends a payload through the stream
 * and checks it comes back (the relay serves and the tunnel echoes). Returns the bytes echoed.
 */
export async function h2EchoRoundTrip(identity: Identity, port: number, target = 'echo', host = '127.0.0.1'): Promise<Buffer> {
  const client = relayClient(identity, port, host);
  try {
    const stream = await client.open(target);
    const payload = Buffer.from(`round trip ${Date.now()} ${Math.random()}`);
    const back = await echoOnce(stream, payload);
    stream.end();
    if (!back.equals(payload)) throw new Error(`echo differs: sent ${payload.length} bytes, got ${JSON.stringify(back.toString('latin1').slice(0, 80))}`);
    return back;
  } finally {
    client.close();
  }
}

/** Opens `target` through the relay with a fresh client and returns the rejection (or fails if it opened). */
export async function h2OpenError(identity: Identity, port: number, target: string, timeoutMs = 8_000): Promise<Error & { code?: string; status?: number }> {
  const client = relayClient(identity, port);
  try {
    const outcome = await Promise.race([
      client.open(target).then(
        (stream) => {
          stream.destroy();
          return { opened: true as const };
        },
        (err: unknown) => ({ opened: false as const, err }),
      ),
      sleep(timeoutMs).then(() => ({ opened: false as const, err: new Error(`open(${target}) neither opened nor failed within ${timeoutMs} ms`), hung: true })),
    ]);
    if (outcome.opened) throw new Error(`open(${target}) succeeded, expected a refusal`);
    if ('hung' in outcome) throw outcome.err;
    return outcome.err as Error & { code?: string; status?: number };
  } finally {
    client.close();
  }
}

/** A raw TCP connection; resolves once connected. */
export function tcpOpen(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Resolves with the milliseconds until `socket` closes (or the timeout value + 1 if it does not).
 * Reads (and drops, unless someone else listens) whatever arrives meanwhile.
 */
export function closedWithin(socket: net.Socket, timeoutMs: number, since = Date.now()): Promise<number> {
  // a paused socket never reads the far end's FIN, so it would never see the close
  socket.resume();
  return new Promise((resolve) => {
    if (socket.destroyed && socket.closed) {
      resolve(Date.now() - since);
      return;
    }
    const timer = setTimeout(() => resolve(timeoutMs + 1), timeoutMs - (Date.now() - since));
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - since);
    });
  });
}

/** Collects everything a socket receives until it closes. */
export function collect(socket: net.Socket): { data: () => Buffer; closed: Promise<void> } {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { data: () => Buffer.concat(chunks), closed };
}

/** A service that first sends `tag`, then echoes: tells which of two services a stream reached. */
export async function taggedEcho(cleanup: Cleanup, tag: string): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write(tag);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

/** Reads exactly `n` bytes from a stream (or fails on end/timeout). */
export function readBytes(stream: Duplex, n: number, timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => done(new Error(`read ${got} of ${n} bytes in ${timeoutMs} ms`)), timeoutMs);
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= n) done();
    };
    const onEnd = (): void => done(new Error(`stream ended after ${got} of ${n} bytes`));
    const done = (err?: Error): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.pause(); // keep whatever comes next for the next reader
      if (err) reject(err);
      else {
        const all = Buffer.concat(chunks);
        if (all.length > n) stream.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.resume();
  });
}

/** A real ClientHello as Node's TLS client writes it (to replay at a relay byte for byte). */
export async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  try {
    return await new Promise<Buffer>((resolve) => {
      server.once('connection', (socket) => {
        socket.once('data', (chunk: Buffer) => {
          resolve(chunk);
          socket.destroy();
        });
      });
      const client = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false });
      client.on('error', () => undefined);
    });
  } finally {
    server.close();
  }
}
