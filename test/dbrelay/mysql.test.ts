// Tests of the MySQL/MariaDB handshake parsers and the ERR builder: hand-built packets, packets
// captured from the real `mariadb` client talking to the real MariaDB on 127.0.0.1:3306 through
// a recording proxy, our ERR shown by the real client, and fast-check properties.
// Owns: test/dbrelay/mysql.test.ts. Must not: touch the database's data (only `select 1`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import {
  CLIENT,
  MYSQL_MAX_HANDSHAKE_BYTES,
  MysqlClientHandshakeParser,
  MysqlGreetingParser,
  buildErrPacket,
  buildPacket,
  parseErrPayload,
  readPacket,
  type ClientResult,
} from '../../src/dbrelay/mysql.ts';
import { run, recordingProxy } from './helpers.ts';

const MARIADB_PORT = 3306;

// ---------------------------------------------------------------------------------------------
// Builders used only by the tests

function lenenc(n: number): Buffer {
  if (n < 0xfb) return Buffer.from([n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = 0xfc;
    b.writeUInt16LE(n, 1);
    return b;
  }
  const b = Buffer.alloc(4);
  b[0] = 0xfd;
  b.writeUIntLE(n, 1, 3);
  return b;
}
const lenencStr = (s: Buffer): Buffer => Buffer.concat([lenenc(s.length), s]);
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');

interface Response41 {
  capabilities: number;
  user: string;
  auth: Buffer;
  database?: string;
  plugin?: string;
  attributes?: Array<[string, string]>;
}

function response41(r: Response41): Buffer {
  const head = Buffer.alloc(32);
  head.writeUInt32LE(r.capabilities >>> 0, 0);
  head.writeUInt32LE(16 * 1024 * 1024, 4);
  head[8] = 33;
  const parts = [head, cstr(r.user)];
  if (r.capabilities & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA) parts.push(lenencStr(r.auth));
  else if (r.capabilities & CLIENT.SECURE_CONNECTION) parts.push(Buffer.from([r.auth.length]), r.auth);
  else parts.push(r.auth, Buffer.from([0]));
  if (r.capabilities & CLIENT.CONNECT_WITH_DB) parts.push(cstr(r.database ?? ''));
  if (r.capabilities & CLIENT.PLUGIN_AUTH) parts.push(cstr(r.plugin ?? ''));
  if (r.capabilities & CLIENT.CONNECT_ATTRS) {
    const block = Buffer.concat((r.attributes ?? []).flatMap(([k, v]) => [lenencStr(Buffer.from(k)), lenencStr(Buffer.from(v))]));
    parts.push(lenencStr(block));
  }
  return Buffer.concat(parts);
}

const SERVER_CAPS =
  CLIENT.LONG_FLAG |
  CLIENT.CONNECT_WITH_DB |
  CLIENT.PROTOCOL_41 |
  CLIENT.TRANSACTIONS |
  CLIENT.SECURE_CONNECTION |
  CLIENT.MULTI_STATEMENTS |
  CLIENT.MULTI_RESULTS |
  CLIENT.PLUGIN_AUTH |
  CLIENT.CONNECT_ATTRS |
  CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA;

/** An Initial Handshake v10 as MariaDB sends it (CLIENT_MYSQL unset, 20-byte scramble). */
function greeting(caps = SERVER_CAPS, version = '5.5.5-10.11.99-MariaDB-warpstone-test'): Buffer {
  const scramble = Buffer.from('abcdefghijklmnopqrst');
  const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
  let o = 0;
  fixed.writeUInt32LE(42, o);
  o += 4;
  scramble.copy(fixed, o, 0, 8);
  o += 8;
  fixed[o++] = 0;
  fixed.writeUInt16LE(caps & 0xffff, o);
  o += 2;
  fixed[o++] = 33;
  fixed.writeUInt16LE(2, o);
  o += 2;
  fixed.writeUInt16LE(caps >>> 16, o);
  o += 2;
  fixed[o++] = 21;
  return buildPacket(0, Buffer.concat([Buffer.from([10]), cstr(version), fixed, scramble.subarray(8), Buffer.from([0]), cstr('mysql_native_password')]));
}

function parseClient(bytes: Buffer): ClientResult {
  return new MysqlClientHandshakeParser().push(bytes);
}

// ---------------------------------------------------------------------------------------------
// Hand-built packets

test('HandshakeResponse41 with lenenc auth, database, plugin and attributes', () => {
  const caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT.CONNECT_WITH_DB | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_ATTRS;
  const auth = Buffer.alloc(300, 7); // a length that needs the 0xFC form
  const packet = buildPacket(1, response41({ capabilities: caps, user: 'alice', auth, database: 'shop', plugin: 'caching_sha2_password', attributes: [['_client_name', 'libmariadb'], ['program_name', 'mysql']] }));
  const r = parseClient(Buffer.concat([packet, Buffer.from('after')]));
  assert.equal(r.kind, 'response');
  if (r.kind !== 'response') return;
  assert.equal(r.response.format, 41);
  assert.equal(r.response.user, 'alice');
  assert.ok(r.response.authResponse.equals(auth));
  assert.equal(r.response.database, 'shop');
  assert.equal(r.response.authPluginName, 'caching_sha2_password');
  assert.deepEqual(r.response.attributes, [['_client_name', 'libmariadb'], ['program_name', 'mysql']]);
  assert.equal(r.packet.sequence, 1);
  assert.ok(r.packet.raw.equals(packet));
  assert.equal(r.rest.toString(), 'after');
});

test('HandshakeResponse41 auth data: one length byte, or NUL-terminated; trailing fields may be absent', () => {
  const secure = parseClient(buildPacket(1, response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.CONNECT_WITH_DB, user: 'bob', auth: Buffer.from([0, 1, 2, 0]), database: 'db1' })));
  assert.equal(secure.kind, 'response');
  if (secure.kind === 'response') {
    assert.deepEqual([...secure.response.authResponse], [0, 1, 2, 0]);
    assert.equal(secure.response.database, 'db1');
    assert.equal(secure.response.authPluginName, undefined);
  }
  const old = parseClient(buildPacket(1, response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.PLUGIN_AUTH, user: 'carol', auth: Buffer.from('12345678'), plugin: 'mysql_old_password' })));
  assert.equal(old.kind, 'response');
  if (old.kind === 'response') {
    assert.equal(old.response.user, 'carol');
    assert.equal(old.response.authResponse.toString(), '12345678');
    assert.equal(old.response.authPluginName, 'mysql_old_password');
  }
  // Flags promise a database and a plugin, but the packet ends after the auth data.
  const short = response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION, user: 'dave', auth: Buffer.alloc(0) });
  short.writeUInt32LE(CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.CONNECT_WITH_DB | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_ATTRS, 0);
  const r = parseClient(buildPacket(1, short));
  assert.equal(r.kind, 'response');
  if (r.kind === 'response') assert.deepEqual([r.response.user, r.response.database, r.response.authPluginName, r.response.attributes], ['dave', undefined, undefined, undefined]);
});

test('HandshakeResponse320, with and without a database', () => {
  const withDb = Buffer.concat([Buffer.from([CLIENT.CONNECT_WITH_DB | CLIENT.LONG_PASSWORD, 0]), Buffer.from([0, 0, 1]), cstr('olduser'), cstr('scrambl'), cstr('olddb')]);
  const r = parseClient(buildPacket(1, withDb));
  assert.equal(r.kind, 'response');
  if (r.kind === 'response') assert.deepEqual([r.response.format, r.response.user, r.response.authResponse.toString(), r.response.database], [320, 'olduser', 'scrambl', 'olddb']);
  const noDb = Buffer.concat([Buffer.from([CLIENT.LONG_PASSWORD, 0, 0, 0, 1]), cstr('u2'), Buffer.from('12345678')]);
  const r2 = parseClient(buildPacket(1, noDb));
  assert.equal(r2.kind, 'response');
  if (r2.kind === 'response') assert.deepEqual([r2.response.user, r2.response.authResponse.toString(), r2.response.database], ['u2', '12345678', undefined]);
});

test('SSLRequest: exactly 32 bytes, or any first packet carrying CLIENT_SSL (servers switch to TLS on the flag)', () => {
  const ssl = Buffer.alloc(32);
  ssl.writeUInt32LE(CLIENT.PROTOCOL_41 | CLIENT.SSL | CLIENT.SECURE_CONNECTION, 0);
  const hello = Buffer.from([0x16, 0x03, 0x01]);
  const r = parseClient(Buffer.concat([buildPacket(1, ssl), hello]));
  assert.equal(r.kind, 'ssl-request');
  if (r.kind === 'ssl-request') {
    assert.equal(r.exact, true);
    assert.ok(r.rest.equals(hello));
  }
  const long = response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.SSL | CLIENT.SECURE_CONNECTION, user: 'root', auth: Buffer.alloc(0) });
  const r2 = parseClient(buildPacket(1, long));
  assert.equal(r2.kind, 'ssl-request');
  if (r2.kind === 'ssl-request') assert.equal(r2.exact, false);
  const old = parseClient(buildPacket(1, Buffer.from([CLIENT.SSL & 0xff, CLIENT.SSL >> 8, 0, 0, 1])));
  assert.equal(old.kind, 'ssl-request');
});

test('refusals say why', () => {
  const cases: Array<[Buffer, RegExp]> = [
    [buildPacket(1, Buffer.from([0])), /too short/],
    [buildPacket(1, Buffer.alloc(20, 0).fill(0xff, 0, 4)), /shorter than its 32-byte header/],
    [buildPacket(1, Buffer.concat([Buffer.from([0x00, 0x02, 0, 0]), Buffer.alloc(28), Buffer.from('nouser')])), /not NUL-terminated/],
    [Buffer.from([0xff, 0xff, 0x00, 0x01]), /longer than the 65536-byte handshake limit/],
  ];
  for (const [bytes, reason] of cases) {
    const r = parseClient(bytes);
    assert.equal(r.kind, 'invalid', bytes.toString('hex'));
    if (r.kind === 'invalid') assert.match(r.reason, reason);
  }
  const lyingAttrs = Buffer.concat([response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION, user: 'u', auth: Buffer.alloc(0) }), Buffer.from([40, 3, 0x61])]);
  lyingAttrs.writeUInt32LE(CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.CONNECT_ATTRS, 0);
  // Past the user name nothing makes the packet unparsable: the server authenticates that user
  // whatever follows (MariaDB accepts a login whose attribute block is malformed inside), so the
  // relay must judge the user, not let a broken tail through as "unparsable".
  const tails: Array<[Buffer, RegExp]> = [
    [buildPacket(1, Buffer.concat([Buffer.from([0x00, 0x82, 0, 0]), Buffer.alloc(28), cstr('u'), Buffer.from([50, 1, 2])])), /auth data runs past/],
    [buildPacket(1, Buffer.concat([Buffer.from([0x00, 0x02, 0x20, 0]), Buffer.alloc(28), cstr('u'), Buffer.from([0xfb])])), /bad length-encoded/],
    [buildPacket(1, lyingAttrs), /attributes claim 40 bytes/],
  ];
  const insideAttrs = Buffer.concat([response41({ capabilities: CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION, user: 'root', auth: Buffer.alloc(0) }), Buffer.from([3, 5, 0x61, 0x62])]);
  insideAttrs.writeUInt32LE(CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.CONNECT_ATTRS, 0);
  tails.push([buildPacket(1, insideAttrs), /attribute runs past its block/]);
  for (const [bytes, problem] of tails) {
    const r = parseClient(bytes);
    assert.equal(r.kind, 'response', bytes.toString('hex'));
    if (r.kind === 'response') {
      assert.match(r.response.user, /^(u|root)$/);
      assert.match(r.response.problem ?? '', problem);
    }
  }
});

test('greeting: MariaDB v10, an ERR in its place, a wrong protocol version', () => {
  const r = new MysqlGreetingParser().push(greeting());
  assert.equal(r.kind, 'greeting');
  if (r.kind === 'greeting') {
    assert.equal(r.greeting.serverVersion, '5.5.5-10.11.99-MariaDB-warpstone-test');
    assert.equal(r.greeting.connectionId, 42);
    assert.equal(r.greeting.authPluginName, 'mysql_native_password');
    assert.equal(r.greeting.authPluginData.toString(), 'abcdefghijklmnopqrst');
    assert.equal(r.greeting.capabilities, SERVER_CAPS);
  }
  const err = new MysqlGreetingParser().push(buildErrPacket({ sequence: 0, code: 1129, message: "Host '10.0.0.1' is blocked", protocol41: false }));
  assert.equal(err.kind, 'error');
  if (err.kind === 'error') assert.deepEqual(err.error, { code: 1129, sqlState: undefined, message: "Host '10.0.0.1' is blocked" });
  const v9 = new MysqlGreetingParser().push(buildPacket(0, Buffer.from([9, 0x41, 0])));
  assert.equal(v9.kind, 'invalid');
  if (v9.kind === 'invalid') assert.match(v9.reason, /protocol version 9/);
});

test('ERR packet bytes', () => {
  const packet = buildErrPacket({ sequence: 2, message: 'nope' });
  assert.equal(packet.toString('hex'), '0d000002' + 'ff1504' + Buffer.from('#28000nope').toString('hex'));
  const r = readPacket(packet);
  assert.equal(r.kind, 'packet');
  if (r.kind === 'packet') assert.deepEqual(parseErrPayload(r.packet.payload), { code: 1045, sqlState: '28000', message: 'nope' });
  assert.throws(() => buildErrPacket({ sequence: 0, message: 'x', sqlState: '280' }), /5 characters/);
});

// ---------------------------------------------------------------------------------------------
// Real client, real server


const mariadbArgs = (port: number, ...more: string[]): string[] => ['--no-defaults', '--protocol=TCP', '-h', '127.0.0.1', '-P', String(port), '-u', 'root', ...more];

test('real mariadb client through a recording proxy: greeting and HandshakeResponse41 parse, split anywhere', async () => {
  const proxy = await recordingProxy(MARIADB_PORT);
  try {
    const ran = await run('mariadb', mariadbArgs(proxy.port, '--skip-ssl', '-D', 'mysql', '-e', 'select 1'));
    assert.equal(ran.code, 0, ran.stderr);
    const conn = proxy.connections[0];
    assert.ok(conn);
    const serverBytes = Buffer.concat(conn.server);
    const g = new MysqlGreetingParser().push(serverBytes);
    assert.equal(g.kind, 'greeting');
    if (g.kind !== 'greeting') return;
    assert.match(g.greeting.serverVersion, /MariaDB/);
    assert.equal(g.greeting.protocolVersion, 10);
    assert.equal(g.greeting.authPluginData.length, 20);
    assert.ok(g.greeting.capabilities & CLIENT.PROTOCOL_41);

    const clientBytes = Buffer.concat(conn.client);
    const whole = parseClient(clientBytes);
    assert.equal(whole.kind, 'response');
    if (whole.kind !== 'response') return;
    assert.equal(whole.response.user, 'root');
    assert.equal(whole.response.database, 'mysql');
    assert.equal(whole.response.format, 41);
    assert.equal(whole.packet.sequence, 1);
    assert.ok(whole.response.authPluginName);
    assert.ok(whole.response.attributes?.some(([k]) => k === '_client_name'));
    assert.ok(whole.rest.length > 0, 'the query that followed the handshake stays in rest');
    // Byte by byte gives the same answer.
    const parser = new MysqlClientHandshakeParser();
    let r: ClientResult = { kind: 'need-more' };
    for (let i = 0; i < whole.packet.raw.length && r.kind === 'need-more'; i++) r = parser.push(clientBytes.subarray(i, i + 1));
    assert.equal(r.kind, 'response');
    if (r.kind === 'response') assert.deepEqual(r.response, whole.response);
  } finally {
    await proxy.close();
  }
});

test('real mariadb --ssl against a greeting offering TLS sends an SSLRequest', async () => {
  // MariaDB here has no TLS, and `mariadb --ssl` then silently goes on in plain text: offer TLS
  // by setting CLIENT_SSL in the real greeting so the client sends its SSLRequest.
  const proxy = await recordingProxy(MARIADB_PORT, (chunk) => {
    const g = new MysqlGreetingParser().push(chunk);
    if (g.kind !== 'greeting') return chunk;
    const out = Buffer.from(chunk);
    const capsAt = 4 + 1 + Buffer.byteLength(g.greeting.serverVersion) + 1 + 4 + 8 + 1;
    out.writeUInt16LE(out.readUInt16LE(capsAt) | CLIENT.SSL, capsAt);
    return out;
  });
  try {
    const plain = await run('mariadb', mariadbArgs(proxy.port, '--ssl', '-e', 'select 1'));
    // The client fails somewhere in TLS (the real server never agreed); what matters is what it sent.
    assert.notEqual(plain.code, 0);
    const conn = proxy.connections[0];
    assert.ok(conn);
    const r = parseClient(Buffer.concat(conn.client));
    assert.equal(r.kind, 'ssl-request', JSON.stringify(r));
    if (r.kind !== 'ssl-request') return;
    assert.equal(r.exact, true);
    assert.equal(r.packet.sequence, 1);
    assert.equal(r.packet.payload.length, 32);
    if (r.rest.length > 0) assert.equal(r.rest[0], 0x16, 'a TLS record follows the SSLRequest');
  } finally {
    await proxy.close();
  }
});

/** A fake server: sends `first`, then (if given) answers the client's first packet with `answer(packet)`. */
function fakeServer(first: Buffer, answer?: (client: ClientResult) => Buffer): Promise<{ port: number; seen: ClientResult[]; close(): Promise<void> }> {
  const seen: ClientResult[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write(first);
    if (!answer) {
      socket.end();
      return;
    }
    const parser = new MysqlClientHandshakeParser();
    socket.on('data', (d: Buffer) => {
      const r = parser.push(d);
      if (r.kind === 'need-more') return;
      seen.push(r);
      socket.end(answer(r));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        seen,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      }),
    );
  });
}

test('the real mariadb client shows our ERR after its handshake as ERROR 1045 (28000) with our message', async () => {
  const message = "warpstone: identity 'alice' (ident) may not log in as database user 'root'";
  const fake = await fakeServer(greeting(), (r) => {
    const seq = r.kind === 'response' ? r.packet.sequence + 1 : 2;
    return buildErrPacket({ sequence: seq, message });
  });
  try {
    const ran = await run('mariadb', mariadbArgs(fake.port, '--skip-ssl', '-D', 'shop', '-e', 'select 1'));
    assert.notEqual(ran.code, 0);
    assert.ok(ran.stderr.includes(`ERROR 1045 (28000): ${message}`), ran.stderr);
    const r = fake.seen[0];
    assert.equal(r?.kind, 'response');
    if (r?.kind === 'response') assert.deepEqual([r.response.user, r.response.database], ['root', 'shop']);
  } finally {
    await fake.close();
  }
});

test('the real mariadb client shows an ERR sent in place of the greeting (sequence 0)', async () => {
  const message = 'warpstone: source 127.0.0.1 is banned';
  const fake = await fakeServer(buildErrPacket({ sequence: 0, message, protocol41: false }));
  try {
    const ran = await run('mariadb', mariadbArgs(fake.port, '--skip-ssl', '-e', 'select 1'));
    assert.notEqual(ran.code, 0);
    // Before the greeting the client reads no SQLSTATE and prints its generic HY000, as for mysqld's host errors.
    assert.ok(ran.stderr.includes(`ERROR 1045 (HY000): ${message}`), ran.stderr);
    assert.ok(!ran.stderr.includes('#28000'), ran.stderr);
  } finally {
    await fake.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Properties

const CAP = 4096;

test('property: random bytes in random chunks never throw and never buffer beyond the cap', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 700 }), { maxLength: 20 }), (chunks) => {
      const client = new MysqlClientHandshakeParser(CAP);
      const server = new MysqlGreetingParser(CAP);
      let clientDone = false;
      let serverDone = false;
      for (const chunk of chunks) {
        const b = Buffer.from(chunk);
        if (!clientDone) clientDone = client.push(b).kind !== 'need-more';
        if (!serverDone) serverDone = server.push(b).kind !== 'need-more';
        assert.ok(client.bufferedBytes <= CAP && server.bufferedBytes <= CAP, 'buffered beyond the cap');
      }
    }),
    { numRuns: 3000 },
  );
});

test('property: lying lengths either wait within the cap or are refused at once', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffff }), fc.uint8Array({ maxLength: 200 }), (length, body) => {
      const head = Buffer.alloc(4);
      head.writeUIntLE(length, 0, 3);
      head[3] = 1;
      const parser = new MysqlClientHandshakeParser(CAP);
      const r = parser.push(Buffer.concat([head, Buffer.from(body)]));
      if (4 + length > CAP) assert.equal(r.kind, 'invalid');
      else if (body.length < length) assert.equal(r.kind, 'need-more');
      else assert.notEqual(r.kind, 'need-more');
      assert.ok(parser.bufferedBytes <= CAP);
    }),
    { numRuns: 3000 },
  );
  // Default cap: a 16 MiB header is refused without waiting for the body.
  const r = new MysqlClientHandshakeParser().push(Buffer.from([0xfe, 0xff, 0xff, 1]));
  assert.equal(r.kind, 'invalid');
  assert.equal(MYSQL_MAX_HANDSHAKE_BYTES, 65536);
});

const safeText = fc.string({ maxLength: 40 }).map((s) => s.replace(/\0/g, ''));

const arbResponse = fc.record({
  flags: fc.record({
    lenenc: fc.boolean(),
    secure: fc.boolean(),
    db: fc.boolean(),
    plugin: fc.boolean(),
    attrs: fc.boolean(),
  }),
  user: safeText,
  auth: fc.uint8Array({ maxLength: 300 }),
  database: safeText,
  plugin: safeText,
  attributes: fc.array(fc.tuple(safeText, safeText), { maxLength: 5 }),
});

test('property: valid HandshakeResponse41 packets split anywhere parse to what was sent; mutated ones never throw', () => {
  fc.assert(
    fc.property(arbResponse, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 255 }), (a, cut, flipAt, flipTo) => {
      let caps = CLIENT.PROTOCOL_41;
      if (a.flags.lenenc) caps |= CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA;
      if (a.flags.secure) caps |= CLIENT.SECURE_CONNECTION;
      if (a.flags.db) caps |= CLIENT.CONNECT_WITH_DB;
      if (a.flags.plugin) caps |= CLIENT.PLUGIN_AUTH;
      if (a.flags.attrs) caps |= CLIENT.CONNECT_ATTRS;
      // Without a length prefix the auth data ends at a NUL, and one-byte lengths stop at 255.
      let auth = Buffer.from(a.auth);
      if (!a.flags.lenenc && !a.flags.secure) auth = Buffer.from(auth.filter((x) => x !== 0));
      if (!a.flags.lenenc && a.flags.secure) auth = auth.subarray(0, 255);
      const packet = buildPacket(1, response41({ capabilities: caps, user: a.user, auth, database: a.database, plugin: a.plugin, attributes: a.attributes }));
      const at = cut % (packet.length + 1);
      const parser = new MysqlClientHandshakeParser();
      let r = parser.push(packet.subarray(0, at));
      if (r.kind === 'need-more') r = parser.push(packet.subarray(at));
      assert.equal(r.kind, 'response');
      if (r.kind !== 'response') return;
      assert.equal(r.response.user, a.user);
      assert.ok(r.response.authResponse.equals(auth));
      assert.equal(r.response.database, a.flags.db ? a.database : undefined);
      assert.equal(r.response.authPluginName, a.flags.plugin ? a.plugin : undefined);
      if (a.flags.attrs) assert.deepEqual(r.response.attributes, a.attributes);
      assert.equal(r.rest.length, 0);
      // One corrupted byte anywhere: any verdict, never an exception.
      const bad = Buffer.from(packet);
      bad[flipAt % bad.length] = flipTo;
      new MysqlClientHandshakeParser().push(bad);
      new MysqlGreetingParser().push(bad);
      // Truncated anywhere: waits for more, never claims a result.
      assert.equal(new MysqlClientHandshakeParser().push(packet.subarray(0, at === packet.length ? at - 1 : at)).kind, 'need-more');
    }),
    { numRuns: 2000 },
  );
});

test('property: the greeting parser survives truncated and corrupted greetings', () => {
  const g = greeting();
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (at, value, cut) => {
      const bad = Buffer.from(g);
      const i = 4 + (at % (bad.length - 4));
      bad[i] = value;
      new MysqlGreetingParser().push(bad);
      // Shorten the payload but keep the header honest: truncated greetings are refused or read, never thrown.
      const keep = cut % (g.length - 4);
      new MysqlGreetingParser().push(buildPacket(0, g.subarray(4, 4 + keep)));
    }),
    { numRuns: 3000 },
  );
});
