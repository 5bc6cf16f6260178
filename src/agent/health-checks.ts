// One health probe against one target: TCP connect, a send/expect chat (stone's health check
// style) or an HTTP/1.1 GET with an expected status. Every probe has a deadline and reads a
// bounded number of bytes, and always closes its socket.
// Owns: running a single probe and describing its result. Must not: keep state between probes
// (health-state.ts does) or schedule anything (health.ts does).
import net from 'node:net';
import http from 'node:http';
import { formatHostPort, type HostPort } from '../common/hostport.js';
import { HEALTH_DEFAULTS, type ChatStep, type HealthCheckSpec } from './health-config.js';

export interface ProbeResult {
  ok: boolean;
  /** a short sentence for people: "connected in 2 ms", "HTTP 500 (expected 200)" */
  detail: string;
}

const printable = (text: string, max = 60): string => JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);

function failureText(err: NodeJS.ErrnoException): string {
  if (err.code === 'ECONNREFUSED') return 'connection refused';
  if (err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH') return `unreachable (${err.code})`;
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') return `name does not resolve (${err.code})`;
  if (err.code === 'ECONNRESET') return 'connection reset';
  return err.code ? `${err.code}: ${err.message}` : err.message;
}

function tcpProbe(target: HostPort, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect({ host: target.host, port: target.port });
    const done = (result: ProbeResult): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, detail: `no TCP connection within ${timeoutMs} ms` }), timeoutMs);
    socket.once('connect', () => done({ ok: true, detail: `connected in ${Date.now() - started} ms` }));
    socket.once('error', (err) => done({ ok: false, detail: failureText(err) }));
  });
}

function matches(expect: string | RegExp, text: string): boolean {
  return typeof expect === 'string' ? text.includes(expect) : expect.test(text);
}

/**
 * Runs the steps in order: `send` writes, `expect` reads until the text seen since the last
 * match contains the expectation (a substring, or a RegExp). Bytes are read as Latin-1 so any
 * byte sequence is matchable; at most `readLimit` bytes are read over the whole chat.
 */
function chatProbe(target: HostPort, steps: ChatStep[], timeoutMs: number, readLimit: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port });
    let finished = false;
    let step = 0;
    let seen = '';
    let total = 0;
    const done = (result: ProbeResult): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const waitingFor = (): string => {
      const s = steps[step];
      return s && 'expect' in s ? (typeof s.expect === 'string' ? printable(s.expect) : String(s.expect)) : 'nothing';
    };
    const timer = setTimeout(
      () => done({ ok: false, detail: step < steps.length ? `no ${waitingFor()} within ${timeoutMs} ms (got ${printable(seen)})` : `chat did not finish within ${timeoutMs} ms` }),
      timeoutMs,
    );
    const advance = (): void => {
      while (step < steps.length) {
        const s = steps[step] as ChatStep;
        if ('send' in s) {
          socket.write(Buffer.from(s.send, 'latin1'));
          step += 1;
          continue;
        }
        if (!matches(s.expect, seen)) return;
        seen = '';
        step += 1;
      }
      done({ ok: true, detail: `chat of ${steps.length} step${steps.length === 1 ? '' : 's'} answered` });
    };
    socket.once('connect', advance);
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length;
      seen += chunk.toString('latin1');
      if (total > readLimit) {
        done({ ok: false, detail: `no ${waitingFor()} in the first ${readLimit} bytes` });
        return;
      }
      advance();
    });
    socket.once('end', () => done({ ok: false, detail: `closed before ${waitingFor()} (got ${printable(seen)})` }));
    socket.once('error', (err) => done({ ok: false, detail: failureText(err) }));
  });
}

function httpProbe(target: HostPort, spec: { path: string; status: number; host?: string }, timeoutMs: number, readLimit: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let finished = false;
    const done = (result: ProbeResult): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      request.destroy();
      resolve(result);
    };
    const request = http.request({
      host: target.host,
      port: target.port,
      method: 'GET',
      path: spec.path,
      // a fresh connection each time: a pooled socket would hide a service that stopped accepting
      agent: false,
      headers: { host: spec.host ?? formatHostPort(target), 'user-agent': 'warpstone-health/1', connection: 'close' },
      maxHeaderSize: 16 * 1024,
    });
    const timer = setTimeout(() => done({ ok: false, detail: `no HTTP answer within ${timeoutMs} ms` }), timeoutMs);
    request.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, detail: failureText(err) }));
    request.once('response', (response) => {
      const status = response.statusCode ?? 0;
      const result: ProbeResult =
        status === spec.status ? { ok: true, detail: `HTTP ${status}` } : { ok: false, detail: `HTTP ${status} (expected ${spec.status})` };
      // The status decides; the body is read (and dropped) only so the server is not cut off
      // mid-write, and only up to the limit.
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > readLimit) done(result);
      });
      response.once('end', () => done(result));
      response.once('error', () => done(result));
    });
    request.end();
  });
}

/** Runs one probe of `spec` against `target`. Never rejects. */
export async function probe(target: HostPort, spec: HealthCheckSpec, readLimit: number = HEALTH_DEFAULTS.readLimitBytes): Promise<ProbeResult> {
  switch (spec.kind) {
    case 'tcp':
      return tcpProbe(target, spec.timeoutMs);
    case 'chat':
      return chatProbe(target, spec.steps, spec.timeoutMs, readLimit);
    case 'http':
      return httpProbe(target, spec, spec.timeoutMs, readLimit);
    case 'off':
      return { ok: true, detail: 'not checked' };
  }
}
