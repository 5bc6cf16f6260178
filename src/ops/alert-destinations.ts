// Where alerts go and how one delivery attempt runs:
// - webhook: HTTP(S) POST of the JSON body; any 2xx within 5 s is delivered; anything else
//   (3xx included: redirects are not followed, a moved hook should be reconfigured) is a
//   failure to retry. Its URL may hold a token, so logs show only scheme, host and port.
// - command: the program is spawned without a shell, the body on its stdin and the main fields
//   in WARPSTONE_ALERT_* variables; exit 0 within 10 s is delivered. It gets PATH, HOME, LANG and
//   TZ from the relay's environment and nothing else, so the relay's own settings do not leak.
// Owns: destination syntax (`--alert-webhook`, `--alert-command`) and one attempt per call.
// Must not: retry or schedule (alerts.ts does), or touch the store.
import http from 'node:http';
import https from 'node:https';
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError, WarpstoneError, errorMessage } from '../common/errors.js';
import { alertEnvironment, type AlertBody } from './alert-messages.js';

export const WEBHOOK_TIMEOUT_MS = 5_000;
export const COMMAND_TIMEOUT_MS = 10_000;
/** bytes of a webhook's answer or a command's stderr kept for the error message */
const ANSWER_KEEP_BYTES = 300;

/** One failed attempt; the message says why, for the log and the outbox's last_error. */
export class DeliveryFailed extends WarpstoneError {
  constructor(message: string) {
    super('WS_ALERT_DELIVERY', message);
  }
}

export interface AlertDestination {
  /** stored in each outbox row: "webhook:<url>" or "command:<absolute path>" */
  readonly id: string;
  /** safe for logs: no URL path, query or credentials */
  readonly label: string;
  /** one attempt; resolves when delivered, rejects with DeliveryFailed */
  deliver(body: AlertBody, payload: string): Promise<void>;
}

const printable = (buf: Buffer): string => buf.toString('utf8').replace(/[\x00-\x1f\x7f]+/g, ' ').trim().slice(0, ANSWER_KEEP_BYTES);

export class WebhookDestination implements AlertDestination {
  readonly id: string;
  readonly label: string;
  private readonly url: URL;

  constructor(text: string, private readonly timeoutMs = WEBHOOK_TIMEOUT_MS) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new UsageError(`--alert-webhook '${text}' is not a URL; write e.g. https://hooks.example.org/warpstone`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--alert-webhook '${url.protocol}' URLs are not supported; use http: or https:`);
    this.url = url;
    this.id = `webhook:${url.href}`;
    this.label = `webhook ${url.protocol}//${url.host}`;
  }

  deliver(body: AlertBody, payload: string): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const client = this.url.protocol === 'https:' ? https : http;
      const data = Buffer.from(payload, 'utf8');
      let settled = false;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.destroy();
        if (err) reject(err);
        else resolvePromise();
      };
      const request = client.request(this.url, {
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/json',
          'content-length': data.length,
          'user-agent': 'warpstone-alerts/1',
          'warpstone-alert-id': body.id,
          'warpstone-alert-kind': body.kind,
        },
      });
      const timer = setTimeout(() => finish(new DeliveryFailed(`no answer within ${this.timeoutMs / 1000} s`)), this.timeoutMs);
      request.once('error', (err: NodeJS.ErrnoException) => finish(new DeliveryFailed(err.code === 'ECONNREFUSED' ? 'connection refused' : err.message)));
      request.once('response', (response) => {
        const status = response.statusCode ?? 0;
        const kept: Buffer[] = [];
        let size = 0;
        const settle = (): void => finish(status >= 200 && status < 300 ? undefined : new DeliveryFailed(`answered HTTP ${status}${size > 0 ? `: ${printable(Buffer.concat(kept))}` : ''}`));
        response.on('data', (chunk: Buffer) => {
          if (size < ANSWER_KEEP_BYTES) kept.push(chunk);
          size += chunk.length;
          if (size > 64 * 1024) settle();
        });
        response.once('end', settle);
        response.once('error', settle);
      });
      request.end(data);
    });
  }
}

export class CommandDestination implements AlertDestination {
  readonly id: string;
  readonly label: string;
  readonly path: string;

  constructor(text: string, private readonly timeoutMs = COMMAND_TIMEOUT_MS) {
    const path = resolve(text);
    try {
      if (!statSync(path).isFile()) throw new Error('not a regular file');
      accessSync(path, constants.X_OK);
    } catch (err) {
      throw new UsageError(`--alert-command '${text}' cannot be run: ${errorMessage(err)} (give the path of an executable file; it runs without a shell)`);
    }
    this.path = path;
    this.id = `command:${path}`;
    this.label = `command ${path}`;
  }

  deliver(body: AlertBody, payload: string): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const inherited: Record<string, string> = {};
      for (const key of ['PATH', 'HOME', 'LANG', 'TZ']) {
        const value = process.env[key];
        if (value !== undefined) inherited[key] = value;
      }
      const child = spawn(this.path, [], { stdio: ['pipe', 'ignore', 'pipe'], env: { ...inherited, ...alertEnvironment(body) }, shell: false });
      let settled = false;
      const stderr: Buffer[] = [];
      let stderrSize = 0;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolvePromise();
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(new DeliveryFailed(`did not finish within ${this.timeoutMs / 1000} s; killed`));
      }, this.timeoutMs);
      child.stderr.on('data', (chunk: Buffer) => {
        if (stderrSize < ANSWER_KEEP_BYTES) stderr.push(chunk);
        stderrSize += chunk.length;
      });
      child.once('error', (err) => finish(new DeliveryFailed(`cannot be started: ${err.message}`)));
      child.once('close', (code, signal) => {
        if (code === 0) return finish();
        const why = signal ? `was killed by ${signal}` : `exited with ${String(code)}`;
        finish(new DeliveryFailed(`${why}${stderrSize > 0 ? `: ${printable(Buffer.concat(stderr))}` : ''}`));
      });
      // A hook that does not read its stdin is fine: only its exit status counts.
      child.stdin.on('error', () => undefined);
      child.stdin.end(payload);
    });
  }
}

/** The destinations from the relay's flags; throws UsageError naming the bad one. */
export function parseDestinations(webhooks: readonly string[], commands: readonly string[]): AlertDestination[] {
  const all: AlertDestination[] = [...webhooks.map((w) => new WebhookDestination(w)), ...commands.map((c) => new CommandDestination(c))];
  const seen = new Set<string>();
  for (const d of all) {
    if (seen.has(d.id)) throw new UsageError(`alert destination given twice: ${d.label}`);
    seen.add(d.id);
  }
  return all;
}
