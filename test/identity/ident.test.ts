// The RFC 1413 client against fake identds: every reply kind, the query it sends and where from,
// truncated, oversized, split and slow replies, refusal; and a property test of the reply parser.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { IDENT_MAX_REPLY_BYTES, parseIdentReply, queryIdent, type IdentQuery, type IdentResult } from '../../src/identity/ident.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

interface Seen {
  query: string;
  from: string | undefined;
}

/** A fake identd on 127.0.0.1: `answer` gets each connection once its first line has arrived. */
async function fakeIdentd(answer: (socket: net.Socket, query: string) => void, host = '127.0.0.1'): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (!text.includes('\n')) return;
      socket.removeListener('data', onData);
      seen.push({ query: text, from: socket.remoteAddress });
      answer(socket, text);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, host, () => resolve()));
  cleanup.add(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, seen };
}

const base = (identPort: number, extra: Partial<IdentQuery> = {}): IdentQuery => ({
  remoteAddress: '127.0.0.1',
  remotePort: 40000,
  localAddress: '127.0.0.1',
  localPort: 5432,
  identPort,
  timeoutMs: 2000,
  ...extra,
});

async function replyWith(bytes: string | Buffer, extra: Partial<IdentQuery> = {}): Promise<IdentResult> {
  const fake = await fakeIdentd((socket) => socket.end(bytes));
  return queryIdent(base(fake.port, extra));
}

test('sends "<client port> , <server port>" CR LF from the local address the client reached', async () => {
  const fake = await fakeIdentd((socket) => socket.end('40000 , 5432 : USERID : UNIX : alice\r\n'));
  const result = await queryIdent(base(fake.port, { localAddress: '127.0.0.2' }));
  assert.equal(result.kind, 'user');
  assert.deepEqual(fake.seen, [{ query: '40000 , 5432\r\n', from: '127.0.0.2' }]);
});

test('USERID replies: spacing, charset, colons in the id, OTHER, bare LF', async () => {
  assert.deepEqual(await replyWith('40000 , 5432 : USERID : UNIX : alice\r\n'), { kind: 'user', user: 'alice', os: 'UNIX', reply: '40000 , 5432 : USERID : UNIX : alice' });
  // oidentd's compact form
  assert.deepEqual(await replyWith('40000,5432:USERID:UNIX:bob\r\n'), { kind: 'user', user: 'bob', os: 'UNIX', reply: '40000,5432:USERID:UNIX:bob' });
  const utf8 = await replyWith(Buffer.from('40000 , 5432 : USERID : UNIX , UTF-8 : jürgen\r\n', 'utf8'));
  assert.equal(utf8.kind, 'user');
  if (utf8.kind === 'user') {
    assert.equal(utf8.user, 'jürgen');
    assert.equal(utf8.charset, 'UTF-8');
  }
  const other = await replyWith('40000 , 5432 : USERID : OTHER : a:b c:d  \r\n');
  assert.equal(other.kind, 'user');
  if (other.kind === 'user') {
    assert.equal(other.user, 'a:b c:d');
    assert.equal(other.os, 'OTHER');
  }
  const lf = await replyWith('40000 , 5432 : USERID : UNIX : carol\n');
  assert.equal(lf.kind === 'user' && lf.user, 'carol');
});

test('each RFC 1413 error token', async () => {
  for (const token of ['NO-USER', 'HIDDEN-USER', 'INVALID-PORT', 'UNKNOWN-ERROR'] as const) {
    const result = await replyWith(`40000 , 5432 : ERROR : ${token}\r\n`);
    assert.deepEqual(result, { kind: 'error', error: token, reply: `40000 , 5432 : ERROR : ${token}` });
  }
  assert.deepEqual(await replyWith('40000,5432:ERROR:no-user\r\n'), { kind: 'error', error: 'NO-USER', reply: '40000,5432:ERROR:no-user' });
});

test('anything else is a protocol error that names the problem', async () => {
  const cases: Array<[string, RegExp]> = [
    ['40000 , 5432 : ERROR : X-NOT-TODAY\r\n', /unknown error token 'X-NOT-TODAY'/],
    ['hello\r\n', /not "<ports> : <type> : <info>"/],
    ['40000 , 5433 : USERID : UNIX : mallory\r\n', /about ports 40000 , 5433, not the ones asked \(40000 , 5432\)/],
    ['5432 , 40000 : USERID : UNIX : mallory\r\n', /not the ones asked/],
    ['40000 , 5432 : USERID : UNIX :   \r\n', /empty user id/],
    ['40000 , 5432 : USERID : UNIX alice\r\n', /needs "<os> : <user>"/],
    ['40000 , 5432 : WHATEVER : x\r\n', /unknown reply type 'WHATEVER'/],
    ['x40000 , 5432 : USERID : UNIX : a\r\n', /does not start with a port pair/],
    ['40000 , 5432 : USERID : UNIX : a\u0000b\r\n', /NUL, CR or LF/],
    ['40000 , 5432 : USERID : UNIX : a\rb\r\n', /NUL, CR or LF/],
  ];
  for (const [reply, why] of cases) {
    const result = await replyWith(reply);
    assert.equal(result.kind, 'protocol-error', `${JSON.stringify(reply)} → ${JSON.stringify(result)}`);
    if (result.kind === 'protocol-error') assert.match(result.detail, why);
  }
});

test('a reply cut short (closed before its end of line) is never taken as a user', async () => {
  const result = await replyWith('40000 , 5432 : USERID : UNIX : ali');
  assert.equal(result.kind, 'protocol-error');
  if (result.kind === 'protocol-error') {
    assert.match(result.detail, /closed the connection in the middle of a reply/);
    assert.equal(result.reply, '40000 , 5432 : USERID : UNIX : ali');
  }
  const nothing = await replyWith('');
  assert.equal(nothing.kind, 'protocol-error');
  if (nothing.kind === 'protocol-error') assert.match(nothing.detail, /without a reply/);
});

test('replies are bounded at 1000 bytes: exactly 1000 passes, more fails at once', async () => {
  const head = '40000 , 5432 : USERID : UNIX : ';
  const user = 'u'.repeat(IDENT_MAX_REPLY_BYTES - head.length - 2);
  const exact = await replyWith(`${head}${user}\r\n`);
  assert.equal(exact.kind === 'user' && exact.user, user);

  const longLine = await replyWith(`${head}${user}x\r\n`);
  assert.equal(longLine.kind, 'protocol-error');
  if (longLine.kind === 'protocol-error') assert.match(longLine.detail, /more than 1000 bytes without an end of line/);

  // a server streaming without end: the client stops after 1000 bytes, long before its timeout
  const fake = await fakeIdentd((socket) => {
    const timer = setInterval(() => socket.write('A'.repeat(300)), 5);
    socket.on('close', () => clearInterval(timer));
  });
  const started = Date.now();
  const flood = await queryIdent(base(fake.port, { timeoutMs: 5000 }));
  assert.equal(flood.kind, 'protocol-error');
  assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
});

test('a reply arriving one byte at a time is assembled', async () => {
  const reply = '40000 , 5432 : USERID : UNIX : dave\r\n';
  const fake = await fakeIdentd((socket) => {
    let i = 0;
    const timer = setInterval(() => {
      if (i < reply.length) socket.write(reply[i++] as string);
      else {
        clearInterval(timer);
        socket.end();
      }
    }, 2);
    socket.on('close', () => clearInterval(timer));
  });
  const result = await queryIdent(base(fake.port));
  assert.equal(result.kind === 'user' && result.user, 'dave');
});

test('a silent or slow identd gives a timeout result after timeoutMs', async () => {
  const silent = await fakeIdentd(() => undefined);
  let started = Date.now();
  const result = await queryIdent(base(silent.port, { timeoutMs: 300 }));
  let elapsed = Date.now() - started;
  assert.equal(result.kind, 'timeout');
  assert.ok(elapsed >= 290 && elapsed < 1500, `elapsed ${elapsed} ms`);

  const slow = await fakeIdentd((socket) => socket.write('40000 , 5432 : USERID'));
  started = Date.now();
  const partial = await queryIdent(base(slow.port, { timeoutMs: 300 }));
  elapsed = Date.now() - started;
  assert.equal(partial.kind, 'timeout');
  if (partial.kind === 'timeout') assert.match(partial.detail, /within 300 ms \(got 21 bytes without an end of line\)/);
  assert.ok(elapsed < 1500);
});

test('no identd listening: a network-error result, never an exception', async () => {
  const port = await freePort();
  const result = await queryIdent(base(port));
  assert.equal(result.kind, 'network-error');
  if (result.kind === 'network-error') assert.equal(result.code, 'ECONNREFUSED');
  const mixed = await queryIdent(base(port, { remoteAddress: '::1' }));
  assert.equal(mixed.kind, 'network-error');
});

test('IPv4-mapped addresses from a dual-stack listener are asked over IPv4', async () => {
  const fake = await fakeIdentd((socket) => socket.end('40000 , 5432 : USERID : UNIX : erin\r\n'));
  const result = await queryIdent(base(fake.port, { remoteAddress: '::ffff:127.0.0.1', localAddress: '::ffff:127.0.0.1' }));
  assert.equal(result.kind === 'user' && result.user, 'erin');
  assert.equal(fake.seen[0]?.from, '127.0.0.1');
});

test('IPv6 identds are asked over IPv6', async () => {
  const fake = await fakeIdentd((socket) => socket.end('40000 , 5432 : USERID : UNIX : fay\r\n'), '::1');
  const result = await queryIdent(base(fake.port, { remoteAddress: '::1', localAddress: '::1' }));
  assert.equal(result.kind === 'user' && result.user, 'fay');
});

test('arguments that are not addresses and ports are a programming error (thrown)', () => {
  assert.throws(() => queryIdent(base(113, { remoteAddress: 'example.org' })), /must be IP addresses/);
  assert.throws(() => queryIdent(base(113, { remotePort: 0 })), /ports must be 1-65535/);
  assert.throws(() => queryIdent(base(113, { localPort: 70000 })), /ports must be 1-65535/);
  assert.throws(() => queryIdent(base(113, { timeoutMs: 0 })), /timeoutMs must be a positive number/);
});

test('property: the reply parser never throws and accepts only replies about the asked ports', () => {
  const token = fc.constantFrom('USERID', 'ERROR', 'userid', 'X', '', 'NO-USER', 'UNIX', ':', ',', ' ');
  const piece = fc.oneof(token, fc.string({ maxLength: 12 }), fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a).toString('latin1')));
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 10 }), fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }), fc.boolean(), (pieces, a, b, prefix) => {
      const text = (prefix ? `${a} , ${b} : ` : '') + pieces.join(' ');
      const result = parseIdentReply(Buffer.from(text, 'latin1'), a, b);
      assert.ok(['user', 'error', 'protocol-error'].includes(result.kind));
      if (result.kind === 'user') {
        assert.ok(prefix || /^\s*\d+\s*,\s*\d+\s*:/.test(text));
        assert.notEqual(result.user, '');
        assert.ok(!/[\r\n\0]/.test(result.user));
      }
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.stringMatching(/^[A-Za-z0-9_.:@ -]{1,40}$/).filter((u) => u.trim() !== ''),
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 1, max: 65535 }),
      (user, a, b) => {
        const result = parseIdentReply(Buffer.from(`${a},${b}:USERID:UNIX:${user}`), a, b);
        assert.deepEqual(result.kind === 'user' && result.user, user.trim());
      },
    ),
  );
});
