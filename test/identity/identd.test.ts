// `warpstone identd` against real TCP connections of this host: a connection owned by nobody is
// reported as nobody, root's side as root, connections to other hosts and TIME_WAIT leftovers as
// NO-USER; the line protocol (several queries, bad lines, long lines, slow clients); the command
// line (including --user); and the same answers as Debian's oidentd.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { endianness } from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { Cleanup, ROOT, freePort, startProgram, tempDir } from '../helpers/harness.ts';
import { requireProgram } from '../helpers/programs.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Identd, addressBytes, findConnectionOwner, parseIdentQuery, parseProcNetTcp } from '../../src/identity/identd.ts';
import { queryIdent, type IdentQuery } from '../../src/identity/ident.ts';
import { accepting, needsRoot, nobodyClient, talk } from './helpers.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

async function startIdentd(host = '127.0.0.1', options: { idleTimeoutMs?: number; maxQueriesPerConnection?: number; procNetDir?: string } = {}): Promise<number> {
  const identd = new Identd({ listen: [{ host, port: 0 }], log: silentLogger(), ...options });
  await identd.start();
  cleanup.add(() => identd.stop());
  return identd.addresses[0]?.port as number;
}

/** Asks the identd at identPort about the connection `here:herePort` ↔ `there:therePort`, like a server would. */
function ask(identPort: number, q: { host: string; herePort: number; therePort: number; askFrom?: string }): ReturnType<typeof queryIdent> {
  const query: IdentQuery = { remoteAddress: q.host, remotePort: q.herePort, localAddress: q.askFrom ?? q.host, localPort: q.therePort, identPort, timeoutMs: 2000 };
  return queryIdent(query);
}

test('a TCP connection opened by a process running as nobody is reported as nobody; our side as root', { skip: needsRoot }, async () => {
  const identPort = await startIdentd();
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  const accepted = await listener.next();
  assert.equal(accepted.remotePort, client.localPort);

  const theirs = await ask(identPort, { host: '127.0.0.1', herePort: client.localPort, therePort: listener.port });
  assert.deepEqual(theirs, { kind: 'user', user: 'nobody', os: 'UNIX', reply: `${client.localPort} , ${listener.port} : USERID : UNIX : nobody` });
  const ours = await ask(identPort, { host: '127.0.0.1', herePort: listener.port, therePort: client.localPort });
  assert.equal(ours.kind === 'user' && ours.user, 'root');
});

test('NO-USER for unknown ports, for an asker the connection does not go to, and for TIME_WAIT leftovers', { skip: needsRoot }, async () => {
  const identPort = await startIdentd();
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  const accepted = await listener.next();

  const unknown = await ask(identPort, { host: '127.0.0.1', herePort: 1, therePort: 2 });
  assert.deepEqual(unknown, { kind: 'error', error: 'NO-USER', reply: '1 , 2 : ERROR : NO-USER' });

  // 127.0.0.2 asks about a connection between 127.0.0.1 and 127.0.0.1: not its business
  const stranger = await ask(identPort, { host: '127.0.0.1', herePort: client.localPort, therePort: listener.port, askFrom: '127.0.0.2' });
  assert.equal(stranger.kind === 'error' && stranger.error, 'NO-USER');

  // nobody closes first, so its side lingers in TIME_WAIT with uid column 0: that is not root
  await client.closeFirst();
  await new Promise<void>((resolve) => (accepted.destroyed ? resolve() : accepted.once('close', () => resolve())));
  const gone = await ask(identPort, { host: '127.0.0.1', herePort: client.localPort, therePort: listener.port });
  assert.equal(gone.kind === 'error' && gone.error, 'NO-USER', JSON.stringify(gone));
});

test('IPv6 connections (tcp6) and IPv4 clients of a dual-stack listener (IPv4-mapped in tcp6)', { skip: needsRoot }, async () => {
  const identPort6 = await startIdentd('::1');
  const listener6 = await accepting(cleanup, { host: '::1' });
  const client6 = await nobodyClient(cleanup, { host: '::1', port: listener6.port });
  await listener6.next();
  const v6 = await ask(identPort6, { host: '::1', herePort: client6.localPort, therePort: listener6.port });
  assert.equal(v6.kind === 'user' && v6.user, 'nobody', JSON.stringify(v6));

  const identPort = await startIdentd('127.0.0.1');
  const dual = await accepting(cleanup, { host: '::' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: dual.port });
  const accepted = await dual.next();
  assert.equal(accepted.localAddress, '::ffff:127.0.0.1');
  // root's accepted socket is in tcp6 as ::ffff:127.0.0.1; nobody's client socket is in tcp
  const rootSide = await ask(identPort, { host: '127.0.0.1', herePort: dual.port, therePort: client.localPort });
  assert.equal(rootSide.kind === 'user' && rootSide.user, 'root', JSON.stringify(rootSide));
  const nobodySide = await ask(identPort, { host: '127.0.0.1', herePort: client.localPort, therePort: dual.port });
  assert.equal(nobodySide.kind === 'user' && nobodySide.user, 'nobody');

  // an identd on [::] (the default) sees an IPv4 asker as ::ffff:127.0.0.1
  const identPortDual = await startIdentd('::');
  const viaDual = await ask(identPortDual, { host: '127.0.0.1', herePort: client.localPort, therePort: dual.port });
  assert.equal(viaDual.kind === 'user' && viaDual.user, 'nobody', JSON.stringify(viaDual));
});

test('line protocol: several queries per connection, bad ports, garbage, no final CR LF', async () => {
  const identPort = await startIdentd();
  const two = await talk(identPort, '1 , 2\r\n3,4\n', { ms: 500 });
  assert.equal(two.reply, '1 , 2 : ERROR : NO-USER\r\n3 , 4 : ERROR : NO-USER\r\n');
  assert.equal(two.closedByPeer, false, 'the connection stays open for more queries');

  const range = await talk(identPort, '0 , 99999\r\n', { ms: 500 });
  assert.equal(range.reply, '0 , 99999 : ERROR : INVALID-PORT\r\n');

  // a line that is no query closes the connection (as oidentd does), after earlier answers
  const garbage = await talk(identPort, '1 , 2\r\nGET / HTTP/1.0\r\n5 , 6\r\n', { ms: 2000 });
  assert.equal(garbage.reply, '1 , 2 : ERROR : NO-USER\r\n');
  assert.equal(garbage.closedByPeer, true);

  const halfClosed = await talk(identPort, '7 , 8', { halfClose: true });
  assert.equal(halfClosed.reply, '7 , 8 : ERROR : NO-USER\r\n');
  assert.equal(halfClosed.closedByPeer, true);
});

test('bounded lines, slow clients and the per-connection query limit', async () => {
  const identPort = await startIdentd('127.0.0.1', { idleTimeoutMs: 300, maxQueriesPerConnection: 3 });
  const long = await talk(identPort, '1 , 2\r\n' + ' '.repeat(1500), { ms: 2000 });
  assert.equal(long.reply, '1 , 2 : ERROR : NO-USER\r\n');
  assert.equal(long.closedByPeer, true);

  const slow = await talk(identPort, '1 , ', { ms: 3000 });
  assert.equal(slow.reply, '');
  assert.equal(slow.closedByPeer, true);
  assert.ok(slow.elapsedMs >= 250 && slow.elapsedMs < 2000, `closed after ${slow.elapsedMs} ms`);

  const many = await talk(identPort, '1,1\r\n2,2\r\n3,3\r\n4,4\r\n', { ms: 2000 });
  assert.equal(many.reply.split('\r\n').filter(Boolean).length, 3);
  assert.equal(many.closedByPeer, true);
});

test('/proc/net/tcp parsing: byte order, IPv6 words, TIME_WAIT and orphan rows are never owners', async () => {
  const le = endianness() === 'LE';
  const v4 = (a: string): string => {
    const b = a.split('.').map(Number);
    const bytes = le ? b.reverse() : b;
    return bytes.map((x) => x.toString(16).padStart(2, '0')).join('').toUpperCase();
  };
  const header = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
  const row = (n: number, local: string, lport: number, remote: string, rport: number, st: string, uid: number, inode: number): string =>
    `   ${n}: ${local}:${lport.toString(16).toUpperCase().padStart(4, '0')} ${remote}:${rport.toString(16).toUpperCase().padStart(4, '0')} ${st} 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)}        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;
  const dir = tempDir(cleanup, 'ws-procnet-');
  mkdirSync(join(dir, 'net'));
  writeFileSync(
    join(dir, 'net', 'tcp'),
    header +
      row(0, v4('10.1.2.3'), 22, v4('0.0.0.0'), 0, '0A', 0, 1000) +
      row(1, v4('10.1.2.3'), 40000, v4('192.0.2.7'), 5432, '06', 0, 0) + // TIME_WAIT
      row(2, v4('10.1.2.3'), 40001, v4('192.0.2.7'), 5432, '01', 1001, 1234) +
      row(3, v4('10.1.2.3'), 40002, v4('192.0.2.7'), 5432, '01', 0, 0) + // orphan
      'garbage line\n',
  );
  // ::1 is three zero words and one word holding 00 00 00 01 in network order
  const word = (bytes: number[]): string => (le ? [...bytes].reverse() : bytes).map((x) => x.toString(16).padStart(2, '0')).join('').toUpperCase();
  const loop6 = word([0, 0, 0, 0]).repeat(3) + word([0, 0, 0, 1]);
  const doc6 = word([0x20, 0x01, 0x0d, 0xb8]) + word([0, 0, 0, 0]).repeat(2) + word([0, 0, 0, 9]);
  const mapped = word([0, 0, 0, 0]).repeat(2) + word([0, 0, 0xff, 0xff]) + word([10, 1, 2, 3]);
  writeFileSync(
    join(dir, 'net', 'tcp6'),
    header + row(0, loop6, 50000, doc6, 443, '01', 1002, 99) + row(1, mapped, 113, v4('0.0.0.0').padStart(32, '0'), 0, '0A', 0, 5) + row(2, mapped, 40003, word([0, 0, 0, 0]).repeat(2) + word([0, 0, 0xff, 0xff]) + word([192, 0, 2, 7]), 5432, '08', 1003, 77),
  );
  const entries = parseProcNetTcp(`${header}${row(2, v4('10.1.2.3'), 40001, v4('192.0.2.7'), 5432, '01', 1001, 1234)}`);
  assert.deepEqual(entries, [{ localAddress: Buffer.from([10, 1, 2, 3]), localPort: 40001, remoteAddress: Buffer.from([192, 0, 2, 7]), remotePort: 5432, state: 1, uid: 1001, inode: 1234 }]);

  const procNet = join(dir, 'net');
  const owner = (localAddress: string, localPort: number, remoteAddress: string, remotePort: number): Promise<number | undefined> =>
    findConnectionOwner({ localAddress, localPort, remoteAddress, remotePort }, procNet);
  assert.equal(await owner('10.1.2.3', 40001, '192.0.2.7', 5432), 1001);
  assert.equal(await owner('::ffff:10.1.2.3', 40001, '::ffff:192.0.2.7', 5432), 1001);
  assert.equal(await owner('10.1.2.3', 40000, '192.0.2.7', 5432), undefined, 'TIME_WAIT');
  assert.equal(await owner('10.1.2.3', 40002, '192.0.2.7', 5432), undefined, 'orphan');
  assert.equal(await owner('10.1.2.3', 22, '0.0.0.0', 0), undefined, 'LISTEN');
  assert.equal(await owner('10.1.2.4', 40001, '192.0.2.7', 5432), undefined, 'other local address');
  assert.equal(await owner('10.1.2.3', 40001, '192.0.2.8', 5432), undefined, 'other asker');
  assert.equal(await owner('::1', 50000, '2001:db8::9', 443), 1002);
  assert.equal(await owner('0:0::1', 50000, '2001:DB8:0:0:0:0:0:9', 443), 1002);
  assert.equal(await owner('10.1.2.3', 40003, '192.0.2.7', 5432), 1003, 'IPv4-mapped row in tcp6');

  await assert.rejects(findConnectionOwner({ localAddress: '::1', localPort: 1, remoteAddress: '::1', remotePort: 2 }, join(dir, 'missing')), /cannot read/);
  // the identd answers UNKNOWN-ERROR when the table cannot be read
  const identPort = await startIdentd('127.0.0.1', { procNetDir: join(dir, 'missing') });
  const broken = await talk(identPort, '1 , 2\r\n', { ms: 500 });
  assert.equal(broken.reply, '1 , 2 : ERROR : UNKNOWN-ERROR\r\n');
});

test('address and query helpers', () => {
  assert.deepEqual(addressBytes('127.0.0.1'), Buffer.from([127, 0, 0, 1]));
  assert.deepEqual(addressBytes('::ffff:127.0.0.1'), Buffer.from([127, 0, 0, 1]));
  assert.deepEqual(addressBytes('::ffff:7f00:1'), Buffer.from([127, 0, 0, 1]));
  assert.deepEqual(addressBytes('fe80::1%eth0'), Buffer.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
  assert.deepEqual(addressBytes('::'), Buffer.alloc(16));
  assert.equal(addressBytes('example.org'), undefined);
  assert.deepEqual(parseIdentQuery(' 6191 ,\t23 '), { ok: true, here: 6191, there: 23 });
  assert.deepEqual(parseIdentQuery('0,1'), { ok: false, ports: '0 , 1', reason: 'port out of range' });
  assert.equal(parseIdentQuery('6191 23').ok, false);
});

/** Runs src/cli/identd.ts's register() in a fresh commander program, as main.ts does. */
function startIdentdCommand(args: string[]): ReturnType<typeof startProgram> {
  const script = `
    import { Command } from 'commander';
    import { register } from '${pathToFileURL(join(ROOT, 'src', 'cli', 'identd.ts')).href}';
    import { reportAndExit } from '${pathToFileURL(join(ROOT, 'src', 'cli', 'shared.ts')).href}';
    const program = new Command().exitOverride();
    register(program);
    program.parseAsync(['node', 'warpstone', ...process.argv.slice(1)]).catch(reportAndExit);
  `;
  const proc = startProgram(cleanup, process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, ...args], { ...process.env, WARPSTONE_LOG_LEVEL: 'info' });
  return proc;
}

function uidOf(pid: number): number {
  return Number((readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:')) ?? '').split(/\s+/)[1]);
}

test('warpstone identd --listen --user nobody: drops root and still answers honestly', { skip: needsRoot }, async () => {
  const port = await freePort();
  const proc = startIdentdCommand(['identd', '--listen', `127.0.0.1:${port}`, '--user', 'nobody']);
  await proc.waitFor(/dropped privileges/);
  assert.match(proc.output(), new RegExp(`"listen":"127.0.0.1:${port}".*identd listening`));
  assert.notEqual(uidOf(proc.child.pid as number), 0);

  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = net.connect({ host: '127.0.0.1', port: listener.port });
  cleanup.add(() => client.destroy());
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const result = await ask(port, { host: '127.0.0.1', herePort: client.localPort as number, therePort: listener.port });
  assert.equal(result.kind === 'user' && result.user, 'root', JSON.stringify(result));
  assert.equal(await proc.stop(), 0);
});

test('warpstone identd: bad flags are usage errors, a busy port a one-line error', async () => {
  const bad = startIdentdCommand(['identd', '--listen', 'nowhere']);
  assert.equal(await bad.exited, 2);
  assert.match(bad.output(), /--listen: 'nowhere' is not a port number/);

  const zero = startIdentdCommand(['identd', '--listen', '127.0.0.1:0', '--idle-timeout', '0']);
  assert.equal(await zero.exited, 2);
  assert.match(zero.output(), /--idle-timeout: must be more than 0 seconds/);

  const taken = await accepting(cleanup, { host: '127.0.0.1' });
  const busy = startIdentdCommand(['identd', '--listen', `127.0.0.1:${taken.port}`]);
  assert.equal(await busy.exited, 1);
  assert.match(busy.output(), new RegExp(`identd cannot listen on 127.0.0.1:${taken.port}: the address is already in use`));
});

test("same answers as Debian's oidentd for the same connections", { skip: needsRoot }, async () => {
  requireProgram('oidentd');
  const oidentPort = await freePort();
  const oidentd = startProgram(cleanup, 'oidentd', ['-i', '-S', '-p', String(oidentPort), '-a', '127.0.0.1', '-u', 'nobody', '-g', 'nogroup']);
  const identPort = await startIdentd();
  const listener = await accepting(cleanup, { host: '127.0.0.1' });
  const client = await nobodyClient(cleanup, { host: '127.0.0.1', port: listener.port });
  await listener.next();
  // wait until oidentd accepts connections
  for (let i = 0; ; i++) {
    const probe = await queryIdent({ remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2, identPort: oidentPort, timeoutMs: 1000 });
    if (probe.kind !== 'network-error') break;
    assert.ok(i < 50, `oidentd did not start: ${oidentd.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const queries: Array<{ herePort: number; therePort: number }> = [
    { herePort: client.localPort, therePort: listener.port },
    { herePort: 1, therePort: 2 },
  ];
  for (const q of queries) {
    const ours = await ask(identPort, { host: '127.0.0.1', ...q });
    const theirs = await ask(oidentPort, { host: '127.0.0.1', ...q });
    const strip = (r: typeof ours): unknown => ({ ...r, reply: undefined });
    assert.deepEqual(strip(ours), strip(theirs), `query ${q.herePort} , ${q.therePort}: ours ${JSON.stringify(ours)}, oidentd ${JSON.stringify(theirs)}`);
  }
  const nobody = await ask(oidentPort, { host: '127.0.0.1', herePort: client.localPort, therePort: listener.port });
  assert.equal(nobody.kind === 'user' && nobody.user, 'nobody');
});
