// The MySQL session of the database relay against the real MariaDB on 127.0.0.1:3306, driven by
// the real `mariadb` client and the mysql2 driver (plus a raw socket where a client must misbehave
// on purpose): matching identity, mismatch, mapping, unknown and unparsable users (strict or not),
// TLS terminated at the relay or refused, TLS towards a database that offers it (a small TLS
// MySQL server, because MariaDB here has no TLS), COM_CHANGE_USER, an unreachable database, a
// silent client and garbage.
// Owns: test/dbrelay/mysql-session.test.ts. Must not: touch data (creates and drops ws_* users).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import mysql from 'mysql2/promise';
import fc from 'fast-check';
import { serveMysql, greetingForClient, clientPacketForDatabase, MysqlCommandScanner, MysqlResponseInsideTlsParser, serverUserName } from '../../src/dbrelay/mysql-session.ts';
import { CLIENT, MysqlClientHandshakeParser, MysqlGreetingParser, buildPacket, parseErrPayload, readPacket, type Greeting, type HandshakeResponse, type Packet } from '../../src/dbrelay/mysql.ts';
import { freePort } from '../../src/common/ports.ts';
import type { ClientIdentity } from '../../src/dbrelay/types.ts';
import { recordingProxy } from './helpers.ts';
import { MARIADB_PORT, TAG, allSessionsDone, mariadb, mariadbAdmin, makeTlsMaterial, recordingUpstream, sendAndAwaitClose, startSessionRelay, type RelayOptions, type SessionRelay, type TlsMaterial } from './session-harness.ts';

const ALICE = `ws_alice_${TAG}`;
const BOB = `ws_bob_${TAG}`;
const NOBODY = `ws_nobody_${TAG}`;
const PASSWORD = 'pw-Secret1';
const KNOWN = new Set([ALICE, BOB, 'root']);
const asAlice: ClientIdentity = { name: ALICE, source: 'certificate' };
const asBob: ClientIdentity = { name: BOB, source: 'certificate' };

let tlsMaterial: TlsMaterial;

before(async () => {
  tlsMaterial = await makeTlsMaterial();
  await mariadbAdmin(`CREATE USER IF NOT EXISTS '${ALICE}'@'%' IDENTIFIED BY '${PASSWORD}'; CREATE USER IF NOT EXISTS '${BOB}'@'%' IDENTIFIED BY '${PASSWORD}'`);
});

after(async () => {
  await mariadbAdmin(`DROP USER IF EXISTS '${ALICE}'@'%'; DROP USER IF EXISTS '${BOB}'@'%'`);
  tlsMaterial.dispose();
});

async function withRelay(options: Partial<RelayOptions>, body: (relay: SessionRelay) => Promise<void>): Promise<void> {
  const relay = await startSessionRelay({ handler: serveMysql, upstreamPort: MARIADB_PORT, identity: asAlice, known: KNOWN, ...options });
  try {
    await body(relay);
  } finally {
    await relay.close();
  }
}

async function mysql2Query(port: number, user: string, extra: Partial<mysql.ConnectionOptions> = {}): Promise<unknown> {
  const conn = await mysql.createConnection({ host: '127.0.0.1', port, user, password: PASSWORD, connectTimeout: 10_000, ...extra });
  try {
    const [rows] = await conn.query('select 1 as one');
    return rows;
  } finally {
    await conn.end();
  }
}

function mysql2Error(port: number, user: string, extra: Partial<mysql.ConnectionOptions> = {}): Promise<{ message: string; code?: string; sqlState?: string; errno?: number }> {
  return mysql2Query(port, user, extra).then(
    () => assert.fail('the connection should have been refused'),
    (err: { message: string; code?: string; sqlState?: string; errno?: number }) => err,
  );
}

const mismatchMessage = (identity: string, dbUser: string): string => `warpstone dbrelay: identity '${identity}' (client certificate) may not log in as database user '${dbUser}'`;

// ---------------------------------------------------------------------------------------------
// A raw client, for the cases a real client will not produce

class RawMysql {
  private buffered: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }
  static connect(port: number): Promise<RawMysql> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawMysql(socket)));
      socket.once('error', reject);
    });
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  /** the next whole packet, or undefined when the connection closed first */
  async packet(timeoutMs = 5_000): Promise<Packet | undefined> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = readPacket(this.buffered, 1 << 24);
      if (r.kind === 'packet') {
        this.buffered = Buffer.from(r.rest);
        return r.packet;
      }
      if (this.closed) return undefined;
      if (Date.now() > until) throw new Error('no packet in time');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }
  async greeting(): Promise<{ packet: Packet; greeting: Greeting }> {
    const p = await this.packet();
    assert.ok(p, 'a greeting');
    const g = new MysqlGreetingParser().push(p.raw);
    assert.equal(g.kind, 'greeting');
    if (g.kind !== 'greeting') throw new Error('unreachable');
    return { packet: p, greeting: g.greeting };
  }
  /** resolves true when the relay closes the connection within the time */
  async closedWithin(ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
    return this.closed;
  }
}

function sslRequest(caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.SSL | CLIENT.PLUGIN_AUTH): Buffer {
  const payload = Buffer.alloc(32);
  payload.writeUInt32LE(caps >>> 0, 0);
  payload.writeUInt32LE(1 << 24, 4);
  payload[8] = 45;
  return buildPacket(1, payload);
}

// ---------------------------------------------------------------------------------------------
// Pure pieces

/** An Initial Handshake v10 as MariaDB sends it (CLIENT_MYSQL unset, extended flags COM_MULTI and another). */
function mariadbGreeting(caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.COMPRESS | CLIENT.PLUGIN_AUTH | CLIENT.SSL | CLIENT.CONNECT_WITH_DB): Buffer {
  const version = Buffer.from('5.5.5-10.11.19-MariaDB\0');
  const scramble = Buffer.from('abcdefghijklmnopqrst');
  const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
  fixed.writeUInt32LE(7, 0);
  scramble.copy(fixed, 4, 0, 8);
  fixed.writeUInt16LE(caps & 0xffff, 13);
  fixed[15] = 45;
  fixed.writeUInt16LE(caps >>> 16, 18);
  fixed[20] = 21;
  fixed.writeUInt32LE(0x2 | 0x4, 27);
  return buildPacket(0, Buffer.concat([Buffer.from([10]), version, fixed, scramble.subarray(8), Buffer.from([0]), Buffer.from('mysql_native_password\0')]));
}

test('the greeting the client sees: TLS offered or not as configured, compression never', () => {
  const raw = mariadbGreeting();
  const read = (b: Buffer): Greeting => {
    const g = new MysqlGreetingParser().push(b);
    if (g.kind !== 'greeting') throw new Error(g.kind);
    return g.greeting;
  };
  const original = read(raw);
  assert.equal(original.mariadbCapabilities, 0x6);
  const refused = read(greetingForClient(raw, false));
  assert.equal(refused.capabilities & CLIENT.SSL, 0);
  assert.equal(refused.capabilities & CLIENT.COMPRESS, 0);
  assert.equal(refused.mariadbCapabilities, 0x4, 'COM_MULTI cleared, the rest kept');
  assert.equal(refused.capabilities | CLIENT.SSL | CLIENT.COMPRESS, original.capabilities);
  const offered = read(greetingForClient(raw, true));
  assert.equal(offered.capabilities & CLIENT.SSL, CLIENT.SSL);
  assert.deepEqual([offered.serverVersion, offered.authPluginData.toString(), offered.authPluginName], [original.serverVersion, original.authPluginData.toString(), original.authPluginName]);
});

test('client packets for the database: renumbered, TLS and compression flags cleared', () => {
  const payload = Buffer.alloc(40);
  payload.writeUInt32LE(CLIENT.PROTOCOL_41 | CLIENT.SSL | CLIENT.COMPRESS | (1 << 26), 0);
  const out = clientPacketForDatabase(buildPacket(2, payload), { seqDelta: -1, clearSsl: true });
  assert.equal(out[3], 1);
  assert.equal(out.readUInt32LE(4), CLIENT.PROTOCOL_41);
  assert.equal(clientPacketForDatabase(buildPacket(0, Buffer.alloc(0)), { seqDelta: -1, clearSsl: false })[3], 255);
});

test('the user name as the server reads it: charset conversion and the server buffer', () => {
  const response = (bytes: Buffer, charset: number | undefined): HandshakeResponse => ({
    format: 41,
    capabilities: CLIENT.PROTOCOL_41,
    mariadbCapabilities: 0,
    maxPacketSize: 0,
    charset,
    user: bytes.toString('utf8'),
    userBytes: bytes,
    authResponse: Buffer.alloc(0),
    database: undefined,
    authPluginName: undefined,
    attributes: undefined,
  });
  const mariadbGreeting = { serverVersion: '5.5.5-10.11.19-MariaDB' } as Greeting;
  const mysqlGreeting = { serverVersion: '8.0.36' } as Greeting;
  assert.deepEqual(serverUserName(response(Buffer.from('alice'), 63), mariadbGreeting), { user: 'alice' });
  const latin1 = serverUserName(response(Buffer.from([0x6a, 0xe9]), 8), mariadbGreeting);
  assert.ok('user' in latin1 && latin1.user === 'jé' && latin1.lossy !== undefined, `latin1 client: converted and marked lossy: ${JSON.stringify(latin1)}`);
  // The server's latin1 is Windows-1252: 0x80 is the euro sign, 0x9F is Ÿ; undefined bytes stay C1 controls.
  const cp1252 = serverUserName(response(Buffer.from([0x78, 0x80, 0x9f, 0x81]), 8), mariadbGreeting);
  assert.ok('user' in cp1252 && cp1252.user === 'x€Ÿ\u0081', `latin1 is Windows-1252: ${JSON.stringify(cp1252)}`);
  assert.deepEqual(serverUserName(response(Buffer.from('jé'), 45), mariadbGreeting), { user: 'jé' }, 'utf8mb4 client: exact, not lossy');
  const invalid = serverUserName(response(Buffer.from([0x6a, 0xe9]), 45), mariadbGreeting);
  assert.ok('user' in invalid && invalid.user === 'j\uFFFD' && /not valid utf8/.test(invalid.lossy ?? ''), `invalid utf8: U+FFFD and lossy: ${JSON.stringify(invalid)}`);
  const other = serverUserName(response(Buffer.from([0x6a, 0xe9]), 28), mariadbGreeting);
  assert.ok('problem' in other && other.lossy !== undefined, 'a charset the relay does not convert: a problem, lossy');
  const euros = '€'.repeat(130);
  assert.deepEqual(serverUserName(response(Buffer.from(euros), 33), mariadbGreeting), { user: '€'.repeat(128) }, 'MariaDB keeps 384 bytes');
  assert.deepEqual(serverUserName(response(Buffer.from(euros), 33), mysqlGreeting), { user: '€'.repeat(32) }, 'MySQL keeps 96 bytes');
});

test('the command scanner finds COM_CHANGE_USER at any split and nothing else', () => {
  const query = buildPacket(0, Buffer.from('\x03select 1'));
  const authData = buildPacket(3, Buffer.from([0x11, 1, 2, 3])); // seq 3: not a command
  const change = buildPacket(0, Buffer.concat([Buffer.from([0x11]), Buffer.from('bob\0'), Buffer.alloc(21)]));
  const stream = Buffer.concat([authData, query, buildPacket(0, Buffer.alloc(0)), query, change, query]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const scanner = new MysqlCommandScanner();
    const first = scanner.push(stream.subarray(0, cut));
    const second = first.kind === 'ok' ? scanner.push(stream.subarray(cut)) : first;
    assert.equal(second.kind, 'change-user', `cut at ${cut}`);
  }
  const whole = new MysqlCommandScanner().push(stream);
  assert.deepEqual(whole, { kind: 'change-user', user: 'bob' });
  assert.deepEqual(new MysqlCommandScanner().push(Buffer.concat([authData, query, query])), { kind: 'ok' });
});

// ---------------------------------------------------------------------------------------------
// Real clients, real server

test('matching identity: mariadb and mysql2 get a working session; the decision is audited and logged', async () => {
  await withRelay({}, async (relay) => {
    const ran = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', '--skip-ssl');
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout.trim(), '1');
    assert.deepEqual(await mysql2Query(relay.port, ALICE), [{ one: 1 }]);
    const event = await relay.waitForAudit((e) => e.decision === 'allow');
    assert.equal(event.protocol, 'mysql');
    assert.equal(event.identity, ALICE);
    assert.equal(event.identitySource, 'certificate');
    assert.equal(event.dbUser, ALICE);
    assert.equal(event.reason, 'match');
    assert.match(event.source, /^127\.0\.0\.1:\d+$/);
    assert.equal(relay.audit.filter((e) => e.reason === 'match').length, 2);
    const line = await relay.waitForLog((l) => l.reason === 'match');
    assert.equal(line.msg, `identity '${ALICE}' (client certificate) may log in as database user '${ALICE}'`);
    await relay.waitForLog((l) => l.msg === 'database session closed' && Number(l.toClient) > 0);
  });
});

test('mismatch: mariadb prints ERROR 1045 (28000) with our message; mysql2 gets ER_ACCESS_DENIED_ERROR', async () => {
  await withRelay({ identity: asBob }, async (relay) => {
    const ran = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', '--skip-ssl');
    assert.notEqual(ran.code, 0);
    assert.ok(ran.stderr.includes(`ERROR 1045 (28000): ${mismatchMessage(BOB, ALICE)}`), ran.stderr);
    const err = await mysql2Error(relay.port, ALICE);
    assert.equal(err.message, mismatchMessage(BOB, ALICE));
    assert.equal(err.code, 'ER_ACCESS_DENIED_ERROR');
    assert.equal(err.sqlState, '28000');
    const denied = relay.audit.filter((e) => e.decision === 'deny');
    assert.equal(denied.length, 2);
    assert.ok(denied.every((e) => e.reason === 'mismatch' && e.dbUser === ALICE && e.identity === BOB));
    await relay.waitForLog((l) => l.level === 'warn' && l.reason === 'mismatch');
    // bob as bob still works through the same relay
    assert.deepEqual(await mysql2Query(relay.port, BOB), [{ one: 1 }]);
  });
});

test('mapping: an identity listed gets exactly its list (its own name is not implied)', async () => {
  await withRelay({ mapping: new Map([[ALICE, [BOB]]]) }, async (relay) => {
    assert.deepEqual(await mysql2Query(relay.port, BOB), [{ one: 1 }]);
    const own = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', '--skip-ssl');
    assert.ok(own.stderr.includes(`ERROR 1045 (28000): ${mismatchMessage(ALICE, ALICE)}`), own.stderr);
  });
});

test('unknown DB user: allowed (the database refuses it itself), refused by us under strict', async () => {
  await withRelay({}, async (relay) => {
    const ran = await mariadb(relay.port, NOBODY, PASSWORD, 'select 1', '--skip-ssl');
    assert.notEqual(ran.code, 0);
    // the database's own refusal (MariaDB answers 1045 or 1698 for a user it does not have)
    assert.match(ran.stderr, new RegExp(`ERROR (1045|1698) \\(28000\\): Access denied for user '${NOBODY}'@'127.0.0.1'`));
    const event = await relay.waitForAudit((e) => e.dbUser === NOBODY);
    assert.deepEqual([event.decision, event.reason], ['allow', 'unknown-db-user']);
  });
  await withRelay({ strict: true }, async (relay) => {
    const err = await mysql2Error(relay.port, NOBODY);
    assert.equal(err.message, `warpstone dbrelay: database user '${NOBODY}' does not exist in the database; identity '${ALICE}' (client certificate) is refused because the listener is strict`);
    // A name with a trailing space is shown so the space is visible.
    const spaced = await mariadb(relay.port, `${ALICE} `, PASSWORD, 'select 1', '--skip-ssl');
    assert.ok(spaced.stderr.includes(`database user "${ALICE} " does not exist`), spaced.stderr);
  });
});

test('no identity: refused even when not strict, with the reason the listener gave', async () => {
  await withRelay({ identity: { name: undefined, source: 'ident', detail: 'NO-USER' } }, async (relay) => {
    const ran = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', '--skip-ssl');
    assert.ok(ran.stderr.includes(`ERROR 1045 (28000): warpstone dbrelay: could not tell who is connecting (IDENT, NO-USER), so database user '${ALICE}' is refused`), ran.stderr);
    const event = await relay.waitForAudit(() => true);
    assert.deepEqual([event.decision, event.reason, event.identity, event.identityDetail], ['deny', 'no-identity', undefined, 'NO-USER']);
  });
});

test('unparsable first packet: passed on to the database (which refuses it), refused by us under strict', async () => {
  // PROTOCOL_41 but shorter than its 32-byte header
  const short = buildPacket(1, Buffer.concat([Buffer.from([0x00, 0x82, 0x00, 0x00]), Buffer.alloc(16)]));
  await withRelay({}, async (relay) => {
    const raw = await RawMysql.connect(relay.port);
    await raw.greeting();
    raw.socket.write(short);
    const answer = await raw.packet();
    assert.ok(answer);
    const err = parseErrPayload(answer.payload);
    assert.ok(err, 'the database answers with an ERR');
    assert.doesNotMatch(err.message, /warpstone/, 'the database itself answered');
    const event = await relay.waitForAudit(() => true);
    assert.deepEqual([event.decision, event.reason, event.dbUser], ['allow', 'unparsable', undefined]);
    assert.match(event.message, /shorter than its 32-byte header/);
    raw.socket.destroy();
  });
  await withRelay({ strict: true }, async (relay) => {
    const raw = await RawMysql.connect(relay.port);
    await raw.greeting();
    raw.socket.write(short);
    const answer = await raw.packet();
    assert.ok(answer);
    assert.equal(answer.sequence, 2);
    const err = parseErrPayload(answer.payload);
    assert.equal(err?.code, 1045);
    assert.equal(err?.sqlState, '28000');
    assert.equal(err?.message, `warpstone dbrelay: could not read the database user from the first packet (HandshakeResponse41 of 20 bytes is shorter than its 32-byte header); identity '${ALICE}' (client certificate) is refused because the listener is strict`);
    assert.ok(await raw.closedWithin(3_000), 'closed after the refusal');
  });
});

test('garbage first packet: that connection is closed with a log line while another client still works', async () => {
  await withRelay({}, async (relay) => {
    const raw = await RawMysql.connect(relay.port);
    await raw.greeting();
    raw.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const other = mysql2Query(relay.port, ALICE);
    assert.ok(await raw.closedWithin(8_000), 'the garbage connection is closed');
    assert.deepEqual(await other, [{ one: 1 }]);
    const line = await relay.waitForLog((l) => l.reason === 'unparsable');
    assert.match(line.msg, /could not read the database user from the first packet \(packet of \d+ bytes is longer than the 65536-byte handshake limit\)/);
  });
});

test('a client that sends nothing is closed at the handshake timeout', async () => {
  await withRelay({ handshakeTimeoutMs: 300 }, async (relay) => {
    const raw = await RawMysql.connect(relay.port);
    await raw.greeting();
    assert.ok(await raw.closedWithin(5_000));
    await relay.waitForLog((l) => l.msg === 'no handshake response within 0.3 s; closing');
    assert.equal(relay.audit.length, 0, 'no decision was made');
    // a normal client is not affected by the short timeout
    assert.deepEqual(await mysql2Query(relay.port, ALICE), [{ one: 1 }]);
  });
});

test('database unreachable: an ERR in place of the greeting, sequence 0 and no SQLSTATE', async () => {
  const closedPort = await freePort();
  await withRelay({ upstreamPort: closedPort }, async (relay) => {
    const ran = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', '--skip-ssl');
    assert.notEqual(ran.code, 0);
    assert.match(ran.stderr, /^ERROR 1105 \(HY000\): warpstone dbrelay: cannot reach the database: the database at 127\.0\.0\.1:\d+ refused: connect ECONNREFUSED/m);
    // With its default --ssl, the client cannot trust an error sent before TLS and says so, but shows it.
    const defaults = await mariadb(relay.port, ALICE, PASSWORD, 'select 1');
    assert.match(defaults.stderr, /^ERROR 2002 \(HY000\): Received error packet before completion of TLS handshake\. The authenticity of the following error cannot be verified: 1105 - warpstone dbrelay: cannot reach the database: /m);
    const raw = await RawMysql.connect(relay.port);
    const p = await raw.packet();
    assert.ok(p);
    assert.equal(p.sequence, 0);
    assert.equal(p.payload[0], 0xff);
    assert.notEqual(p.payload[3], 0x23, 'no #SQLSTATE before a greeting');
    await relay.waitForLog((l) => /cannot reach the database/.test(l.msg));
  });
});

// ---------------------------------------------------------------------------------------------
// TLS

test('TLS terminated at the relay: mariadb (--ssl by default, and verifying our CA) and mysql2 work; the user is read inside TLS', async () => {
  await withRelay({ tls: tlsMaterial.secureContext }, async (relay) => {
    const ran = await mariadb(relay.port, ALICE, PASSWORD, 'status');
    assert.equal(ran.code, 0, ran.stderr);
    assert.match(ran.stdout, /SSL:\s+Cipher in use is TLS_/);
    const verified = await mariadb(relay.port, ALICE, PASSWORD, 'select 41 + 1', `--ssl-ca=${tlsMaterial.caFile}`, '--ssl-verify-server-cert');
    assert.equal(verified.code, 0, verified.stderr);
    assert.equal(verified.stdout.trim(), '42');
    assert.deepEqual(await mysql2Query(relay.port, ALICE, { ssl: { ca: tlsMaterial.caPem } }), [{ one: 1 }]);
    const tlsDecisions = relay.logs.filter((l) => l.reason === 'match' && l.tls === true);
    assert.equal(tlsDecisions.length, 3, 'each user name was read inside TLS');
    // mismatch inside TLS: the ERR travels inside TLS
    const bad = await mariadb(relay.port, BOB, PASSWORD, 'select 1', `--ssl-ca=${tlsMaterial.caFile}`, '--ssl-verify-server-cert');
    assert.ok(bad.stderr.includes(`ERROR 1045 (28000): ${mismatchMessage(ALICE, BOB)}`), bad.stderr);
    // a wrong password: the database's own refusal, renumbered correctly, reaches the client
    const wrong = await mariadb(relay.port, ALICE, 'not-the-password', 'select 1');
    assert.match(wrong.stderr, new RegExp(`ERROR 1045 \\(28000\\): Access denied for user '${ALICE}'@'127.0.0.1' \\(using password: YES\\)`));
    // mysql2 checks sequence numbers and only warns (console.warn) when they are out of order
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.join(' '));
    try {
      const conn = await mysql.createConnection({ host: '127.0.0.1', port: relay.port, user: ALICE, password: PASSWORD, ssl: { ca: tlsMaterial.caPem } });
      try {
        for (let i = 0; i < 5; i++) {
          const [rows] = await conn.query('select ? as n', [i]);
          assert.deepEqual(rows, [{ n: i }]);
        }
      } finally {
        await conn.end();
      }
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(warnings.filter((w) => /out of order/.test(w)), []);
  });
});

test('TLS refused: the greeting does not offer it; default mariadb goes on in clear, a client requiring TLS stops with its own message, an SSLRequest sent anyway gets our ERR', async () => {
  await withRelay({}, async (relay) => {
    const plain = await mariadb(relay.port, ALICE, PASSWORD, 'status');
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /SSL:\s+Not in use/);
    const required = await mariadb(relay.port, ALICE, PASSWORD, 'select 1', `--ssl-ca=${tlsMaterial.caFile}`, '--ssl-verify-server-cert');
    assert.notEqual(required.code, 0);
    assert.match(required.stderr, /SSL is required, but the server does not support it/);
    await relay.waitForLog((l) => /client closed before sending its handshake response \(a client that requires TLS stops here/.test(l.msg));
    const driver = await mysql2Error(relay.port, ALICE, { ssl: { ca: tlsMaterial.caPem } });
    assert.match(driver.message, /does not support secure connection/);

    const raw = await RawMysql.connect(relay.port);
    const { greeting } = await raw.greeting();
    assert.equal(greeting.capabilities & CLIENT.SSL, 0, 'TLS is not offered');
    raw.socket.write(sslRequest());
    const answer = await raw.packet();
    assert.ok(answer);
    assert.equal(answer.sequence, 2);
    const err = parseErrPayload(answer.payload);
    assert.equal(err?.code, 1251);
    assert.equal(err?.sqlState, '08004');
    assert.match(err?.message ?? '', /TLS is not accepted by this relay listener; connect without TLS \(mariadb --skip-ssl, mysql --ssl-mode=DISABLED/);
    const event = await relay.waitForAudit((e) => e.reason === 'refused-by-config');
    assert.equal(event.decision, 'deny');
    assert.ok(await raw.closedWithin(3_000));
  });
});

/** A small MySQL server that offers TLS (MariaDB here has none): greeting, SSLRequest, TLS, response → OK, COM_PING → OK. */
async function tlsMysqlServer(secureContext: tls.SecureContext): Promise<{ port: number; seen: Array<{ sequence: number; response: HandshakeResponse; rawCapabilities: number }>; close(): Promise<void> }> {
  const seen: Array<{ sequence: number; response: HandshakeResponse; rawCapabilities: number }> = [];
  const sockets = new Set<net.Socket>();
  const caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH | CLIENT.SSL | CLIENT.LONG_PASSWORD | CLIENT.TRANSACTIONS | CLIENT.CONNECT_WITH_DB | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA;
  const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
  fixed.writeUInt32LE(99, 0);
  Buffer.from('12345678').copy(fixed, 4);
  fixed.writeUInt16LE(caps & 0xffff, 13);
  fixed[15] = 45;
  fixed.writeUInt16LE(2, 16);
  fixed.writeUInt16LE(caps >>> 16, 18);
  fixed[20] = 21;
  const greeting = buildPacket(0, Buffer.concat([Buffer.from([10]), Buffer.from('8.0.99-fake\0'), fixed, Buffer.from('9abcdefghijk\0'), Buffer.from('mysql_native_password\0')]));
  const ok = (sequence: number): Buffer => buildPacket(sequence, Buffer.from([0, 0, 0, 2, 0, 0, 0]));
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write(greeting);
    const first = new MysqlClientHandshakeParser();
    const onFirst = (d: Buffer): void => {
      const r = first.push(d);
      if (r.kind !== 'ssl-request') return;
      socket.off('data', onFirst);
      socket.pause();
      if (r.rest.length > 0) socket.unshift(r.rest);
      const secure = new tls.TLSSocket(socket, { isServer: true, secureContext });
      secure.on('error', () => undefined);
      const second = new MysqlResponseInsideTlsParser();
      let answered = false;
      secure.on('data', (chunk: Buffer) => {
        if (!answered) {
          const v = second.push(chunk);
          if (v.kind !== 'response') return;
          answered = true;
          seen.push({ sequence: v.packet.sequence, response: v.response, rawCapabilities: v.packet.payload.readUInt32LE(0) });
          secure.write(ok(v.packet.sequence + 1));
          return;
        }
        const p = readPacket(chunk);
        if (p.kind === 'packet' && p.packet.payload[0] === 0x0e) secure.write(ok(1)); // COM_PING
      });
    };
    socket.on('data', onFirst);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

test('TLS towards a database that offers it: the relay forwards the SSLRequest and speaks TLS to the database too', async () => {
  const fake = await tlsMysqlServer(tlsMaterial.secureContext);
  try {
    await withRelay({ upstreamPort: fake.port, tls: tlsMaterial.secureContext }, async (relay) => {
      const conn = await mysql.createConnection({ host: '127.0.0.1', port: relay.port, user: ALICE, password: PASSWORD, ssl: { ca: tlsMaterial.caPem } });
      await conn.ping();
      await conn.end();
      assert.equal(fake.seen.length, 1);
      // read by the fake inside its TLS session, numbered as after an SSLRequest, flag kept
      assert.deepEqual([fake.seen[0]?.response.user, fake.seen[0]?.sequence], [ALICE, 2]);
      assert.equal((fake.seen[0]?.rawCapabilities ?? 0) & CLIENT.SSL, CLIENT.SSL);
      const event = await relay.waitForAudit(() => true);
      assert.deepEqual([event.decision, event.reason, event.dbUser], ['allow', 'match', ALICE]);
    });
  } finally {
    await fake.close();
  }
});

// ---------------------------------------------------------------------------------------------
// After the handshake

test('COM_CHANGE_USER inside an allowed session is refused before it reaches the database', async () => {
  // The relay's database connection goes through a recording proxy, to see what MariaDB got.
  const proxy = await recordingProxy(MARIADB_PORT);
  try {
    for (const tlsOption of [undefined, tlsMaterial.secureContext]) {
      await withRelay({ tls: tlsOption, upstreamPort: proxy.port }, async (relay) => {
        const conn = await mysql.createConnection({ host: '127.0.0.1', port: relay.port, user: ALICE, password: PASSWORD, ...(tlsOption ? { ssl: { ca: tlsMaterial.caPem } } : {}) });
        conn.on('error', () => undefined);
        const [rows] = await conn.query('select current_user() as u');
        assert.deepEqual(rows, [{ u: `${ALICE}@%` }]);
        const err = await conn.changeUser({ user: BOB, password: PASSWORD }).then(
          () => assert.fail('change user should be refused'),
          (e: { message: string }) => e,
        );
        assert.match(err.message, new RegExp(`COM_CHANGE_USER is not allowed through this relay \\(it would switch to database user '${BOB}' without the identity check\\)`));
        const event = await relay.waitForAudit((e) => e.decision === 'deny');
        assert.deepEqual([event.reason, event.dbUser, event.identity], ['refused-by-config', BOB, ALICE]);
        await relay.waitForLog((l) => l.msg === 'database session closed' && l.reason === 'COM_CHANGE_USER refused');
        conn.destroy();
      });
    }
    assert.equal(proxy.connections.length, 2);
    for (const connection of proxy.connections) {
      const sent = Buffer.concat(connection.client);
      assert.ok(sent.includes(Buffer.from('select current_user()')), 'the query went through');
      assert.equal(new MysqlCommandScanner().push(sent).kind, 'ok', 'MariaDB never got a COM_CHANGE_USER');
    }
  } finally {
    await proxy.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Property over real sockets

/** A HandshakeResponse41 (secure-connection auth, a database, a plugin). */
function handshakeResponse(user: string, sequence = 1): Buffer {
  const head = Buffer.alloc(32);
  head.writeUInt32LE((CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.CONNECT_WITH_DB | CLIENT.PLUGIN_AUTH) >>> 0, 0);
  head.writeUInt32LE(1 << 24, 4);
  head[8] = 45;
  return buildPacket(sequence, Buffer.concat([head, Buffer.from(`${user}\0`), Buffer.from([20]), Buffer.alloc(20, 7), Buffer.from('mysql\0mysql_native_password\0')]));
}

test('property (real sockets): under strict, whatever a client sends, the database sees only a login as the identity, and every session ends', async () => {
  const upstream = await recordingUpstream(mariadbGreeting(CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_WITH_DB));
  const relay = await startSessionRelay({ handler: serveMysql, upstreamPort: upstream.port, identity: asAlice, strict: true, known: KNOWN, handshakeTimeoutMs: 400 });
  const users = fc.constantFrom(ALICE, BOB, `${ALICE} `, NOBODY, 'root', `${ALICE}\u0000x`);
  const response = users.map((u) => handshakeResponse(u));
  const clientBytes = fc.oneof(
    response,
    fc.tuple(response, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([b, at, value]) => {
      const out = Buffer.from(b);
      out[at % out.length] = value;
      return out;
    }),
    fc.tuple(response, fc.nat()).map(([b, n]) => b.subarray(0, n % b.length)),
    fc.tuple(response, fc.uint8Array({ maxLength: 40 })).map(([b, junk]) => Buffer.concat([b, Buffer.from(junk)])),
    fc.tuple(response, fc.uint8Array({ maxLength: 40 })).map(([b, junk]) => Buffer.concat([sslRequest(), Buffer.from(junk), b])),
    fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
  );
  try {
    await fc.assert(
      fc.asyncProperty(clientBytes, async (bytes) => {
        const seen = upstream.connections.length;
        assert.ok(await sendAndAwaitClose(relay.port, bytes, 4_000), 'the relay closed the connection');
        await allSessionsDone(relay);
        for (const connection of upstream.connections.slice(seen)) {
          const data = Buffer.concat(connection.data);
          if (data.length === 0) continue;
          const first = new MysqlClientHandshakeParser().push(data);
          assert.equal(first.kind, 'response', `forwarded something that is not a handshake response: ${data.toString('hex')}`);
          if (first.kind === 'response') assert.equal(first.response.user, ALICE);
        }
      }),
      { numRuns: 80 },
    );
  } finally {
    await relay.close();
    await upstream.close();
  }
});
