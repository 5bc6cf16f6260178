// Unit tests of src/repeater/failover.ts (the router and the check schedule, with a scripted
// checker and clock) and src/repeater/health.ts (one check against real local servers).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { Backup, HealthMonitor, Router, minimumInterval, routeStone, type FailoverLog } from '../../src/repeater/failover.ts';
import { healthCheck } from '../../src/repeater/health.ts';
import { parseExtendedRegex, parseSendString } from '../../src/repeater/escapes.ts';
import type { Address, Route } from '../../src/repeater/route.ts';
import type { BackupRule, ChatStep } from '../../src/repeater/types.ts';

const at = (port: number): Address => ({ kind: 'inet', host: '127.0.0.1', port, family: 4 });
const route = (port: number): Route => ({ address: at(port), printed: `127.0.0.1:${port}` });
const print = (a: Address): string => (a.kind === 'inet' ? `127.0.0.1:${a.port}` : a.path);

function rule(interval: number, master: number, backup: number, chat: ChatStep[] = []): BackupRule {
  const hp = (port: number) => ({ text: `127.0.0.1:${port}`, host: '127.0.0.1', port: { text: String(port), number: port }, ipv6: false });
  return { intervalSeconds: interval, master: hp(master), backup: hp(backup), check: hp(master), chat, position: { kind: 'argument', index: 0 } };
}

function backupOf(interval: number, master: number, backup: number): Backup {
  return new Backup(rule(interval, master, backup), at(master), at(backup), at(master), { master: `m${master}`, backup: `b${backup}`, check: `127.0.0.1:${master}` });
}

const port = (r: Route): number => (r.address.kind === 'inet' ? r.address.port : -1);

test('Router: one destination without a rule always goes there', () => {
  const r = new Router([route(1)], undefined, print);
  assert.deepEqual([r.next(), r.next()].map(port), [1, 1]);
});

test('Router: a failing master sends new connections to its backup and marks the rule used', () => {
  const b = backupOf(5, 1, 9);
  const r = new Router([route(1)], [b], print);
  assert.equal(port(r.next()), 1);
  assert.equal(b.used, 2, 'checks start once a connection went through the rule');
  b.failing = true;
  assert.equal(port(r.next()), 9);
  assert.equal(r.next().printed, '127.0.0.1:9');
  b.failing = false;
  assert.equal(port(r.next()), 1);
});

test('Router: round robin over a group skips failing members; all failing: the picked member\'s backup', () => {
  const bb = backupOf(5, 2, 9);
  const r = new Router([route(1), route(2), route(3)], [undefined, bb, undefined], print);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => port(r.next())), [1, 2, 3, 1, 2, 3]);
  bb.failing = true;
  assert.deepEqual([1, 2, 3, 4].map(() => port(r.next())), [1, 3, 1, 3]);
  const all = [backupOf(5, 1, 7), backupOf(5, 2, 8)];
  for (const b of all) b.failing = true;
  const r2 = new Router([route(1), route(2)], all, print);
  assert.deepEqual([1, 2, 3].map(() => port(r2.next())), [7, 8, 7], 'every member failing: round robin goes on over their backups (stone)');
});

test('routeStone: the newest group whose first member is the destination, the newest rule per member, stone\'s -dd lines', () => {
  const older = { group: { members: [], position: { kind: 'argument' as const, index: 0 } }, members: [at(1), at(5)], line: 'LB set: old' };
  const newer = { group: { members: [], position: { kind: 'argument' as const, index: 1 } }, members: [at(1), at(2)], line: 'LB set: new' };
  const other = { group: { members: [], position: { kind: 'argument' as const, index: 2 } }, members: [at(3), at(1)], line: 'LB set: other' };
  const newRule = backupOf(3, 2, 8);
  const oldRule = backupOf(4, 2, 9);
  const routing = routeStone(route(1), [other, newer, older], [newRule, oldRule], print);
  assert.equal(routing.groupLine, 'LB set: new');
  assert.deepEqual(routing.router.members.map(port), [1, 2]);
  assert.deepEqual(routing.backupLines, ['master m2 backup b8 interval 3']);
  assert.equal(newRule.used, 1);
  assert.equal(oldRule.used, 0);
  const plain = routeStone(route(4), [newer], [newRule], print);
  assert.equal(plain.groupLine, undefined);
  assert.equal(plain.router.backups, undefined);
});

test('minimumInterval: gcd of the positive intervals (stone\'s MinInterval)', () => {
  assert.equal(minimumInterval([{ intervalSeconds: 6 }, { intervalSeconds: 4 }, { intervalSeconds: 0 }]), 2);
  assert.equal(minimumInterval([{ intervalSeconds: 5 }]), 5);
  assert.equal(minimumInterval([{ intervalSeconds: -1 }]), 0);
});

class RecordingLog implements FailoverLog {
  readonly lines: string[] = [];
  constructor(readonly debug: number) {}
  message(text: string): void {
    this.lines.push(text);
  }
}

test('HealthMonitor: checks only used rules, each every interval; fail at -d, success at -dd, connect errors always', async () => {
  const used = backupOf(2, 1, 9);
  const unused = backupOf(1, 3, 9);
  used.used = 2;
  const log = new RecordingLog(2);
  let now = 100;
  const calls: number[] = [];
  let healthy = false;
  const monitor = new HealthMonitor([used, unused], log, async (a) => {
    calls.push(a.kind === 'inet' ? a.port : -1);
    return healthy ? { healthy: true } : { healthy: false, reason: 'connect', errno: 111 };
  }, () => now);
  assert.equal(monitor.minInterval, 1);
  const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
  monitor.scan();
  await settle();
  assert.deepEqual(calls, [1], 'the unused rule is not checked');
  assert.equal(used.failing, true);
  assert.deepEqual(log.lines, ['health check: connect 127.0.0.1:1 getsockopt err=111', 'health check 127.0.0.1:1 fail']);
  now = 101;
  monitor.scan();
  await settle();
  assert.deepEqual(calls, [1], 'not due yet (interval 2)');
  now = 102;
  monitor.scan();
  await settle();
  assert.deepEqual(calls, [1, 1]);
  assert.equal(log.lines.filter((l) => l.endsWith(' fail')).length, 1, '`fail` only when it starts failing');
  healthy = true;
  now = 104;
  monitor.scan();
  await settle();
  assert.equal(used.failing, false);
  assert.equal(log.lines.at(-1), 'health check 127.0.0.1:1 success');
  monitor.stop();
});

test('HealthMonitor: -d logs `fail` but not `success`; no positive interval, no loop', async () => {
  const b = backupOf(1, 1, 9);
  b.used = 2;
  const log = new RecordingLog(1);
  let healthy = false;
  let now = 10;
  const monitor = new HealthMonitor([b], log, async () => (healthy ? { healthy: true } : { healthy: false, reason: 'mismatch' }), () => now);
  monitor.scan();
  await new Promise((r) => setImmediate(r));
  healthy = true;
  now = 11;
  monitor.scan();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log.lines, ['health check 127.0.0.1:1 fail']);
  const idle = new HealthMonitor([backupOf(0, 1, 9)], log);
  assert.equal(idle.minInterval, 0);
  idle.start();
  idle.stop();
});

// health.ts against real servers

async function server(cleanup: Cleanup, onConnection: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onConnection(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.add(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return (srv.address() as net.AddressInfo).port;
}

const step = (send: string, expect: string): ChatStep => ({ send: parseSendString(send), expect: parseExtendedRegex(expect) });

test('healthCheck: refused connect (errno 111), plain connect, chat steps, mismatch on close, timeout', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const closed = await freePort();
  assert.deepEqual(await healthCheck(at(closed), 2000, []), { healthy: false, reason: 'connect', errno: 111 });
  const silent = await server(cleanup, () => undefined);
  assert.deepEqual(await healthCheck(at(silent), 2000, []), { healthy: true });
  const smtp = await server(cleanup, (s) => {
    s.write('220 ready\r\n');
    s.on('data', (d: Buffer) => {
      if (d.toString().startsWith('HELO')) s.write('250 hello\r\n');
      if (d.toString().startsWith('QUIT')) s.end('221 bye\r\n');
    });
  });
  assert.deepEqual(await healthCheck(at(smtp), 2000, [step('', '^220'), step('HELO x\\r\\n', '250'), step('QUIT\\r\\n', '221')]), { healthy: true });
  assert.deepEqual(await healthCheck(at(smtp), 2000, [step('', '^220'), step('QUIT\\r\\n', '^500')]), { healthy: false, reason: 'mismatch' });
  const began = Date.now();
  assert.deepEqual(await healthCheck(at(silent), 300, [step('PING\\r\\n', 'PONG')]), { healthy: false, reason: 'timeout' });
  assert.ok(Date.now() - began < 2000);
});

test('healthCheck: the reply is read as a C string (nothing after NUL) and only its last 1024 bytes are kept', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const nul = await server(cleanup, (s) => s.end(Buffer.from('ok\0READY', 'latin1')));
  assert.deepEqual(await healthCheck(at(nul), 2000, [step('', 'READY')]), { healthy: false, reason: 'mismatch' });
  assert.deepEqual(await healthCheck(at(nul), 2000, [step('', '^ok$')]), { healthy: true });
  const long = await server(cleanup, (s) => {
    s.write(`START${'x'.repeat(2000)}`);
    setTimeout(() => s.end('END'), 50);
  });
  assert.deepEqual(await healthCheck(at(long), 2000, [step('', '^START.*END')]), { healthy: false, reason: 'mismatch' });
  assert.deepEqual(await healthCheck(at(long), 2000, [step('', 'xEND$')]), { healthy: true });
});
