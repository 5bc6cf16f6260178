// Test helpers for the ops parts: an OpsView over a status the test edits, and one HTTP request
// function that can pick its source address (to come from 127.0.0.2) and read SSE frames.
import http from 'node:http';
import https from 'node:https';
import type { OpsView, ShapingSnapshot } from '../../src/ops/view.ts';
import type { RelayStatus } from '../../src/relay/admin.ts';
import type { OpsStore } from '../../src/store/ops-store.ts';
import type { Store } from '../../src/store/store.ts';
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { type Cleanup, tempDir } from '../helpers/harness.ts';

/** A real SQLite store in a temporary directory, closed at cleanup. */
export async function sqliteStore(cleanup: Cleanup): Promise<Store> {
  const store = await openSqliteStore(join(tempDir(cleanup, 'ws-ops-'), 'store.sqlite'), { create: true });
  cleanup.add(() => store.close());
  return store;
}

/** A relay as the ops side sees it; the test changes `current`, `ready` and `buckets`. */
export class TestView implements OpsView {
  current: RelayStatus = {
    relay: { pid: process.pid, startedAt: new Date().toISOString(), listen: ['127.0.0.1:7443'], version: '1' },
    agents: [],
    tunnels: [],
    streams: [],
  };
  ready = true;
  buckets: ShapingSnapshot[] = [];
  statusFailure: Error | undefined;
  /** when set, /readyz asks this instead of the store */
  storeReachable: (() => Promise<void>) | undefined;

  constructor(readonly store: OpsStore) {}

  async status(): Promise<RelayStatus> {
    if (this.statusFailure) throw this.statusFailure;
    return structuredClone(this.current);
  }

  shaping(): ShapingSnapshot[] {
    return this.buckets.map((b) => ({ ...b }));
  }

  listening(): boolean {
    return this.ready;
  }
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string;
  /** source address to connect from (e.g. 127.0.0.2) */
  localAddress?: string;
  host?: string;
  /** HTTPS with these TLS options */
  tls?: https.RequestOptions;
}

export function request(port: number, options: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const lib = options.tls ? https : http;
    const req = lib.request(
      {
        host: options.host ?? '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers,
        localAddress: options.localAddress,
        agent: false,
        timeout: 10_000,
        ...options.tls,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Opens an SSE stream and collects `count` data frames (parsed JSON), then closes it. */
export function sseFrames(port: number, count: number, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const frames: unknown[] = [];
    const req = http.get({ host: '127.0.0.1', port, path: '/api/io/events', headers, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`SSE answered ${res.statusCode}`));
        return;
      }
      let buffer = '';
      res.setEncoding('utf8');
      res.on('end', () => {
        clearTimeout(timer);
        if (frames.length < count) reject(new Error(`the stream ended after ${frames.length} frames`));
      });
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n');
          if (data) frames.push(JSON.parse(data));
          if (frames.length >= count) {
            clearTimeout(timer);
            req.destroy();
            resolve(frames);
            return;
          }
        }
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`only ${frames.length} of ${count} SSE frames within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      if (frames.length < count) reject(err);
    });
  });
}
