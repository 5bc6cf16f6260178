// Unit tests of src/repeater/command-stones.ts: health-port and identd answers, with a real
// engine pair for identd's lookup. (The differential test against stone 2.4 is in
// proxy-differential.test.ts.)
// Owns: these tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Activity } from '../../src/repeater/activity.ts';
import { healthCommand, identdCommand, type CommandContext } from '../../src/repeater/command-stones.ts';
import { PairSet, type LivePair } from '../../src/repeater/tcp-relay.ts';
import { StoneLog } from '../../src/repeater/stone-log.ts';

function context(debug = 0): { c: CommandContext; lines: string[] } {
  const lines: string[] = [];
  const log = new StoneLog({ debugLevel: debug, numeric: true, logFile: undefined, accountingFile: undefined });
  (log as unknown as { message: (t: string) => void }).message = (t: string) => lines.push(t);
  const pairs = new PairSet();
  const fake: LivePair = {
    idleMs: 0,
    lastActivity: Date.now(),
    idle: () => undefined,
    destroy: () => undefined,
    outgoing: () => ({ localPort: 40001, remoteAddress: '::ffff:127.0.0.1', remotePort: 80, stonePort: 8080 }),
  };
  pairs.add(fake);
  const activity = new Activity();
  activity.lastEstablished = Math.floor(Date.now() / 1000) - 5;
  return { c: { log, listenFd: 3, idleMs: 0, pairs, activity, sessions: { count: 1 }, stoneCount: 2, stoneLines: ['stone 3: health <- 0.0.0.0:81', 'stone 4: x:1 <- 0.0.0.0:82'] }, lines };
}

test('health: HELO, LIMIT, STONE, QUIT and unknown commands as stone answers them', () => {
  const { c, lines } = context(1);
  assert.deepEqual(healthCommand('helo me', '', c), { text: '250 stone:2.4 debug=1 stone=2 pair=4 trash=0 conn=0 origin=0\r\n', close: false });
  assert.equal(lines[0], ': HELO me: stone=2 pair=4 trash=0 conn=0 origin=0');
  assert.equal(healthCommand('LIMIT PAIR 5', '', c).text, '200 pair=4 is less than 5\r\n');
  assert.equal(healthCommand('LIMIT pair 4', '', c).text, '500 pair=4 is not less than 4\r\n');
  assert.match(healthCommand('LIMIT ESTABLISHED 60', '', c).text, /^200 established=[5-9] is less than 60\r\n$/);
  assert.equal(healthCommand('LIMIT SOMETHING 1', '', c).text, '500 Illegal LIMIT\r\n');
  assert.equal(healthCommand('STONE', '', c).text, '200-stone 3: health <- 0.0.0.0:81\n200 stone 4: x:1 <- 0.0.0.0:82\n');
  assert.deepEqual(healthCommand('QUIT', '', c), { text: '', close: true });
  assert.deepEqual(healthCommand('HELOX', '', c), { text: '', close: true });
  assert.equal(lines.at(-1), 'Unknown health command: HELOX');
});

test('health: GET answers 200 and logs the Host header it already has', () => {
  const { c, lines } = context();
  assert.deepEqual(healthCommand('GET /ping HTTP/1.0', '\r\nUser-Agent: x\r\nhost: lb.example\r\n\r\n', c), { text: 'HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n', close: false });
  assert.equal(lines.at(-1), 'lb.example GET /ping HTTP/1.0');
  healthCommand('HEAD', '', c);
  assert.equal(lines.length, 1, 'an empty parameter logs nothing');
});

test('identd: USERID for this process\'s own connection, NO-USER otherwise, close on garbage', () => {
  const { c } = context();
  assert.deepEqual(identdCommand('40001,80', '127.0.0.1', c), { text: '40001 , 80 : USERID : STONE : 8080\r\n', close: false });
  assert.equal(identdCommand('40001, 81', '127.0.0.1', c).text, '40001 , 81 : ERROR : NO-USER\r\n');
  assert.equal(identdCommand('40001,80', '10.0.0.1', c).text, '40001 , 80 : ERROR : NO-USER\r\n');
  assert.deepEqual(identdCommand('40001 , 80', '127.0.0.1', c), { text: '', close: true }, 'stone\'s sscanf("%d,%d")');
  assert.deepEqual(identdCommand('quit', '127.0.0.1', c), { text: '', close: true });
});
