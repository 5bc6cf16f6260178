// Unit tests of src/repeater/logline.ts. Expected strings are lines Debian's stone 2.4 printed
// (captured by hand; differential.test.ts re-checks against the live binary).
// Owns: these tests only. Must not: start processes or open sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  accountingLine,
  eventLine,
  extSuffix,
  linePrefix,
  logLine,
  normalise,
  pairMessage,
  parseServices,
  stoneAddrPort,
  stoneLogs,
  stoneMessage,
  stoneTime,
  syntheticThreadId,
  timevalNow,
  type StoneEvent,
} from '../../src/repeater/logline.ts';

// local-time formatting: build the instants from local fields so the test holds in any TZ
const at = (month: number, day: number, h: number, m: number, s: number): number => Math.floor(new Date(2025, month, day, h, m, s).getTime() / 1000);

test('stone\'s timestamp: month, space-padded day, microseconds, trailing space', () => {
  assert.equal(stoneTime({ sec: at(10, 23, 11, 10, 14), usec: 275606 }), 'Nov 23 11:10:14.275606 ');
  assert.equal(stoneTime({ sec: at(0, 3, 9, 5, 7), usec: 42 }), 'Jan  3 09:05:07.000042 ');
  assert.equal(stoneTime(at(11, 31, 23, 59, 59), false), 'Dec 31 23:59:59 ');
  assert.equal(stoneTime(new Date(2025, 4, 1, 0, 0, 0, 5)), 'May  1 00:00:00.005000 ');
});

test('prefix and line: thread id after the time; the whole line cut to 1023 bytes', () => {
  const tv = { sec: at(10, 23, 11, 28, 25), usec: 224090 };
  assert.equal(linePrefix(tv, 139784409563200n), 'Nov 23 11:28:25.224090 139784409563200 ');
  assert.equal(linePrefix(tv, 0), 'Nov 23 11:28:25.224090 ');
  assert.equal(logLine('p ', 'x'.repeat(2000)).length, 1023);
  assert.equal(eventLine(tv, 139784409563200n, { kind: 'start', pid: 8165 }), 'Nov 23 11:28:25.224090 139784409563200 start (2.4) [8165]');
  assert.match(String(syntheticThreadId(4242)), /^\d{15}$/);
  const now = timevalNow();
  assert.ok(Math.abs(now.sec * 1000 + now.usec / 1000 - Date.now()) < 1000);
  assert.ok(Number.isInteger(now.usec) && now.usec >= 0 && now.usec < 1e6);
});

test('addresses: numeric for loopback, names when given, IPv6 without brackets, ext suffixes', () => {
  assert.equal(stoneAddrPort('127.0.0.1', 17001), '127.0.0.1:17001');
  assert.equal(stoneAddrPort('127.0.0.1', 8080, { serviceName: 'http-alt' }), '127.0.0.1:http-alt');
  assert.equal(stoneAddrPort('127.0.0.1', 8080, { serviceName: 'http-alt', numeric: true }), '127.0.0.1:8080');
  assert.equal(stoneAddrPort('127.0.0.1', 80, { hostName: 'localhost', serviceName: 'http' }), '127.0.0.1:http');
  assert.equal(stoneAddrPort('192.0.2.7', 80, { hostName: 'www.example.org', serviceName: 'http' }), 'www.example.org:http');
  assert.equal(stoneAddrPort('::1', 8080), '::1:8080');
  assert.equal(stoneAddrPort('0.0.0.0', 443, { exts: ['ssl', 'udp'] }), '0.0.0.0:443/udp,ssl');
  assert.equal(extSuffix([]), '');
  const services = parseServices('# comment\nhttp\t\t80/tcp\t\twww\t# WorldWideWeb\nhttp-alt 8080/tcp webcache\nsgi-cmsd 17001/udp\nbogus\n');
  assert.equal(services.get('80/tcp'), 'http');
  assert.equal(services.get('8080/tcp'), 'http-alt');
  assert.equal(services.get('17001/tcp'), undefined);
  assert.equal(services.get('17001/udp'), 'sgi-cmsd');
});

test('the messages of a TCP pair, as stone 2.4 prints them', () => {
  const cases: Array<[StoneEvent, string]> = [
    [{ kind: 'start', pid: 8165 }, 'start (2.4) [8165]'],
    [{ kind: 'debugLevel', level: 3 }, 'Debug level: 3'],
    [{ kind: 'listen', listenFd: 3, dst: '127.0.0.1:17001', src: '0.0.0.0:17002' }, 'stone 3: 127.0.0.1:17001 <- 0.0.0.0:17002'],
    [{ kind: 'listen', listenFd: 3, dst: '', src: '0.0.0.0:8080', command: 'proxy' }, 'stone 3: proxy <- 0.0.0.0:8080'],
    [{ kind: 'sslThreadLocks' }, 'SSL thread nlocks=1'],
    [{ kind: 'exiting' }, 'SIGTERM/INT. exiting'],
    [{ kind: 'accepted', listenFd: 3, fd: 5, from: '127.0.0.1:42232', mode: 1 }, 'stone 3: accepted TCP 5 from 127.0.0.1:42232 mode=1'],
    [{ kind: 'accessDenied', listenFd: 3, from: '127.0.0.1:42232' }, 'stone 3: access denied: from 127.0.0.1:42232'],
    [{ kind: 'connecting', listenFd: 3, sourceFd: 5, destFd: 6, to: '127.0.0.1:17001' }, '3 TCP 5: connecting to TCP 6 127.0.0.1:17001'],
    [{ kind: 'established', listenFd: 3, sourceFd: 5, destFd: 6 }, '3 TCP 5: established to 6 00034f00 00031000'],
    [{ kind: 'connectFailed', listenFd: 3, destFd: 6, errno: 111 }, '3 TCP 6: connect getsockopt err=111'],
    [{ kind: 'cantConnect', listenFd: 3, destFd: 6, errno: 101, to: '192.0.2.1:80' }, "3 TCP 6: can't connect err=101: to 192.0.2.1:80"],
    [{ kind: 'eof', listenFd: 3, fd: 5 }, '3 TCP 5: EOF'],
    [{ kind: 'epoll', fd: 6, epollFd: 4, events: 0x11 }, 'TCP 6: epoll 4 events=11 type=1'],
    [{ kind: 'close', listenFd: 3, fd: 6, tx: 13, rx: 13, loops: 4 }, '3 TCP 6: close tx:13 rx:13 lp:4'],
    [{ kind: 'idle', listenFd: 3, fd: 5 }, '3 TCP 5: idle time exceeds'],
    [{ kind: 'ioError', listenFd: 3, fd: 5, op: 'read', errno: 104 }, '3 TCP 5: read error err=104, closing'],
  ];
  for (const [event, line] of cases) assert.equal(stoneMessage(event), line);
});

test('pair line (message_pair) and the proxy time log', () => {
  const clock = at(10, 23, 11, 30, 12);
  assert.equal(
    pairMessage({ kind: 'pair', listenFd: 3, fd: 5, peerFd: 6, proto: 0x405f00, count: 0, clock, local: '127.0.0.1:17002', peer: '127.0.0.1:54206', tx: 3, rx: 3, loops: 3 }),
    '3 TCP  5:  6 00405f00 0 Nov 23 11:30:12 127.0.0.1:17002 127.0.0.1:54206 tx:3 rx:3 lp:3',
  );
  assert.equal(
    stoneMessage({ kind: 'pair', listenFd: 3, fd: 12, peerFd: -1, proto: 0x4000, clock, tx: 0, rx: 0, loops: 1 }),
    '3 TCP 12: -1 00004000 0 Nov 23 11:30:12  tx:0 rx:0 lp:1',
  );
  assert.equal(stoneMessage({ kind: 'timeLog', clock, now: clock + 3, text: 'CONNECT web:80' }), '11:30:12 3 CONNECT web:80');
});

test('-a accounting line', () => {
  assert.equal(
    accountingLine({ clock: at(10, 23, 11, 28, 40), port: 17002, listenFd: 4, from: '127.0.0.1:42240', fromHost: '127.0.0.1' }),
    'Nov 23 11:28:40 17002[4] 127.0.0.1:42240[127.0.0.1]',
  );
  assert.equal(
    accountingLine({ clock: new Date(2025, 10, 23, 11, 28, 40), port: 113, listenFd: 3, from: 'host.example:40000', fromHost: '192.0.2.9', ident: 'alice' }),
    'Nov 23 11:28:40 113[3] alice@host.example:40000[192.0.2.9]',
  );
});

test('which events stone logs at which -d / -p', () => {
  const accepted: StoneEvent = { kind: 'accepted', listenFd: 3, fd: 5, from: 'x', mode: 0 };
  const close: StoneEvent = { kind: 'close', listenFd: 3, fd: 5, tx: 0, rx: 0, loops: 0 };
  assert.equal(stoneLogs({ kind: 'start', pid: 1 }, { debug: 0 }), true);
  assert.equal(stoneLogs({ kind: 'debugLevel', level: 0 }, { debug: 0 }), false);
  assert.equal(stoneLogs(accepted, { debug: 1 }), false);
  assert.equal(stoneLogs(accepted, { debug: 0, dumpMode: 1 }), true);
  assert.equal(stoneLogs(accepted, { debug: 2 }), true);
  assert.equal(stoneLogs(close, { debug: 2, dumpMode: 3 }), false);
  assert.equal(stoneLogs(close, { debug: 3 }), true);
  assert.equal(stoneLogs({ kind: 'epoll', fd: 6, epollFd: 4, events: 0x4 }, { debug: 3 }), false);
  assert.equal(stoneLogs({ kind: 'epoll', fd: 6, epollFd: 4, events: 0x11 }, { debug: 3 }), true);
  assert.equal(stoneLogs({ kind: 'connectFailed', listenFd: 3, destFd: 6, errno: 111 }, { debug: 0 }), true);
});

test('normalise masks time, thread id, descriptors (and lp on request), nothing else', () => {
  const cases: Array<[string, string]> = [
    ['Nov 23 11:28:37.663510 139940221259840 3 5>6 hello world<0d><0a>', '<TIME> <TID> # #># hello world<0d><0a>'],
    ['Nov  3 01:02:03.000001 139940221259840 12 10<11 00 01', '<TIME> <TID> # #<# 00 01'],
    ['Nov 23 11:28:37.663510 139940221259840 4 tu6>7 x', '<TIME> <TID> # tu#># x'],
    ['Nov 23 11:28:37.663510 139940221259840 3 UDP<7: 00', '<TIME> <TID> # UDP<#: 00'],
    ['Nov 23 11:28:37.295682 139940221259840 stone 3: 127.0.0.1:17001 <- 0.0.0.0:17002', '<TIME> <TID> stone #: 127.0.0.1:17001 <- 0.0.0.0:17002'],
    ['Nov 23 11:28:37.662642 139940221259840 stone 3: accepted TCP 5 from 127.0.0.1:42232 mode=1', '<TIME> <TID> stone #: accepted TCP # from 127.0.0.1:42232 mode=1'],
    ['Nov 23 11:28:27.812709 140552879386688 3 TCP 5: connecting to TCP 6 127.0.0.1:17001', '<TIME> <TID> # TCP #: connecting to TCP # 127.0.0.1:17001'],
    ['Nov 23 11:28:27.812778 140552879386688 3 TCP 5: established to 6 00034f00 00031000', '<TIME> <TID> # TCP #: established to # 00034f00 00031000'],
    ['Nov 23 11:28:27.865122 140552879386688 TCP 6: epoll 4 events=11 type=1', '<TIME> <TID> TCP #: epoll # events=11 type=1'],
    ['Nov 23 11:28:27.865132 140552879386688 3 TCP 6: close tx:13 rx:13 lp:4', '<TIME> <TID> # TCP #: close tx:13 rx:13 lp:4'],
    [
      'Nov 23 11:30:16.263619 140215620493376 3 TCP  5:  6 00405f00 0 Nov 23 11:30:12 127.0.0.1:17002 127.0.0.1:54206 tx:3 rx:3 lp:3',
      '<TIME> <TID> # TCP #: # 00405f00 0 <TIME> 127.0.0.1:17002 127.0.0.1:54206 tx:3 rx:3 lp:3',
    ],
    ['Nov 23 11:28:40 17002[4] 127.0.0.1:42240[127.0.0.1]', '<TIME> 17002[#] 127.0.0.1:42240[127.0.0.1]'],
    ['Nov 23 11:28:25.224090 139784409563200 start (2.4) [8165]', '<TIME> <TID> start (2.4) [8165]'],
    ['Nov 23 11:28:25.224090 start (2.4) [8165]', '<TIME> start (2.4) [8165]'],
    // the UDP forms; stone's -1 for the client side of a UDP listener is kept
    ['Nov 23 13:40:05.503315 139902389170240 3 UDP 5: New origin 127.0.0.1:53939/udp', '<TIME> <TID> # UDP #: New origin 127.0.0.1:53939/udp'],
    ['Nov 23 13:40:17.486095 139884572647488 4 TCP -1: connecting to TCP 8 127.0.0.1:17103', '<TIME> <TID> # TCP -1: connecting to TCP # 127.0.0.1:17103'],
    ['Nov 23 13:40:17.486379 139884572647488 4 -1>8 00 06', '<TIME> <TID> # -1># 00 06'],
    ['Nov 23 13:40:17.487045 139884572647488 4 tu-1<8 00 06', '<TIME> <TID> # tu-1<# 00 06'],
    ['Nov 23 13:40:17.486048 139884572647488 stone 4: accepted TCP -1 from 127.0.0.1:44143/udp mode=1', '<TIME> <TID> stone #: accepted TCP -1 from 127.0.0.1:44143/udp mode=1'],
    ['Nov 23 13:40:17.486048 139884572647488 3 TCP6>UDP7: sendto failed err=90: to 127.0.0.1:5/udp', '<TIME> <TID> # TCP#>UDP#: sendto failed err=90: to 127.0.0.1:5/udp'],
  ];
  for (const [line, want] of cases) assert.equal(normalise(line), want, line);
  assert.equal(normalise('Nov 23 11:28:27.865132 140552879386688 3 TCP 6: close tx:13 rx:13 lp:4', { loops: true }), '<TIME> <TID> # TCP #: close tx:13 rx:13 lp:#');
  // lines built by logline.ts normalise like stone's own
  const tv = timevalNow();
  assert.equal(
    normalise(eventLine(tv, syntheticThreadId(), { kind: 'accepted', listenFd: 9, fd: 11, from: '127.0.0.1:42232', mode: 1 })),
    normalise('Nov 23 11:28:37.662642 139940221259840 stone 3: accepted TCP 5 from 127.0.0.1:42232 mode=1'),
  );
});
