// The identd's two ways of finding a connection's owner, against real TCP connections of this
// host: the exact netlink sock_diag lookup (native/peercred) and the /proc/net/tcp* search must
// give the same answer for IPv4, IPv6, IPv4 through a dual-stack (::ffff:) listener, sockets of
// another uid and sockets bound to a device; TIME_WAIT, closed, orphaned and listening sockets
// are nobody's on both; 'auto' falls back to /proc when netlink cannot be trusted; and answers
// stay right with thousands of unrelated sockets open. Speed is measured in bench/identd-lookup.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import fc from 'fast-check';
import { Cleanup, startProgram, tempDir } from '../helpers/harness.ts';
import { Identd, lookupConnectionOwner, type ConnectionKey, type OwnerLookupOptions } from '../../src/identity/identd.ts';
import { queryIdent } from '../../src/identity/ident.ts';
import { DEFAULT_ADDON_PATH, SockDiagUnavailable, loadPeercredAddon, sockDiagFunctions, type SockDiagFunctions } from '../../src/identity/peercred.ts';
import { NOBODY, accepting, isRoot, needsRoot, nobodyClient } from './helpers.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

before(() => {
  assert.ok(existsSync(DEFAULT_ADDON_PATH), `the peercred addon is not built (${DEFAULT_ADDON_PATH}); run 'npm run build:native' first`);
});

const ROOT_UID = 0;
const TCP_TIME_WAIT = 6;
const TCP_FIN_WAIT2 = 5;
const TCP_LISTEN = 10;

/** Both lookups for one key; each must have taken the path it was asked for. */
async function bothPaths(key: ConnectionKey): Promise<{ netlink: number | undefined; proc: number | undefined }> {
  const netlink = await lookupConnectionOwner(key, { method: 'netlink' });
  const proc = await lookupConnectionOwner(key, { method: 'proc' });
  assert.equal(netlink.via, 'netlink');
  assert.equal(proc.via, 'proc');
  return { netlink: netlink.uid, proc: proc.uid };
}

async function assertBoth(key: ConnectionKey, expected: number | undefined, what: string): Promise<void> {
  assert.deepEqual(await bothPaths(key), { netlink: expected, proc: expected }, `${what}: ${JSON.stringify(key)}`);
}

function key(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): ConnectionKey {
  return { localAddress, localPort, remoteAddress, remotePort };
}

function connect(options: net.NetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    cleanup.add(() => socket.destroy());
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => (socket.destroyed && socket.closed ? resolve() : socket.once('close', () => resolve())));
}

const diag = (): SockDiagFunctions => sockDiagFunctions();

test('IPv4: a client owned by nobody and root\'s accepted side, the same on netlink and /proc', { skip: needsRoot }, async () => {
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  const accepted = await listener.next();
  assert.equal(accepted.remotePort, client.localPort);
  await assertBoth(key('127.0.0.1', client.localPort, '127.0.0.1', listener.port), NOBODY.uid, 'nobody\'s client side');
  await assertBoth(key('127.0.0.1', listener.port, '127.0.0.1', client.localPort), ROOT_UID, 'root\'s accepted side');
  // the same connection described from another asker is not its business
  await assertBoth(key('127.0.0.1', client.localPort, '127.0.0.2', listener.port), undefined, 'another asker');
  await assertBoth(key('127.0.0.2', client.localPort, '127.0.0.1', listener.port), undefined, 'another local address');
  await assertBoth(key('127.0.0.1', listener.port, '127.0.0.1', client.localPort === 65535 ? 1 : client.localPort + 1), undefined, 'a port next to it');
  await assertBoth(key('127.0.0.1', client.localPort, '::1', listener.port), undefined, 'IPv4 here, IPv6 there');
});

test('IPv6 on ::1, and IPv4 clients of a dual-stack listener asked as 127.0.0.1 and as ::ffff:127.0.0.1', { skip: needsRoot }, async () => {
  const listener6 = await accepting(cleanup, { host: '::1' });
  const client6 = await nobodyClient(cleanup, { host: '::1', port: listener6.port });
  await listener6.next();
  await assertBoth(key('::1', client6.localPort, '::1', listener6.port), NOBODY.uid, 'IPv6 client');
  await assertBoth(key('::1', listener6.port, '0:0:0:0:0:0:0:1', client6.localPort), ROOT_UID, 'IPv6 accepted side');
  await assertBoth(key('::1', client6.localPort, '127.0.0.1', listener6.port), undefined, 'IPv6 connection, IPv4 asker');

  const dual = await accepting(cleanup, { host: '::' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: dual.port });
  const accepted = await dual.next();
  assert.equal(accepted.localAddress, '::ffff:127.0.0.1', 'the accepted socket is an IPv6 socket carrying IPv4');
  // the kernel itself reports root's side as an IPv6 socket with mapped addresses
  const seen = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), dual.port, Buffer.from([127, 0, 0, 1]), client.localPort, 0);
  assert.equal(seen?.family, 6);
  for (const [local, remote] of [
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:127.0.0.1', '::ffff:127.0.0.1'],
    ['127.0.0.1', '::ffff:7f00:1'],
  ] as const) {
    await assertBoth(key(local, dual.port, remote, client.localPort), ROOT_UID, 'mapped accepted side');
    await assertBoth(key(local, client.localPort, remote, dual.port), NOBODY.uid, 'IPv4 client of the dual-stack listener');
  }
});

test('on the wire: an identd on [::] answers the same through netlink and through /proc', { skip: needsRoot }, async () => {
  const ports: Record<'netlink' | 'proc', number> = { netlink: 0, proc: 0 };
  for (const lookup of ['netlink', 'proc'] as const) {
    const identd = new Identd({ listen: [{ host: '::', port: 0 }], log: pino({ level: 'silent' }), lookup });
    await identd.start();
    cleanup.add(() => identd.stop());
    ports[lookup] = identd.addresses[0]?.port as number;
  }
  const dual = await accepting(cleanup, { host: '::' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: dual.port });
  await dual.next();
  const listener6 = await accepting(cleanup, { host: '::1' });
  const client6 = await nobodyClient(cleanup, { host: '::1', port: listener6.port });
  await listener6.next();
  const cases = [
    { host: '127.0.0.1', herePort: client.localPort, therePort: dual.port, user: 'nobody' },
    { host: '127.0.0.1', herePort: dual.port, therePort: client.localPort, user: 'root' },
    { host: '::1', herePort: client6.localPort, therePort: listener6.port, user: 'nobody' },
    { host: '::1', herePort: 1, therePort: 2, user: undefined },
  ];
  for (const c of cases) {
    const replies: unknown[] = [];
    for (const lookup of ['netlink', 'proc'] as const) {
      const r = await queryIdent({ remoteAddress: c.host, remotePort: c.herePort, localAddress: c.host, localPort: c.therePort, identPort: ports[lookup], timeoutMs: 2000 });
      if (c.user === undefined) assert.equal(r.kind === 'error' && r.error, 'NO-USER', `${lookup}: ${JSON.stringify(r)}`);
      else assert.equal(r.kind === 'user' && r.user, c.user, `${lookup}: ${JSON.stringify(r)}`);
      replies.push(r);
    }
    assert.deepEqual(replies[0], replies[1]);
  }
});

test('TIME_WAIT, closed, orphaned and listening sockets have no owner on either path', { skip: needsRoot }, async () => {
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  const accepted = await listener.next();
  const nobodySide = key('127.0.0.1', client.localPort, '127.0.0.1', listener.port);
  const rootSide = key('127.0.0.1', listener.port, '127.0.0.1', client.localPort);
  await assertBoth(nobodySide, NOBODY.uid, 'before closing');

  // nobody closes first: its side lingers in TIME_WAIT (uid column 0), root's side goes away
  await client.closeFirst();
  await closed(accepted);
  const lingering = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), client.localPort, Buffer.from([127, 0, 0, 1]), listener.port, 0);
  assert.equal(lingering?.state, TCP_TIME_WAIT, 'the test needs the TIME_WAIT socket to still exist');
  assert.equal(lingering?.uid, 0);
  await assertBoth(nobodySide, undefined, 'TIME_WAIT');
  await assertBoth(rootSide, undefined, 'closed and gone');

  // a port with a listener but no such connection: the kernel answers the exact lookup with the listener
  const listenerAnswer = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), listener.port, Buffer.from([127, 0, 0, 1]), 9, 0);
  assert.equal(listenerAnswer?.state, TCP_LISTEN);
  await assertBoth(key('127.0.0.1', listener.port, '127.0.0.1', 9), undefined, 'listener');

  // root closes its accepted side while the client keeps its end open: an orphan in FIN_WAIT2, inode 0
  // (half-open allowed, so the client does not answer root's FIN with its own)
  const client2 = await connect({ host: '127.0.0.1', port: listener.port, allowHalfOpen: true });
  const accepted2 = await listener.next();
  const orphanKey = key('127.0.0.1', listener.port, '127.0.0.1', client2.localPort as number);
  await assertBoth(orphanKey, ROOT_UID, 'before the orphaning close');
  accepted2.destroy();
  await closed(accepted2);
  let orphan = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), listener.port, Buffer.from([127, 0, 0, 1]), client2.localPort as number, 0);
  for (let i = 0; i < 50 && orphan?.state !== TCP_FIN_WAIT2; i++) {
    await new Promise((r) => setTimeout(r, 20));
    orphan = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), listener.port, Buffer.from([127, 0, 0, 1]), client2.localPort as number, 0);
  }
  assert.equal(orphan?.state, TCP_FIN_WAIT2, JSON.stringify(orphan));
  assert.equal(orphan?.inode, 0);
  await assertBoth(orphanKey, undefined, 'orphaned FIN_WAIT2');
});

test('a socket bound to a device (SO_BINDTODEVICE lo) is found by netlink as by /proc', { skip: needsRoot }, async () => {
  // the system's python (nobody cannot run a python under /root, such as a pyenv shim)
  const python = '/usr/bin/python3';
  assert.ok(existsSync(python), `${python} is needed to set SO_BINDTODEVICE (apt-get install python3)`);
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const script = [
    'import socket, sys',
    's = socket.socket()',
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'lo')",
    `s.connect(('127.0.0.1', ${listener.port}))`,
    "print('bound', s.getsockname()[1], flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  const proc = startProgram(cleanup, 'setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', python, '-c', script]);
  const port = Number((await proc.waitFor(/bound \d+/)).split(' ')[1]);
  await listener.next();
  const bare = diag().tcpDiagLookup(4, Buffer.from([127, 0, 0, 1]), port, Buffer.from([127, 0, 0, 1]), listener.port, 0);
  assert.equal(bare, null, 'without an interface index the kernel does not find a device-bound socket');
  await assertBoth(key('127.0.0.1', port, '127.0.0.1', listener.port), NOBODY.uid, 'device-bound client');
});

test("'auto' reads /proc when netlink is unavailable or the kernel has no diag handler; 'netlink' refuses", { skip: needsRoot }, async () => {
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  await listener.next();
  const k = key('127.0.0.1', client.localPort, '127.0.0.1', listener.port);

  const auto = await lookupConnectionOwner(k);
  assert.deepEqual(auto, { uid: NOBODY.uid, via: 'netlink' });

  // an addon built before the sock_diag calls existed
  const dir = tempDir(cleanup, 'ws-oldaddon-');
  const old = join(dir, 'old.cjs');
  writeFileSync(old, 'module.exports = { peerCredentials() { return { pid: 0, uid: 0, gid: 0 }; } };\n');
  const oldAddon = loadPeercredAddon(old);
  assert.throws(() => sockDiagFunctions(oldAddon), (err: unknown) => err instanceof SockDiagUnavailable && /rebuild it with 'npm run build:native'/.test(err.message));
  const noAddon: OwnerLookupOptions = { sockDiag: () => sockDiagFunctions(oldAddon) };
  const viaProc = await lookupConnectionOwner(k, noAddon);
  assert.equal(viaProc.uid, NOBODY.uid);
  assert.equal(viaProc.via, 'proc');
  assert.match(viaProc.fallback ?? '', /older source/);
  await assert.rejects(lookupConnectionOwner(k, { ...noAddon, method: 'netlink' }), (err: unknown) => err instanceof SockDiagUnavailable);

  // no addon at all (never built)
  const missing: OwnerLookupOptions = { sockDiag: () => sockDiagFunctions(loadPeercredAddon(join(dir, 'missing.node'))) };
  const unbuilt = await lookupConnectionOwner(k, missing);
  assert.deepEqual({ uid: unbuilt.uid, via: unbuilt.via }, { uid: NOBODY.uid, via: 'proc' });
  assert.match(unbuilt.fallback ?? '', /has not been built/);

  // the real kernel asked about a protocol it has no diag handler for (253, reserved for
  // experiments): this is how a kernel without tcp_diag answers, and exact lookups would then
  // say ENOENT for every socket. The probe catches it, so 'auto' does not answer NO-USER.
  const real = diag();
  const noHandler: OwnerLookupOptions = { sockDiag: () => ({ ...real, tcpDiagProbe: (family) => real.tcpDiagProbe(family, 253) }) };
  const probed = await lookupConnectionOwner(k, noHandler);
  assert.deepEqual({ uid: probed.uid, via: probed.via }, { uid: NOBODY.uid, via: 'proc' });
  assert.match(probed.fallback ?? '', /does not answer TCP sock_diag requests/);

  // and the identd says once, in its log, that it is on the slow path
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
  const identd = new Identd({ listen: [{ host: '127.0.0.1', port: 0 }], log: pino({ level: 'info' }, sink), lookup: 'auto' });
  await identd.start();
  cleanup.add(() => identd.stop());
  assert.ok(lines.some((l) => /identd finds connections with netlink sock_diag/.test(l)), lines.join(''));
  const r = await queryIdent({ remoteAddress: '127.0.0.1', remotePort: client.localPort, localAddress: '127.0.0.1', localPort: listener.port, identPort: identd.addresses[0]?.port as number, timeoutMs: 2000 });
  assert.equal(r.kind === 'user' && r.user, 'nobody');
  assert.ok(lines.some((l) => /"via":"netlink"/.test(l) && /"answer":"nobody"/.test(l)), lines.join(''));
});

/** A process running as nobody holding `count` connections to host:port; their local ports. */
async function nobodyConnections(host: string, port: number, count: number): Promise<number[]> {
  const script = `
    const net = require('node:net');
    const ports = []; let open = 0;
    for (let i = 0; i < ${count}; i++) {
      const s = net.connect({ host: ${JSON.stringify(host)}, port: ${port} }, () => {
        ports.push(s.localPort);
        if (++open === ${count}) console.log('ports ' + ports.join(','));
      });
      s.on('error', (e) => { console.error('client error: ' + e.message); process.exit(3); });
      s.resume();
    }
    process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
  `;
  const proc = startProgram(cleanup, 'setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script]);
  const line = await proc.waitFor(/ports [\d,]+\n/);
  return line.trim().slice('ports '.length).split(',').map(Number);
}

test('with thousands of unrelated sockets open, random lookups agree with the truth on both paths', { skip: needsRoot }, async () => {
  assert.ok(isRoot);
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  // 1,500 connections of our own (3,000 sockets: client and accepted side, both root's)
  const ours: net.Socket[] = [];
  for (let batch = 0; batch < 15; batch++) {
    ours.push(...(await Promise.all(Array.from({ length: 100 }, () => connect({ host: '127.0.0.1', port: listener.port })))));
  }
  // 100 connections of nobody's
  const theirs = await nobodyConnections('127.0.0.1', listener.port, 100);
  const ourPorts = ours.map((s) => s.localPort as number);
  const all = new Set([...ourPorts, ...theirs]);
  // a connection still in the accept queue has no socket file yet (inode 0): nobody's, on both
  // paths. Wait until this process has accepted every one, so the server sides are root's.
  for (let i = 0; i < all.size; i++) await listener.next();

  // netlink is cheap: every connection, both sides
  for (const p of ourPorts) {
    assert.equal((await lookupConnectionOwner(key('127.0.0.1', p, '127.0.0.1', listener.port), { method: 'netlink' })).uid, ROOT_UID);
  }
  for (const p of theirs) {
    assert.equal((await lookupConnectionOwner(key('127.0.0.1', p, '127.0.0.1', listener.port), { method: 'netlink' })).uid, NOBODY.uid);
    assert.equal((await lookupConnectionOwner(key('127.0.0.1', listener.port, '127.0.0.1', p), { method: 'netlink' })).uid, ROOT_UID);
  }

  // /proc costs milliseconds per lookup here: a random sample, each compared with netlink too
  const pick = fc.oneof(
    fc.constantFrom(...theirs).map((p) => ({ k: key('127.0.0.1', p, '127.0.0.1', listener.port), uid: NOBODY.uid as number | undefined })),
    fc.constantFrom(...ourPorts).map((p) => ({ k: key('127.0.0.1', listener.port, '127.0.0.1', p), uid: ROOT_UID as number | undefined })),
    fc
      .integer({ min: 1024, max: 65535 })
      .filter((p) => !all.has(p))
      .map((p) => ({ k: key('127.0.0.1', p, '127.0.0.1', listener.port), uid: undefined as number | undefined })),
  );
  await fc.assert(
    fc.asyncProperty(pick, async ({ k, uid }) => {
      assert.deepEqual(await bothPaths(k), { netlink: uid, proc: uid });
    }),
    { numRuns: 60 },
  );
});
