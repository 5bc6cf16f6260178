// Tests of the PostgreSQL startup parser and the ErrorResponse builder: hand-built messages,
// messages captured from the real `psql` talking to the real PostgreSQL on 127.0.0.1:5432
// through a recording proxy, our ErrorResponse shown by the real psql, and fast-check properties.
// Owns: test/dbrelay/postgres.test.ts. Must not: touch the database's data (only `select 1`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import {
  PG_ACCEPT_SSL,
  PG_CODE,
  PG_MAX_STARTUP_BYTES,
  PG_REFUSE_ENCRYPTION,
  PgStartupParser,
  buildEncryptionRequest,
  buildErrorResponse,
  buildStartupMessage,
  parseStartup,
  type StartupResult,
} from '../../src/dbrelay/postgres.ts';
import { run, recordingProxy } from './helpers.ts';

const PG_PORT = 5432;
/** psql gives up on a silent server after 10 s rather than hanging the test. */
const PSQL = { env: { PGCONNECT_TIMEOUT: '10' } };

function int32s(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeInt32BE(v, 4 * i));
  return b;
}

// ---------------------------------------------------------------------------------------------
// Hand-built messages

test('StartupMessage 3.0: parameters, user, database; bytes after it are kept', () => {
  const msg = buildStartupMessage({ user: 'alice', database: 'shop', application_name: 'psql', client_encoding: 'UTF8' });
  const r = parseStartup(Buffer.concat([msg, Buffer.from('Q')]));
  assert.equal(r.kind, 'startup');
  if (r.kind !== 'startup') return;
  assert.equal(r.startup.user, 'alice');
  assert.equal(r.startup.database, 'shop');
  assert.equal(r.startup.parameters.get('application_name'), 'psql');
  assert.deepEqual([r.startup.majorVersion, r.startup.minorVersion], [3, 0]);
  assert.ok(r.raw.equals(msg));
  assert.equal(r.rest.toString(), 'Q');
});

test('database defaults to the user; a repeated key is read as the server reads it (last wins)', () => {
  const r = parseStartup(buildStartupMessage({ user: 'bob' }));
  assert.equal(r.kind, 'startup');
  if (r.kind === 'startup') assert.deepEqual([r.startup.user, r.startup.database], ['bob', 'bob']);
  const empty = parseStartup(buildStartupMessage({ user: 'bob', database: '' }));
  if (empty.kind === 'startup') assert.equal(empty.startup.database, 'bob');
  const twice = parseStartup(buildStartupMessage([['user', 'alice'], ['user', 'postgres']]));
  assert.equal(twice.kind, 'startup');
  if (twice.kind === 'startup') {
    assert.equal(twice.startup.user, 'postgres');
    assert.equal(twice.startup.pairs.length, 2);
  }
  const none = parseStartup(buildStartupMessage({ database: 'x' }));
  assert.equal(none.kind, 'startup');
  if (none.kind === 'startup') assert.equal(none.startup.user, undefined);
  // Protocol 3.2 (PostgreSQL 18) is still a 3.x startup: the server negotiates the minor version.
  const v32 = Buffer.from(buildStartupMessage({ user: 'u' }));
  v32.writeInt32BE((3 << 16) | 2, 4);
  const r32 = parseStartup(v32);
  assert.equal(r32.kind, 'startup');
  if (r32.kind === 'startup') assert.equal(r32.startup.minorVersion, 2);
});

test('SSLRequest, GSSENCRequest and CancelRequest', () => {
  const hello = Buffer.from([0x16, 0x03, 0x01]);
  const ssl = parseStartup(Buffer.concat([buildEncryptionRequest('ssl'), hello]));
  assert.equal(ssl.kind, 'ssl-request');
  if (ssl.kind === 'ssl-request') assert.ok(ssl.rest.equals(hello), 'bytes sent before our answer are reported, never dropped');
  assert.equal(parseStartup(buildEncryptionRequest('gssenc')).kind, 'gssenc-request');
  const key = Buffer.from([1, 2, 3, 4]);
  const cancel = parseStartup(Buffer.concat([int32s(16, PG_CODE.CANCEL, 4242), key]));
  assert.equal(cancel.kind, 'cancel');
  if (cancel.kind === 'cancel') {
    assert.equal(cancel.pid, 4242);
    assert.ok(cancel.key.equals(key));
  }
  assert.deepEqual([...PG_REFUSE_ENCRYPTION], [0x4e]);
  assert.deepEqual([...PG_ACCEPT_SSL], [0x53]);
});

test('refusals say why', () => {
  const cases: Array<[Buffer, RegExp]> = [
    [int32s(4, 0), /invalid length of startup packet: 4/],
    [int32s(10001, PG_CODE.PROTOCOL_3_0), /invalid length of startup packet: 10001/],
    [int32s(-1), /invalid length/],
    [int32s(12, PG_CODE.SSL, 0), /SSLRequest of 12 bytes, expected 8/],
    [int32s(12, PG_CODE.GSSENC, 0), /GSSENCRequest of 12 bytes/],
    [int32s(12, PG_CODE.CANCEL, 1), /CancelRequest of 12 bytes/],
    [int32s(100, 2 << 16), /unsupported frontend protocol 2\.0/],
    [int32s(8, 80877199), /unknown request code 80877199/],
    [int32s(8, PG_CODE.PROTOCOL_3_0), /expected terminator as last byte/],
    [Buffer.concat([int32s(15, PG_CODE.PROTOCOL_3_0), Buffer.from('user\0')]).subarray(0, 13), /./],
    [Buffer.concat([int32s(19, PG_CODE.PROTOCOL_3_0), Buffer.from('user\0bob\0\0\0\0')]), /expected terminator as last byte/],
    [Buffer.concat([int32s(14, PG_CODE.PROTOCOL_3_0), Buffer.from('user\0\0')]), /expected terminator as last byte/],
    [Buffer.concat([int32s(13, PG_CODE.PROTOCOL_3_0), Buffer.from('user\0')]), /parameter value is missing/],
  ];
  for (const [bytes, reason] of cases) {
    const r = parseStartup(bytes);
    if (bytes.length === 13 && r.kind === 'need-more') continue; // the truncated case: still waiting
    assert.equal(r.kind, 'invalid', bytes.toString('hex'));
    if (r.kind === 'invalid') assert.match(r.reason, reason, bytes.toString('hex'));
  }
  // An unknown code is refused as soon as it is read, without waiting for the announced body.
  assert.equal(new PgStartupParser().push(int32s(5000, 0x12345678)).kind, 'invalid');
});

test('ErrorResponse bytes', () => {
  const e = buildErrorResponse('no\0pe');
  assert.equal(e[0], 0x45);
  assert.equal(e.readInt32BE(1), e.length - 1);
  assert.equal(e.subarray(5).toString('latin1'), 'SFATAL\0VFATAL\0C28000\0Mno pe\0\0');
  assert.throws(() => buildErrorResponse('x', { code: '2800' }), /5 characters/);
});

// ---------------------------------------------------------------------------------------------
// Real client, real server


const conninfo = (port: number, extra: string): string => `host=127.0.0.1 port=${port} user=postgres dbname=postgres ${extra}`;

test('real psql through a recording proxy: the StartupMessage parses, byte by byte too', async () => {
  const proxy = await recordingProxy(PG_PORT);
  try {
    const ran = await run('psql', ['-X', '-w', conninfo(proxy.port, 'sslmode=disable gssencmode=disable application_name=warpstone-test'), '-c', 'select 1'], PSQL);
    assert.equal(ran.code, 0, ran.stderr);
    const conn = proxy.connections[0];
    assert.ok(conn);
    const bytes = Buffer.concat(conn.client);
    const whole = parseStartup(bytes);
    assert.equal(whole.kind, 'startup');
    if (whole.kind !== 'startup') return;
    assert.equal(whole.startup.user, 'postgres');
    assert.equal(whole.startup.database, 'postgres');
    assert.equal(whole.startup.parameters.get('application_name'), 'warpstone-test');
    assert.deepEqual([whole.startup.majorVersion, whole.startup.minorVersion], [3, 0]);
    assert.ok(whole.rest.length > 0, 'the query that followed the startup stays in rest');
    const parser = new PgStartupParser();
    let r: StartupResult = { kind: 'need-more' };
    for (let i = 0; i < bytes.length && r.kind === 'need-more'; i++) r = parser.push(bytes.subarray(i, i + 1));
    assert.equal(r.kind, 'startup');
    if (r.kind === 'startup') assert.deepEqual(r.startup, whole.startup);
  } finally {
    await proxy.close();
  }
});

// psql sends a GSSENCRequest only when it holds a Kerberos credential cache, which this machine
// has not; the hand-built GSSENCRequest above stands in for it.
test('real psql with sslmode=require sends an SSLRequest, and gives up on our N', async () => {
  const proxy = await recordingProxy(PG_PORT);
  try {
    const ssl = await run('psql', ['-X', '-w', conninfo(proxy.port, 'sslmode=require gssencmode=disable'), '-c', 'select 1'], PSQL);
    assert.notEqual(ssl.code, 0, 'this server has no TLS: psql must refuse to go on');
    assert.match(ssl.stderr, /server does not support SSL/);
    const conn = proxy.connections[0];
    assert.ok(conn);
    const r = parseStartup(Buffer.concat(conn.client));
    assert.equal(r.kind, 'ssl-request');
    if (r.kind === 'ssl-request') assert.equal(r.rest.length, 0, 'psql waits for the answer before sending more');
    assert.ok(Buffer.concat(conn.server).equals(PG_REFUSE_ENCRYPTION), 'the server answered N');
  } finally {
    await proxy.close();
  }
});

test('the real psql shows our ErrorResponse as a FATAL with our message', async () => {
  const message = "warpstone: identity 'alice' (peer uid 1001) may not log in as database user 'postgres'";
  const seen: StartupResult[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    const parser = new PgStartupParser();
    socket.on('data', (d: Buffer) => {
      const r = parser.push(d);
      if (r.kind === 'need-more') return;
      seen.push(r);
      socket.end(buildErrorResponse(message));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const port = (server.address() as net.AddressInfo).port;
    const ran = await run('psql', ['-X', '-w', conninfo(port, 'sslmode=disable gssencmode=disable'), '-c', 'select 1'], PSQL);
    assert.notEqual(ran.code, 0);
    assert.ok(ran.stderr.includes(`FATAL:  ${message}`), ran.stderr);
    const r = seen[0];
    assert.equal(r?.kind, 'startup');
    if (r?.kind === 'startup') assert.deepEqual([r.startup.user, r.startup.database], ['postgres', 'postgres']);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

// ---------------------------------------------------------------------------------------------
// Properties

test('property: random bytes in random chunks never throw and never buffer beyond the cap', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 12 }), (chunks) => {
      const parser = new PgStartupParser();
      for (const chunk of chunks) {
        const r = parser.push(Buffer.from(chunk));
        assert.ok(parser.bufferedBytes <= PG_MAX_STARTUP_BYTES, 'buffered beyond the cap');
        if (r.kind !== 'need-more') break;
      }
    }),
    { numRuns: 2000 },
  );
});

test('property: lying lengths either wait within the cap or are refused at once', () => {
  fc.assert(
    fc.property(fc.integer({ min: -0x80000000, max: 0x7fffffff }), fc.constantFrom(PG_CODE.PROTOCOL_3_0, PG_CODE.SSL, PG_CODE.GSSENC, PG_CODE.CANCEL), fc.uint8Array({ maxLength: 100 }), (length, code, body) => {
      const parser = new PgStartupParser();
      const r = parser.push(Buffer.concat([int32s(length, code), Buffer.from(body)]));
      if (length < 8 || length > PG_MAX_STARTUP_BYTES) assert.equal(r.kind, 'invalid');
      assert.ok(parser.bufferedBytes <= PG_MAX_STARTUP_BYTES);
    }),
    { numRuns: 3000 },
  );
});

const safeText = fc.string({ maxLength: 30 }).map((s) => s.replace(/\0/g, ''));

test('property: valid StartupMessages split anywhere parse to what was sent; corrupted ones never throw', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 30 }).map((s) => s.replace(/\0/g, 'x')),
      safeText,
      fc.array(fc.tuple(safeText.map((s) => `x${s}`), safeText), { maxLength: 8 }),
      fc.uint8Array({ maxLength: 20 }),
      fc.nat(),
      fc.nat(),
      fc.integer({ min: 0, max: 255 }),
      (user, database, extra, tail, cut, flipAt, flipTo) => {
        const msg = buildStartupMessage([['user', user], ['database', database], ...extra]);
        const all = Buffer.concat([msg, Buffer.from(tail)]);
        const at = cut % (all.length + 1);
        const parser = new PgStartupParser();
        let r = parser.push(all.subarray(0, at));
        let unseen = all.subarray(at);
        if (r.kind === 'need-more') {
          r = parser.push(unseen);
          unseen = Buffer.alloc(0);
        }
        assert.equal(r.kind, 'startup');
        if (r.kind !== 'startup') return;
        assert.equal(r.startup.user, user);
        assert.equal(r.startup.database, database === '' ? user : database);
        assert.deepEqual(r.startup.pairs, [['user', user], ['database', database], ...extra]);
        assert.ok(Buffer.concat([r.rest, unseen]).equals(Buffer.from(tail)));
        const bad = Buffer.from(msg);
        bad[flipAt % bad.length] = flipTo;
        parseStartup(bad);
        assert.equal(parseStartup(msg.subarray(0, cut % msg.length)).kind, 'need-more');
      },
    ),
    { numRuns: 2000 },
  );
});
