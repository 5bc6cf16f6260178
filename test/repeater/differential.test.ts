// Differential test of src/repeater/dump.ts and logline.ts against Debian's real stone 2.4: run
// stone relaying a local echo server, drive fixed conversations through it, and compare its log
// (stderr, or the -L file) and -a file line by line, after normalise(), with the lines our
// formatters produce for the same events.
// Owns: this test. Must not: change the formatters' behaviour to fit a run; a mismatch is a bug.
//
// Determinism: the echo server answers a payload only once all of it has arrived, in one write,
// and the client sends the next payload only after the whole echo came back. stone reads at most
// -X bytes per read and never merges reads, so each direction is dumped in -X sized chunks
// (stoneChunks), and all `>` lines of a payload come before its `<` lines. The client always
// closes first, so teardown at -ddd runs in one order. stone's `lp:` loop counters are masked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, freePort, tempDir } from '../helpers/harness.ts';
import { converse, requireProgram, spawnProgram, type Program } from '../helpers/programs.ts';
import { sizedEcho } from './stone-runner.ts';
import { dumpStream, tcpDumpHead } from '../../src/repeater/dump.ts';
import {
  accountingLine,
  eventLine,
  logLine,
  linePrefix,
  normalise,
  parseServices,
  stoneAddrPort,
  stoneLogs,
  timevalNow,
  type StoneEvent,
} from '../../src/repeater/logline.ts';

const SERVICES = existsSync('/etc/services') ? parseServices(readFileSync('/etc/services', 'utf8')) : new Map<string, string>();
/** an address as stone prints it without -n: loopback numbers, the service name where one exists */
const addr = (host: string, port: number): string => stoneAddrPort(host, port, { serviceName: SERVICES.get(`${port}/tcp`) });

const TEXT = Buffer.from('GET / HTTP/1.0\r\nHost: example\r\n\r\nhello world\ttab \x1b[1mbold\x1b[0m caf\xc3\xa9\n', 'latin1');
const BINARY = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
/** 2500 bytes of text lines: longer than the default 1000-byte buffer, cut mid-line by it */
const LONG_TEXT = Buffer.from(
  Array.from({ length: 60 }, (_, i) => `line ${String(i).padStart(3, '0')}: the quick brown fox jumps over the lazy dog\n`)
    .join('')
    .slice(0, 2500),
  'latin1',
);
/** 1500 pseudo-random bytes (fixed seed): binary across a chunk boundary */
const LONG_BINARY = (() => {
  let x = 0x2545f491;
  return Buffer.from(Array.from({ length: 1500 }, () => ((x = (x * 1103515245 + 12345) >>> 0), x >>> 24)));
})();
/** lines past stone's 1014-character wrap and its 1023-byte line cut (needs -X above 1100) */
const TOO_LONG = [Buffer.from('A'.repeat(1100)), Buffer.from(`${'x'.repeat(500)}\x01${'y'.repeat(600)}\x02zzzz`, 'latin1')];

interface Spec {
  name: string;
  /** stone options before the pair (without -L/-a, added from the fields below) */
  flags: string[];
  debug: number;
  dumpMode: number;
  /** -X; undefined runs stone's default (1000) */
  xfer?: number;
  logFile?: boolean;
  accounting?: boolean;
  payloads: Buffer[];
}

const SPECS: Spec[] = [
  { name: 'default logging', flags: [], debug: 0, dumpMode: 0, payloads: [TEXT, BINARY] },
  { name: '-d', flags: ['-d'], debug: 1, dumpMode: 0, payloads: [TEXT] },
  { name: '-dd', flags: ['-dd'], debug: 2, dumpMode: 0, payloads: [TEXT] },
  { name: '-ddd (connect, EOF, close with byte counts)', flags: ['-ddd'], debug: 3, dumpMode: 0, payloads: [TEXT, LONG_TEXT] },
  { name: '-p', flags: ['-p', '-X', '1000'], xfer: 1000, debug: 0, dumpMode: 1, payloads: [TEXT, BINARY, LONG_TEXT, LONG_BINARY] },
  { name: '-pp to a -L file', flags: ['-pp', '-X', '1000'], xfer: 1000, logFile: true, debug: 0, dumpMode: 2, payloads: [TEXT, BINARY, LONG_TEXT, LONG_BINARY] },
  { name: '-ppp', flags: ['-ppp'], debug: 0, dumpMode: 3, payloads: [TEXT, BINARY, LONG_TEXT, LONG_BINARY] },
  { name: '-ddd -p together', flags: ['-ddd', '-p', '-X', '700'], xfer: 700, debug: 3, dumpMode: 1, payloads: [TEXT, LONG_TEXT] },
  { name: '-a accounting file', flags: [], accounting: true, debug: 0, dumpMode: 0, payloads: [TEXT] },
  { name: '-p -X 4000: long lines wrap and are cut to 1023 bytes', flags: ['-p', '-X', '4000'], xfer: 4000, debug: 0, dumpMode: 1, payloads: TOO_LONG },
];

/** An echo server that answers each expected payload in one write once all of it has arrived. */

async function poll(check: () => boolean, what: string, describe: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${describe()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Client {
  port: number;
  payloads: Buffer[];
}

/** One conversation: send each payload, wait for its whole echo, then close (client first). */
async function talk(listenPort: number, echo: { expect(size: number): void }, payloads: Buffer[]): Promise<Client> {
  const c = await converse(listenPort);
  const port = c.socket.localPort as number;
  let total = 0;
  for (let i = 0; i < payloads.length; i++) {
    const p = payloads[i] as Buffer;
    echo.expect(p.length);
    c.socket.write(p);
    total += p.length;
    const got = await c.waitForBytes(total);
    assert.ok(got.equals(Buffer.concat(payloads.slice(0, i + 1))), 'stone relayed the bytes unchanged');
  }
  c.socket.end();
  await c.ended;
  c.socket.destroy();
  return { port, payloads };
}

/** What stone should log for this spec, built only from our formatters. */
function expectedLog(spec: Spec, pid: number, threadId: string, echoPort: number, listenPort: number, clients: Client[]): string[] {
  const tv = timevalNow();
  const settings = { debug: spec.debug, dumpMode: spec.dumpMode };
  const [L, S, D, EP] = [3, 5, 6, 4];
  const lines: string[] = [];
  const log = (e: StoneEvent): void => {
    if (stoneLogs(e, settings)) lines.push(eventLine(tv, threadId, e));
  };
  log({ kind: 'start', pid });
  log({ kind: 'debugLevel', level: spec.debug });
  log({ kind: 'listen', listenFd: L, dst: addr('127.0.0.1', echoPort), src: addr('0.0.0.0', listenPort) });
  log({ kind: 'sslThreadLocks' });
  for (const client of clients) {
    const sent = client.payloads.reduce((n, p) => n + p.length, 0);
    log({ kind: 'accepted', listenFd: L, fd: S, from: addr('127.0.0.1', client.port), mode: spec.dumpMode });
    log({ kind: 'connecting', listenFd: L, sourceFd: S, destFd: D, to: addr('127.0.0.1', echoPort) });
    log({ kind: 'established', listenFd: L, sourceFd: S, destFd: D });
    if (spec.dumpMode > 0) {
      const prefix = linePrefix(tv, threadId);
      for (const p of client.payloads) {
        for (const direction of ['>', '<'] as const) {
          const head = tcpDumpHead({ listenFd: L, sourceFd: S, destFd: D, direction });
          for (const line of dumpStream(head, p, spec.dumpMode, spec.xfer ?? 1000)) lines.push(logLine(prefix, line));
        }
      }
    }
    // the client closes first; the echo server then closes; the destination reports hang-up
    log({ kind: 'eof', listenFd: L, fd: S });
    log({ kind: 'epoll', fd: D, epollFd: EP, events: 0x11 });
    log({ kind: 'eof', listenFd: L, fd: D });
    log({ kind: 'close', listenFd: L, fd: D, tx: sent, rx: sent, loops: 0 });
    log({ kind: 'close', listenFd: L, fd: S, tx: sent, rx: sent, loops: 0 });
  }
  log({ kind: 'exiting' });
  return lines;
}

function linesOf(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

for (const spec of SPECS) {
  test(`stone 2.4 vs formatters: ${spec.name}`, async (t) => {
    requireProgram('stone');
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const dir = tempDir(cleanup, 'ws-stone-diff-');
    const logFile = join(dir, 'stone.log');
    const accFile = join(dir, 'stone.acc');
    const echo = await sizedEcho(cleanup);
    const listenPort = await freePort();
    const args = [
      ...(spec.logFile ? ['-L', logFile] : []),
      ...(spec.accounting ? ['-a', accFile] : []),
      ...spec.flags,
      `127.0.0.1:${echo.port}`,
      String(listenPort),
    ];
    const stone: Program = spawnProgram(cleanup, 'stone', args);
    const readLog = (): string => (spec.logFile ? (existsSync(logFile) ? readFileSync(logFile, 'latin1') : '') : stone.stderr());
    const describe = (): string => `stone ${args.join(' ')}\n${readLog().slice(-4000)}`;
    await poll(() => / <- \S+$/m.test(readLog()), 'stone to listen', describe);

    const clients: Client[] = [];
    clients.push(await talk(listenPort, echo, spec.payloads));
    clients.push(await talk(listenPort, echo, [])); // connect, send nothing, close

    const pid = stone.child.pid as number;
    const threadId = /^\S+ +\d+ \S+ (\d+) /.exec(readLog())?.[1] ?? '0';
    const expected = expectedLog(spec, pid, threadId, echo.port, listenPort, clients);
    // everything but the exit line must be there before stone is stopped
    await poll(() => linesOf(readLog()).length >= expected.length - 1, `${expected.length - 1} log lines`, describe);
    stone.child.kill('SIGTERM');
    await stone.exited;

    const norm = (lines: string[]): string[] => lines.map((l) => normalise(l, { loops: true }));
    assert.deepEqual(norm(linesOf(readLog())), norm(expected), describe());
    if (spec.logFile) assert.equal(stone.stderr(), '', 'with -L nothing goes to stderr');

    if (spec.accounting) {
      const acc = linesOf(readFileSync(accFile, 'latin1'));
      const want = clients.map((c) =>
        accountingLine({ clock: Math.floor(Date.now() / 1000), port: listenPort, listenFd: 4, from: addr('127.0.0.1', c.port), fromHost: '127.0.0.1' }),
      );
      assert.deepEqual(norm(acc), norm(want));
    }
  });
}
