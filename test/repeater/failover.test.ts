// -b backups and -B balance groups of `warpstone stone` (src/repeater/failover.ts, health.ts)
// against Debian's real stone 2.4, with real services that the test stops and starts: which
// service receives each new connection (master, then the backup while the master fails its
// check, then the master again once it recovers; round robin over a group, skipping a member
// whose check fails), with and without a -s chat, and the -b/-B lines both log (`LB set`,
// `master ... backup ... interval`, `MinInterval`, `health check ... fail/success`; repeated
// `health check: connect ... err=111` lines collapsed, their count depends on timing).
// Owns: these tests. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { requireProgram, type Program } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { startRepeater, stopRepeater, until, waitListening, type Which } from './stone-runner.ts';

/**
 * A TCP service that can be stopped and started again on the same port. Plain mode: writes its
 * tag on connect. Chat mode: answers `OK <tag>` (or `ERR <tag>` when sick) to a line, then ends.
 */
class Service {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  sick = false;

  private constructor(
    readonly tag: string,
    readonly port: number,
    private readonly chat: boolean,
  ) {}

  static async start(cleanup: Cleanup, tag: string, chat = false): Promise<Service> {
    const s = new Service(tag, await freePort(), chat);
    await s.up();
    cleanup.add(() => s.down());
    return s;
  }

  async up(): Promise<void> {
    const server = net.createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      if (!this.chat) {
        socket.end(this.tag);
        return;
      }
      socket.once('data', () => socket.end(`${this.sick ? 'ERR' : 'OK'} ${this.tag}\r\n`));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** One connection through the repeater: the tag of the service that answered ('' = none). */
function whoAnswers(port: number, say?: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    const timer = setTimeout(() => socket.destroy(), 5000);
    socket.on('connect', () => {
      if (say !== undefined) socket.write(say);
    });
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got.trim().replace(/^(OK|ERR) /, ''));
    });
  });
}

/** The -b/-B lines, normalised, ports masked, runs of the same line collapsed. */
function failoverLines(p: Program, ports: Map<number, string>): string[] {
  const out: string[] = [];
  for (const raw of p.stderr().split('\n')) {
    let l = normalise(raw).replace(/^<TIME> <TID> /, '');
    if (!/^(LB set|master |MinInterval|health check)/.test(l)) continue;
    l = l.replace(/127\.0\.0\.1:(\d+)/g, (_m, port: string) => `127.0.0.1:${ports.get(Number(port)) ?? '<P>'}`);
    if (out.at(-1) !== l) out.push(l);
  }
  return out;
}

const logCount = (p: Program, re: RegExp): number => (p.stderr().match(new RegExp(re.source, 'gm')) ?? []).length;

interface Run {
  answers: string[];
  lines: string[];
}

async function backupRun(which: Which, chat: boolean): Promise<Run> {
  const cleanup = new Cleanup();
  try {
    const master = await Service.start(cleanup, 'master', chat);
    const backup = await Service.start(cleanup, 'backup', chat);
    const port = await freePort();
    const script = chat ? ['-s', 'HELO\\r\\n', '^OK', '--'] : [];
    const p = startRepeater(cleanup, which, ['-dd', ...script, '-b', '1', `127.0.0.1:${master.port}`, `127.0.0.1:${backup.port}`, `127.0.0.1:${master.port}`, String(port)]);
    await waitListening(p, 1);
    const say = chat ? 'HELO\r\n' : undefined;
    const answers: string[] = [await whoAnswers(port, say)];
    // the master fails: stopped (plain) or answering ERR to the chat
    if (chat) master.sick = true;
    else await master.down();
    await until(() => logCount(p, /health check \S+ fail$/) >= 1, `${which}: the failed check`, 15_000);
    answers.push(await whoAnswers(port, say), await whoAnswers(port, say));
    // and recovers
    if (chat) master.sick = false;
    else await master.up();
    await until(() => logCount(p, /health check \S+ success$/) >= 1, `${which}: the recovered check`, 15_000);
    answers.push(await whoAnswers(port, say));
    await stopRepeater(p);
    return { answers, lines: failoverLines(p, new Map([[master.port, 'M'], [backup.port, 'B']])) };
  } finally {
    await cleanup.run();
  }
}

for (const chat of [false, true]) {
  test(`-b: new connections go to the backup while the master fails its check${chat ? ' (a -s chat)' : ' (connect)'}, and back when it recovers; same as stone`, async () => {
    requireProgram('stone');
    const s = await backupRun('stone', chat);
    const w = await backupRun('warpstone', chat);
    assert.deepEqual(s.answers, ['master', 'backup', 'backup', 'master']);
    assert.deepEqual(w.answers, s.answers);
    assert.ok(s.lines.includes('master 127.0.0.1:M backup 127.0.0.1:B interval 1'), s.lines.join('\n'));
    assert.deepEqual(w.lines, s.lines);
  });
}

async function balanceRun(which: Which): Promise<Run> {
  const cleanup = new Cleanup();
  try {
    const [a, b, c, spare] = [await Service.start(cleanup, 'A'), await Service.start(cleanup, 'B'), await Service.start(cleanup, 'C'), await Service.start(cleanup, 'spare')];
    const port = await freePort();
    const member = (s: Service): string => `127.0.0.1:${s.port}`;
    const p = startRepeater(cleanup, which, ['-dd', '-b', '1', member(b), member(spare), '-B', member(a), member(b), member(c), '--', member(a), String(port)]);
    await waitListening(p, 1);
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) answers.push(await whoAnswers(port));
    await b.down();
    await until(() => logCount(p, /health check \S+ fail$/) >= 1, `${which}: B's failed check`, 15_000);
    for (let i = 0; i < 4; i++) answers.push(await whoAnswers(port));
    await b.up();
    await until(() => logCount(p, /health check \S+ success$/) >= 1, `${which}: B's recovered check`, 15_000);
    for (let i = 0; i < 3; i++) answers.push(await whoAnswers(port));
    await stopRepeater(p);
    return {
      answers,
      lines: failoverLines(
        p,
        new Map([
          [a.port, 'A'],
          [b.port, 'B'],
          [c.port, 'C'],
          [spare.port, 'S'],
        ]),
      ),
    };
  } finally {
    await cleanup.run();
  }
}

test('-B: round robin over the group, a member whose -b check fails is skipped until it recovers; same as stone', async () => {
  requireProgram('stone');
  const s = await balanceRun('stone');
  const w = await balanceRun('warpstone');
  assert.deepEqual(s.answers.slice(0, 6), ['A', 'B', 'C', 'A', 'B', 'C']);
  assert.ok(!s.answers.slice(6, 10).includes('B'), `B is skipped while failing: ${s.answers.join(' ')}`);
  assert.ok(s.answers.slice(10).includes('B'), `B is back: ${s.answers.join(' ')}`);
  assert.deepEqual(w.answers, s.answers);
  assert.ok(s.lines.includes('LB set: 127.0.0.1:A 127.0.0.1:B 127.0.0.1:C'), s.lines.join('\n'));
  assert.deepEqual(w.lines, s.lines);
});

test('-b with interval 0: the master counts as failed from the start and is never checked (stone\'s rule); same as stone', async () => {
  requireProgram('stone');
  const results: Run[] = [];
  for (const which of ['stone', 'warpstone'] as const) {
    const cleanup = new Cleanup();
    try {
      const [master, backup] = [await Service.start(cleanup, 'master'), await Service.start(cleanup, 'backup')];
      const port = await freePort();
      const p = startRepeater(cleanup, which, ['-dd', '-b', '0', `127.0.0.1:${master.port}`, `127.0.0.1:${backup.port}`, `127.0.0.1:${master.port}`, String(port)]);
      await waitListening(p, 1);
      const answers = [await whoAnswers(port), await whoAnswers(port)];
      await new Promise((r) => setTimeout(r, 1500));
      answers.push(await whoAnswers(port));
      await stopRepeater(p);
      results.push({ answers, lines: failoverLines(p, new Map([[master.port, 'M'], [backup.port, 'B']])) });
    } finally {
      await cleanup.run();
    }
  }
  const [s, w] = results as [Run, Run];
  assert.deepEqual(s.answers, ['backup', 'backup', 'backup']);
  assert.deepEqual(w, s);
});
