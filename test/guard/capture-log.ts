// A pino logger whose JSON lines the test can read back: for asserting what the guard and the
// relay tell the admin without spawning a process.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export interface CapturedLog {
  log: Logger;
  lines(): Array<Record<string, unknown>>;
}

export function captureLog(): CapturedLog {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out.push(chunk.toString());
      done();
    },
  });
  return {
    log: pino({ level: 'debug' }, sink),
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
