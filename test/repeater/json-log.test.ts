// `warpstone stone --json` (src/repeater/json-log.ts, StoneLog's JSON mode): one JSON object per
// log, dump and -a line, carrying the same text as the classic format (checked against a text
// run of the same conversation) plus the event's fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, exchange, freePort, tempDir } from '../helpers/harness.ts';
import { isoMicro, jsonAccountingLine, jsonDumpLine, jsonEventLine, jsonMessageLine } from '../../src/repeater/json-log.ts';
import { accountingLine, normalise } from '../../src/repeater/logline.ts';
import { ownOptions } from '../../src/cli/stone.ts';
import { startRepeater, stopRepeater, until, waitListening } from './stone-runner.ts';

const T = { sec: 1700000000, usec: 42 };

test('JSON lines: time with microseconds, the event and its fields, and stone\'s message text', () => {
  assert.equal(isoMicro(T), '2023-11-14T22:13:20.000042Z');
  assert.deepEqual(JSON.parse(jsonEventLine(T, 7, { kind: 'close', listenFd: 3, fd: 5, tx: 10, rx: 12, loops: 2 })), {
    time: '2023-11-14T22:13:20.000042Z',
    pid: 7,
    event: 'close',
    listenFd: 3,
    fd: 5,
    tx: 10,
    rx: 12,
    loops: 2,
    message: '3 TCP 5: close tx:10 rx:12 lp:2',
  });
  assert.deepEqual(JSON.parse(jsonMessageLine(T, 7, 'health check 127.0.0.1:80 fail')), { time: '2023-11-14T22:13:20.000042Z', pid: 7, message: 'health check 127.0.0.1:80 fail' });
  const dump = JSON.parse(jsonDumpLine(T, 7, '3 5>6', ' caf\xe9<0a>')) as Record<string, string>;
  assert.equal(dump.event, 'dump');
  assert.equal(dump.message, '3 5>6 caf\xe9<0a>', 'bytes as Latin-1 code points');
  const e = { clock: 1700000000, port: 8080, listenFd: 3, from: '127.0.0.1:5000', fromHost: '127.0.0.1' };
  assert.deepEqual(JSON.parse(jsonAccountingLine(T, 7, e)), { time: '2023-11-14T22:13:20.000042Z', pid: 7, event: 'accounting', ...e, message: accountingLine(e) });
  assert.match(accountingLine(e), / 8080\[3\] 127\.0\.0\.1:5000\[127\.0\.0\.1\]$/);
});

test('ownOptions: only leading --json is warpstone\'s; the rest goes to the stone grammar untouched', () => {
  assert.deepEqual(ownOptions(['--json', '-d', 'a:1', '2']), { json: true, stoneArgs: ['-d', 'a:1', '2'] });
  assert.deepEqual(ownOptions(['-d', '--json']), { json: false, stoneArgs: ['-d', '--json'] });
});

/** Runs one conversation through `warpstone stone [--json] -ddd -p -a FILE`; the log lines and the -a lines. */
async function run(json: boolean): Promise<{ log: string[]; accounting: string[] }> {
  const cleanup = new Cleanup();
  try {
    const dir = tempDir(cleanup, 'ws-json-');
    const acc = join(dir, 'acc');
    const echo = await echoServer(cleanup);
    const port = await freePort();
    const p = startRepeater(cleanup, 'warpstone', [...(json ? ['--json'] : []), '-ddd', '-p', '-a', acc, `127.0.0.1:${echo}`, String(port)]);
    await waitListening(p, 1, () => (json ? p.stderr().split('\n').map((l) => (l ? (JSON.parse(l) as { message: string }).message : '')).join('\n') : p.stderr()));
    assert.equal((await exchange(port, Buffer.from('hello\n'))).toString(), 'hello\n');
    await until(() => (p.stderr().match(/close tx:/g) ?? []).length >= 2, 'the close lines');
    await stopRepeater(p);
    return { log: p.stderr().split('\n').filter((l) => l.length > 0), accounting: readFileSync(acc, 'utf8').split('\n').filter((l) => l.length > 0) };
  } finally {
    await cleanup.run();
  }
}

const PREFIX = 'Nov 23 11:10:14.275606 140552879386688 ';

test('warpstone stone --json: every line is one JSON object with the text the classic format prints', async () => {
  const text = await run(false);
  const json = await run(true);
  const parsed = json.log.map((l) => JSON.parse(l) as { time: string; pid: number; event?: string; message: string });
  for (const o of parsed) {
    assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.equal(typeof o.pid, 'number');
  }
  const norm = (l: string): string => normalise(l, { loops: true }).replace(/\[\d+\]$/, '[PID]').replace(/:\d{4,5}( |$)/g, ':<P>$1');
  assert.deepEqual(
    parsed.map((o) => norm(PREFIX + o.message)),
    text.log.map(norm),
  );
  assert.ok(parsed.some((o) => o.event === 'dump'), 'dump lines');
  assert.ok(parsed.some((o) => o.event === 'accepted'), 'events carry their kind');
  const acc = json.accounting.map((l) => JSON.parse(l) as { event: string; message: string });
  assert.equal(acc.length, 1);
  assert.equal(acc[0]?.event, 'accounting');
  const accNorm = (l: string): string => normalise(l).replace(/^<TIME> \d+\[/, '<TIME> <PORT>[').replace(/:\d+\[/, ':<P>[');
  assert.equal(accNorm(acc[0]?.message ?? ''), accNorm(text.accounting[0] ?? ''));
});
