// Target health checks: the `check:` config (and its errors with file, line and field), the
// rise/fall state machine, each probe kind against real services on loopback (a TCP listener
// that comes and goes, a chat server that answers, answers wrongly or says nothing, an HTTP
// server answering 200 or 500), and the monitor's transitions and report.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, tempDir, freePort } from '../helpers/harness.ts';
import { loadAgentConfig, parseExpose } from '../../src/agent/expose.ts';
import { parseDuration, checkFromInput, defaultCheck, HEALTH_DEFAULTS, type HealthCheckSpec } from '../../src/agent/health-config.ts';
import { HealthState } from '../../src/agent/health-state.ts';
import { probe } from '../../src/agent/health-checks.ts';
import { HealthMonitor, healthTargets } from '../../src/agent/health.ts';
import { parseHealthReport } from '../../src/wire/protocol.ts';
import { silentLogger } from '../../src/common/log.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const dir = tempDir(cleanup);

function config(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const fast = (kind: Partial<HealthCheckSpec> & Pick<HealthCheckSpec, 'kind'>, rise = 1, fall = 1): HealthCheckSpec =>
  ({ everyMs: 100, timeoutMs: 1_000, rise, fall, ...kind }) as HealthCheckSpec;

/** A TCP listener on loopback that can be closed and reopened on the same port. */
async function listener(handler: (socket: net.Socket) => void = (s) => s.end()): Promise<{ port: number; close(): Promise<void>; open(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const port = await freePort();
  const open = (): Promise<void> =>
    new Promise((resolve, reject) => {
      server = net.createServer((s) => {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => sockets.delete(s));
        handler(s);
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });
  await open();
  cleanup.add(close);
  return { port, close, open };
}

test('durations: ms, s, m, h and bare seconds', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('5s'), 5_000);
  assert.equal(parseDuration('1.5s'), 1_500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('7'), 7_000);
  assert.equal(parseDuration(3), 3_000);
  assert.equal(parseDuration('5 sec'), undefined);
  assert.equal(parseDuration('-1s'), undefined);
  assert.equal(parseDuration('0s'), undefined);
});

test('check: blocks become specs; the short form keeps the default TCP check', () => {
  const path = config(
    'health.yaml',
    [
      'relay: r:1',
      'expose:',
      '  plain: 127.0.0.1:22',
      '  web:',
      '    target: 127.0.0.1:8080',
      '    check: { every: 5s, http: { path: /healthz, status: 200, host: web.internal } }',
      '  chat:',
      '    target: 127.0.0.1:7000',
      '    check:',
      '      send: "PING\\r\\n"',
      '      expect: "^\\\\+?PONG"',
      '      regex: true',
      '      rise: 3',
      '      fall: 4',
      '  steps:',
      '    target: 127.0.0.1:25',
      '    check: { chat: [ { expect: "220 " }, { send: "QUIT\\r\\n" }, { expect: "221" } ], timeout: 2s }',
      '  quiet:',
      '    target: 127.0.0.1:9',
      '    check: false',
      '  tcp:',
      '    target: 127.0.0.1:10',
      '    check: { tcp: true, every: 1m }',
    ].join('\n'),
  );
  const exposures = loadAgentConfig(path).exposures;
  const byName = new Map(exposures.map((e) => [e.name, e]));
  assert.deepEqual(exposures.map((e) => e.name), ['plain', 'web', 'chat', 'steps', 'quiet', 'tcp']);
  assert.equal(byName.get('plain')?.check, undefined);
  assert.deepEqual(healthTargets(exposures)[0]?.check, defaultCheck());
  assert.deepEqual(byName.get('web')?.check, { kind: 'http', path: '/healthz', status: 200, host: 'web.internal', everyMs: 5_000, timeoutMs: 5_000, rise: 2, fall: 2 });
  assert.deepEqual(byName.get('web')?.target, { host: '127.0.0.1', port: 8080 });
  const chat = byName.get('chat')?.check;
  assert.ok(chat && chat.kind === 'chat');
  assert.deepEqual(chat.steps[0], { send: 'PING\r\n' });
  const expect = chat.steps[1];
  assert.ok(expect && 'expect' in expect && expect.expect instanceof RegExp);
  assert.ok(expect.expect.test('+PONG'));
  assert.equal(chat.rise, 3);
  assert.equal(chat.fall, 4);
  const steps = byName.get('steps')?.check;
  assert.ok(steps && steps.kind === 'chat');
  assert.deepEqual(steps.steps, [{ expect: '220 ' }, { send: 'QUIT\r\n' }, { expect: '221' }]);
  assert.equal(steps.timeoutMs, 2_000);
  assert.equal(byName.get('quiet')?.check?.kind, 'off');
  assert.equal(byName.get('tcp')?.check?.everyMs, 60_000);
  // the default: a timeout never longer than the interval
  assert.equal(checkFromInput({ every: '2s' }).timeoutMs, 2_000);
  assert.equal(checkFromInput({}).timeoutMs, HEALTH_DEFAULTS.timeoutMs);
  // --expose on the command line has no check block: the default applies
  assert.equal(parseExpose('x=127.0.0.1:1').check, undefined);
});

test('check: errors name the file, the line and the field', () => {
  const cases: Array<[string, RegExp, RegExp]> = [
    ['    check: { every: soon }\n', /:5: expose\.web\.check\.every: /, /not a duration/],
    ['    check: { every: 500ms }\n', /:5: expose\.web\.check\.every: /, /out of range/],
    ['    check:\n      every: 5s\n      timeout: 10s\n', /:7: expose\.web\.check\.timeout: /, /not be longer than every/],
    ['    check:\n      send: "x"\n      http: { path: / }\n', /:7: expose\.web\.check\.http: /, /choose one kind/],
    ['    check:\n      expect: "(["\n      regex: true\n', /:6: expose\.web\.check\.expect: /, /regular expression/],
    ['    check:\n      http: { status: 999 }\n', /:6: expose\.web\.check\.http\.status: /, /./],
    ['    check:\n      htp: { }\n', /:6: expose\.web\.check\.htp: /, /./],
    ['    chek: { }\n', /:5: expose\.web\.chek: /, /./],
    ['    check: { regex: true }\n', /:5: expose\.web\.check\.regex: /, /applies only to expect/],
  ];
  cases.forEach(([tail, where, what], i) => {
    const path = config(`bad-${i}.yaml`, `relay: r:1\nexpose:\n  web:\n    target: 127.0.0.1:80\n${tail}`);
    assert.throws(
      () => loadAgentConfig(path),
      (err: Error) => err.message.startsWith(path) && where.test(err.message) && what.test(err.message),
      `case ${i}: ${tail.trim()}`,
    );
  });
  const noTarget = config('no-target.yaml', 'relay: r:1\nexpose:\n  web:\n    check: { tcp: true }\n');
  assert.throws(() => loadAgentConfig(noTarget), (err: Error) => /:3: expose\.web\.target: /.test(err.message));
  const list = config('list.yaml', 'relay: r:1\nexpose:\n  web: [1, 2]\n');
  assert.throws(() => loadAgentConfig(list), (err: Error) => /:3: expose\.web: expected HOST:PORT/.test(err.message));
});

test('state machine: the first probe decides; then rise/fall consecutive probes flip it', () => {
  const s = new HealthState(2, 3);
  const at = (n: number): Date => new Date(Date.UTC(2026, 0, 1, 0, 0, n));
  assert.equal(s.snapshot().state, 'unknown');
  assert.deepEqual(s.apply(true, 'ok', at(0)), { from: 'unknown', to: 'up', at: at(0), detail: 'ok' });
  // two failures are not enough with fall 3, and a success in between resets the count
  assert.equal(s.apply(false, 'refused', at(1)), undefined);
  assert.equal(s.apply(false, 'refused', at(2)), undefined);
  assert.equal(s.apply(true, 'ok', at(3)), undefined);
  assert.equal(s.apply(false, 'refused', at(4)), undefined);
  assert.equal(s.apply(false, 'refused', at(5)), undefined);
  assert.deepEqual(s.apply(false, 'refused', at(6)), { from: 'up', to: 'down', at: at(6), detail: 'refused' });
  assert.deepEqual(s.snapshot(), { state: 'down', since: at(6), checkedAt: at(6), detail: 'refused', streak: -3 });
  // a flapping target (good, bad, good, bad) stays down with rise 2
  for (let i = 0; i < 6; i++) assert.equal(s.apply(i % 2 === 0, i % 2 === 0 ? 'ok' : 'refused', at(7 + i)), undefined);
  assert.equal(s.apply(true, 'ok', at(20)), undefined);
  assert.deepEqual(s.apply(true, 'ok again', at(21)), { from: 'down', to: 'up', at: at(21), detail: 'ok again' });
  const first = new HealthState(5, 5);
  assert.equal(first.apply(false, 'refused', at(0))?.to, 'down');
});

test('tcp probe: a listener is up, a closed port is refused', async () => {
  const svc = await listener();
  const up = await probe({ host: '127.0.0.1', port: svc.port }, fast({ kind: 'tcp' }));
  assert.equal(up.ok, true, up.detail);
  assert.match(up.detail, /^connected in \d+ ms$/);
  await svc.close();
  const down = await probe({ host: '127.0.0.1', port: svc.port }, fast({ kind: 'tcp' }));
  assert.deepEqual(down, { ok: false, detail: 'connection refused' });
});

test('chat probe: answered, answered wrongly, silent, closed early, regex, over the read limit', async () => {
  const pong = await listener((s) => s.on('data', (d: Buffer) => (d.toString() === 'PING\r\n' ? s.write('+PO') && setTimeout(() => s.write('NG\r\n'), 20) : s.end('-ERR\r\n'))));
  const spec = (expect: string | RegExp, send = 'PING\r\n'): HealthCheckSpec => fast({ kind: 'chat', steps: [{ send }, { expect }], timeoutMs: 500 } as Partial<HealthCheckSpec> & { kind: 'chat' });
  const target = { host: '127.0.0.1', port: pong.port };
  const ok = await probe(target, spec('PONG'));
  assert.equal(ok.ok, true, ok.detail);
  assert.equal((await probe(target, spec(/^\+PONG\r\n$/))).ok, true, 'the regex sees the whole answer, split over two writes');
  const wrongSend = await probe(target, spec('PONG', 'HELLO\r\n'));
  assert.equal(wrongSend.ok, false);
  assert.match(wrongSend.detail, /closed before "PONG" \(got "-ERR\\r\\n"\)/);
  const silent = await listener(() => undefined);
  const quiet = await probe({ host: '127.0.0.1', port: silent.port }, spec('PONG'));
  assert.equal(quiet.ok, false);
  assert.match(quiet.detail, /no "PONG" within 500 ms/);
  const chatty = await listener((s) => s.write(Buffer.alloc(8_192, 0x41)));
  const limited = await probe({ host: '127.0.0.1', port: chatty.port }, spec('PONG'), 4_096);
  assert.deepEqual(limited, { ok: false, detail: 'no "PONG" in the first 4096 bytes' });
  // a banner first, then a command: a multi-step chat
  const smtp = await listener((s) => {
    s.write('220 ready\r\n');
    s.on('data', (d: Buffer) => d.toString().startsWith('QUIT') && s.end('221 bye\r\n'));
  });
  const steps = fast({ kind: 'chat', steps: [{ expect: '220 ' }, { send: 'QUIT\r\n' }, { expect: '221' }] } as Partial<HealthCheckSpec> & { kind: 'chat' });
  assert.equal((await probe({ host: '127.0.0.1', port: smtp.port }, steps)).ok, true);
  await pong.close();
  assert.deepEqual(await probe(target, spec('PONG')), { ok: false, detail: 'connection refused' });
});

test('http probe: 200 is up, 500 is down, the Host header is sent, a slow server times out', async () => {
  let status = 200;
  const hosts: string[] = [];
  const server = http.createServer((req, res) => {
    hosts.push(String(req.headers.host));
    if (req.url === '/slow') return; // never answers
    res.statusCode = req.url === '/healthz' ? status : 404;
    res.end('x'.repeat(100_000));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => {
    server.closeAllConnections();
    server.close();
  });
  const target = { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
  const spec = (path: string, host?: string): HealthCheckSpec =>
    fast({ kind: 'http', path, status: 200, timeoutMs: 500, ...(host ? { host } : {}) } as Partial<HealthCheckSpec> & { kind: 'http' });
  assert.deepEqual(await probe(target, spec('/healthz', 'web.internal')), { ok: true, detail: 'HTTP 200' });
  assert.equal(hosts.at(-1), 'web.internal');
  await probe(target, spec('/healthz'));
  assert.equal(hosts.at(-1), `127.0.0.1:${target.port}`);
  status = 500;
  assert.deepEqual(await probe(target, spec('/healthz')), { ok: false, detail: 'HTTP 500 (expected 200)' });
  assert.deepEqual(await probe(target, spec('/other')), { ok: false, detail: 'HTTP 404 (expected 200)' });
  assert.deepEqual(await probe(target, spec('/slow')), { ok: false, detail: 'no HTTP answer within 500 ms' });
});

test('monitor: transitions are logged once per change, the report follows the service', async () => {
  const svc = await listener();
  const closedPort = await freePort();
  const monitor = new HealthMonitor(
    [
      { name: 'svc', target: { host: '127.0.0.1', port: svc.port }, check: fast({ kind: 'tcp' }, 1, 2) },
      { name: 'gone', target: { host: '127.0.0.1', port: closedPort }, check: fast({ kind: 'tcp' }) },
      { name: 'off', target: { host: '127.0.0.1', port: closedPort }, check: fast({ kind: 'off' }) },
    ],
    silentLogger(),
  );
  const seen: string[] = [];
  let wake: (() => void) | undefined;
  monitor.onTransition((tunnel, t) => {
    seen.push(`${tunnel}:${t.from}->${t.to}`);
    wake?.();
  });
  const until = async (what: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!seen.includes(what)) {
      if (Date.now() > deadline) assert.fail(`no ${what} within 10 s; saw ${seen.join(', ')}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 200);
      });
    }
  };
  monitor.start();
  cleanup.add(() => monitor.stop());
  await until('svc:unknown->up');
  await until('gone:unknown->down');
  await svc.close();
  await until('svc:up->down');
  const report = parseHealthReport(JSON.stringify(monitor.report('box')));
  assert.ok(typeof report !== 'string', String(report));
  assert.equal(report.agent, 'box');
  const byTunnel = new Map(report.targets.map((t) => [t.tunnel, t]));
  assert.equal(byTunnel.get('svc')?.state, 'down');
  assert.equal(byTunnel.get('svc')?.detail, 'connection refused');
  assert.equal(byTunnel.get('svc')?.check, 'tcp');
  assert.equal(byTunnel.get('off')?.state, 'unknown');
  assert.equal(byTunnel.get('off')?.since, null);
  await svc.open();
  await until('svc:down->up');
  await monitor.stop();
  // one entry per change: many probes ran (every 100 ms), but only these transitions happened
  assert.deepEqual(seen.filter((s) => s.startsWith('svc:')), ['svc:unknown->up', 'svc:up->down', 'svc:down->up']);
  assert.deepEqual(seen.filter((s) => s.startsWith('gone:')), ['gone:unknown->down']);
  assert.equal(seen.filter((s) => s.startsWith('off:')).length, 0);
});

test('health reports: bad answers are refused with a reason', () => {
  assert.equal(parseHealthReport('nope'), 'health report is not JSON');
  assert.match(String(parseHealthReport(JSON.stringify({ version: 2, agent: 'a', now: new Date().toISOString(), targets: [] }))), /version 2/);
  assert.match(String(parseHealthReport(JSON.stringify({ version: 1, agent: 'a', now: 'x', targets: [] }))), /now/);
  const bad = (target: object): string => String(parseHealthReport(JSON.stringify({ version: 1, agent: 'a', now: new Date().toISOString(), targets: [target] })));
  assert.match(bad({ tunnel: 'we b', state: 'up', since: null, checkedAt: null }), /bad tunnel/);
  assert.match(bad({ tunnel: 'web', state: 'sideways', since: null, checkedAt: null }), /bad state/);
  assert.match(bad({ tunnel: 'web', state: 'up', since: 'yesterday', checkedAt: null }), /bad time/);
  const ok = parseHealthReport(JSON.stringify({ version: 1, agent: 'a', now: new Date().toISOString(), extra: 1, targets: [{ tunnel: 'web', check: 'tcp', state: 'up', since: null, checkedAt: null, detail: 'a\nb' }] }));
  assert.ok(typeof ok !== 'string');
  assert.equal(ok.targets[0]?.detail, 'a b');
});
