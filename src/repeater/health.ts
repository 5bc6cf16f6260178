// One `-b` health check, as stone 2.4's healthCheck() runs it: a TCP connect to the check
// address, then the `-s` chat in force when `-b` was given (send the bytes, read until the expect
// regex matches what arrived), all within `timeoutMs` (stone: the -b interval). The reply is read
// like stone reads it: as a C string (nothing after a NUL byte is seen) of which only the last
// 1024 bytes are kept once it passes 1024; the peer closing before a match is a failure.
// Owns: the check's socket, from connect to destroy. Must not: keep state between checks, decide
// what a failure means (failover.ts) or log (it returns stone's message for the caller to log).
import net from 'node:net';
import { errnoOf } from './tcp-relay.js';
import { toRegExp } from './escapes.js';
import type { Address } from './route.js';
import type { ChatStep } from './types.js';

/** stone keeps at most BUFMAX/2 bytes of a reply while it waits for a match */
const KEEP_BYTES = 1024;

export type HealthResult =
  | { readonly healthy: true }
  /** stone logs connect, send and recv failures (with errno) at any level; the others only at -ddddddddd */
  | { readonly healthy: false; readonly reason: 'connect' | 'send' | 'recv' | 'timeout' | 'mismatch'; readonly errno?: number };

/**
 * Runs one check. Failures carry errno so the caller can print stone's
 * `health check: connect ADDR getsockopt err=111`.
 */
export function healthCheck(address: Address, timeoutMs: number, chat: readonly ChatStep[]): Promise<HealthResult> {
  const expects = chat.map((s) => toRegExp(s.expect));
  return new Promise((resolve) => {
    let done = false;
    const socket =
      address.kind === 'unix' ? net.connect({ path: address.path }) : net.connect({ host: address.host, port: address.port, family: address.family });
    const finish = (result: HealthResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ healthy: false, reason: 'timeout' }), Math.max(1, timeoutMs));
    let connected = false;
    socket.on('error', (err) => {
      finish({ healthy: false, reason: connected ? 'recv' : 'connect', errno: errnoOf(err) });
    });
    socket.once('connect', () => {
      connected = true;
      void runChat();
    });
    let step = 0;
    let held = Buffer.alloc(0);
    const sendStep = (): void => {
      const current = chat[step];
      if (!current) {
        finish({ healthy: true });
        return;
      }
      held = Buffer.alloc(0);
      socket.write(Buffer.from(current.send.bytes), (err) => {
        if (err) finish({ healthy: false, reason: 'send', errno: errnoOf(err) });
      });
    };
    const runChat = (): void => {
      socket.on('data', (chunk: Buffer) => {
        const expect = expects[step];
        if (!expect) return;
        held = Buffer.concat([held, chunk]);
        const nul = held.indexOf(0);
        const text = (nul >= 0 ? held.subarray(0, nul) : held).toString('latin1');
        const matched = expect.test(text);
        if (held.length > KEEP_BYTES) held = held.subarray(held.length - KEEP_BYTES);
        if (!matched) return;
        step++;
        sendStep();
      });
      socket.once('end', () => finish({ healthy: false, reason: 'mismatch' }));
      sendStep();
    };
  });
}
