// The PostgreSQL session of the database relay against the real PostgreSQL on 127.0.0.1:5432
// (trust), driven by the real `psql` and the pg driver (plus raw sockets where a client must
// misbehave on purpose): matching identity, mismatch, unknown and unparsable users (strict or
// not), the server's 63-byte cut of user names, TLS terminated or refused, GSSENCRequest,
// CancelRequest, bytes after an SSLRequest, direct TLS, a silent client and garbage.
// Owns: test/dbrelay/postgres-session.test.ts. Must not: touch data (creates and drops ws_* roles).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import pg from 'pg';
import fc from 'fast-check';
import { servePostgres, serverRoleName } from '../../src/dbrelay/postgres-session.ts';
import { PG_CODE, buildEncryptionRequest, buildStartupMessage, parseStartup } from '../../src/dbrelay/postgres.ts';
import { freePort } from '../../src/common/ports.ts';
import type { ClientIdentity } from '../../src/dbrelay/types.ts';
import { PG_PORT, TAG, allSessionsDone, makeTlsMaterial, pgAdmin, psql, recordingUpstream, sendAndAwaitClose, startSessionRelay, type RelayOptions, type SessionRelay, type TlsMaterial } from './session-harness.ts';

const ALICE = `ws_alice_${TAG}`;
const BOB = `ws_bob_${TAG}`;
const NOBODY = `ws_nobody_${TAG}`;
/** exactly 63 bytes: the longest role name PostgreSQL keeps */
const LONG = `ws_long_${TAG}_`.padEnd(63, 'x');
const KNOWN = new Set([ALICE, BOB, LONG, 'postgres']);
const asAlice: ClientIdentity = { name: ALICE, source: 'tunnel' };
const asBob: ClientIdentity = { name: BOB, source: 'tunnel' };

let tlsMaterial: TlsMaterial;

before(async () => {
  tlsMaterial = await makeTlsMaterial();
  await pgAdmin(`CREATE ROLE ${ALICE} LOGIN; CREATE ROLE ${BOB} LOGIN; CREATE ROLE ${LONG} LOGIN`);
});

after(async () => {
  await pgAdmin(`DROP ROLE IF EXISTS ${ALICE}; DROP ROLE IF EXISTS ${BOB}; DROP ROLE IF EXISTS ${LONG}`);
  tlsMaterial.dispose();
});

async function withRelay(options: Partial<RelayOptions>, body: (relay: SessionRelay) => Promise<void>): Promise<void> {
  const relay = await startSessionRelay({ handler: servePostgres, upstreamPort: PG_PORT, identity: asAlice, known: KNOWN, ...options });
  try {
    await body(relay);
  } finally {
    await relay.close();
  }
}

function pgClient(port: number, user: string, extra: Partial<pg.ClientConfig> = {}): pg.Client {
  const client = new pg.Client({ host: '127.0.0.1', port, user, database: 'postgres', connectionTimeoutMillis: 10_000, ssl: false, ...extra });
  client.on('error', () => undefined);
  return client;
}

async function pgQuery(port: number, user: string, extra: Partial<pg.ClientConfig> = {}): Promise<unknown> {
  const client = pgClient(port, user, extra);
  await client.connect();
  try {
    return (await client.query('select 1 as one, current_user as who')).rows;
  } finally {
    await client.end();
  }
}

function pgError(port: number, user: string, extra: Partial<pg.ClientConfig> = {}): Promise<{ message: string; code?: string; severity?: string }> {
  return pgQuery(port, user, extra).then(
    () => assert.fail('the connection should have been refused'),
    (err: { message: string; code?: string; severity?: string }) => err,
  );
}

const mismatchMessage = (identity: string, dbUser: string): string => `warpstone dbrelay: identity '${identity}' (warpstone tunnel) may not log in as database user '${dbUser}'`;

// ---------------------------------------------------------------------------------------------
// A raw client

class RawPg {
  buffered: Buffer = Buffer.alloc(0);
  closed = false;
  constructor(readonly socket: net.Socket | tls.TLSSocket) {
    socket.on('data', (d: Buffer) => (this.buffered = Buffer.concat([this.buffered, d])));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }
  static connect(port: number): Promise<RawPg> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawPg(socket)));
      socket.once('error', reject);
    });
  }
  /** waits until at least `n` bytes arrived (or the connection closed) */
  async bytes(n: number, timeoutMs = 5_000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (this.buffered.length < n && !this.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return this.buffered;
  }
  async closedWithin(ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
    return this.closed;
  }
}

/** The fields of the first ErrorResponse in `b` ('E', length, type+value\0 …). */
function errorFields(b: Buffer): Map<string, string> | undefined {
  if (b[0] !== 0x45 || b.length < 5) return undefined;
  const body = b.subarray(5, 1 + b.readInt32BE(1));
  const fields = new Map<string, string>();
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const end = body.indexOf(0, at);
    fields.set(String.fromCharCode(body[at] as number), body.subarray(at + 1, end).toString('utf8'));
    at = end + 1;
  }
  return fields;
}

// ---------------------------------------------------------------------------------------------

test('the user name as the server reads it: cut to 63 bytes', () => {
  assert.equal(serverRoleName('alice'), 'alice');
  assert.equal(serverRoleName(`${LONG}more`), LONG);
  // a cut inside a character leaves a byte no valid role name has; it shows as U+FFFD
  assert.equal(serverRoleName('é'.repeat(40)), `${'é'.repeat(31)}\uFFFD`);
});

test('matching identity: psql and pg get a working session; the decision is audited and logged', async () => {
  await withRelay({}, async (relay) => {
    const ran = await psql(relay.port, ALICE, 'select 1');
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout.trim(), '1');
    assert.deepEqual(await pgQuery(relay.port, ALICE), [{ one: 1, who: ALICE }]);
    assert.equal(relay.audit.filter((e) => e.decision === 'allow' && e.reason === 'match' && e.dbUser === ALICE && e.protocol === 'postgres').length, 2);
    const event = relay.audit[0];
    assert.deepEqual([event?.identity, event?.identitySource, event?.listener], [ALICE, 'tunnel', 'test']);
    await relay.waitForLog((l) => l.msg === `identity '${ALICE}' (warpstone tunnel) may log in as database user '${ALICE}'`);
    await relay.waitForLog((l) => l.msg === 'database session closed' && Number(l.toDatabase) > 0 && Number(l.toClient) > 0);
  });
});

test('mismatch: psql prints FATAL with our message; pg gets code 28000', async () => {
  await withRelay({ identity: asBob }, async (relay) => {
    const ran = await psql(relay.port, ALICE, 'select 1');
    assert.notEqual(ran.code, 0);
    assert.ok(ran.stderr.includes(`FATAL:  ${mismatchMessage(BOB, ALICE)}`), ran.stderr);
    const err = await pgError(relay.port, ALICE);
    assert.equal(err.message, mismatchMessage(BOB, ALICE));
    assert.equal(err.code, '28000');
    assert.equal(err.severity, 'FATAL');
    assert.equal(relay.audit.filter((e) => e.decision === 'deny' && e.reason === 'mismatch').length, 2);
    await relay.waitForLog((l) => l.level === 'warn' && l.reason === 'mismatch');
  });
});

test('unknown DB user: allowed (the database refuses it itself), refused by us under strict', async () => {
  await withRelay({}, async (relay) => {
    const ran = await psql(relay.port, NOBODY, 'select 1');
    assert.match(ran.stderr, new RegExp(`FATAL:  role "${NOBODY}" does not exist`));
    const event = await relay.waitForAudit((e) => e.dbUser === NOBODY);
    assert.deepEqual([event.decision, event.reason], ['allow', 'unknown-db-user']);
  });
  await withRelay({ strict: true }, async (relay) => {
    const err = await pgError(relay.port, NOBODY);
    assert.equal(err.message, `warpstone dbrelay: database user '${NOBODY}' does not exist in the database; identity '${ALICE}' (warpstone tunnel) is refused because the listener is strict`);
    assert.equal(err.code, '28000');
  });
});

test('a user name longer than 63 bytes is judged as the server reads it (cut), not as sent', async () => {
  // bob sends LONG + "zzz": the server would log in as LONG, so the relay must judge LONG (known → mismatch).
  await withRelay({ identity: asBob }, async (relay) => {
    const ran = await psql(relay.port, `${LONG}zzz`, 'select 1');
    assert.ok(ran.stderr.includes(mismatchMessage(BOB, LONG)), ran.stderr);
    const event = await relay.waitForAudit(() => true);
    assert.deepEqual([event.decision, event.dbUser], ['deny', LONG]);
    await relay.waitForLog((l) => l.truncatedFrom === `${LONG}zzz`);
  });
  await withRelay({ identity: { name: LONG, source: 'tunnel' } }, async (relay) => {
    assert.deepEqual(await pgQuery(relay.port, `${LONG}zzz`), [{ one: 1, who: LONG }]);
  });
});

test('no identity: refused even when not strict', async () => {
  await withRelay({ identity: { name: undefined, source: 'unix-peer', detail: 'uid 4242 has no user name' } }, async (relay) => {
    const err = await pgError(relay.port, ALICE);
    assert.equal(err.message, `warpstone dbrelay: could not tell who is connecting (UNIX peer credentials, uid 4242 has no user name), so database user '${ALICE}' is refused`);
    const event = await relay.waitForAudit(() => true);
    assert.deepEqual([event.decision, event.reason], ['deny', 'no-identity']);
  });
});

test('unparsable startup: passed on (the server answers), refused by us under strict', async () => {
  const noUser = buildStartupMessage({ database: 'postgres' });
  await withRelay({}, async (relay) => {
    const raw = await RawPg.connect(relay.port);
    raw.socket.write(noUser);
    const fields = errorFields(await raw.bytes(20));
    assert.ok(fields, 'an ErrorResponse');
    assert.equal(fields.get('M'), 'no PostgreSQL user name specified in startup packet', 'the server itself answered');
    const event = await relay.waitForAudit(() => true);
    assert.deepEqual([event.decision, event.reason, event.dbUser], ['allow', 'unparsable', undefined]);
    assert.match(event.message, /the StartupMessage has no "user" parameter/);
    // an old protocol: the server explains itself (in the old protocol's error format)
    const v2 = await RawPg.connect(relay.port);
    const old = Buffer.from(buildStartupMessage({ user: ALICE }));
    old.writeInt32BE(2 << 16, 4);
    v2.socket.write(old);
    assert.ok(await v2.closedWithin(5_000));
    assert.match(v2.buffered.toString('latin1'), /^EFATAL: {2}unsupported frontend protocol 2\.0/);
    raw.socket.destroy();
    v2.socket.destroy();
  });
  await withRelay({ strict: true }, async (relay) => {
    const raw = await RawPg.connect(relay.port);
    raw.socket.write(noUser);
    const fields = errorFields(await raw.bytes(20));
    assert.equal(fields?.get('S'), 'FATAL');
    assert.equal(fields?.get('C'), '28000');
    assert.equal(fields?.get('M'), `warpstone dbrelay: could not read the database user from the first packet (the StartupMessage has no "user" parameter); identity '${ALICE}' (warpstone tunnel) is refused because the listener is strict`);
    assert.ok(await raw.closedWithin(3_000));
  });
});

test('garbage first packet: that connection is closed with a log line while another client still works', async () => {
  await withRelay({}, async (relay) => {
    const raw = await RawPg.connect(relay.port);
    raw.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const other = pgQuery(relay.port, ALICE);
    assert.ok(await raw.closedWithin(8_000));
    assert.deepEqual(await other, [{ one: 1, who: ALICE }]);
    const line = await relay.waitForLog((l) => l.reason === 'unparsable');
    assert.match(line.msg, /could not read the database user from the first packet \(invalid length of startup packet: \d+/);
  });
});

test('a client that sends nothing is closed at the handshake timeout', async () => {
  await withRelay({ handshakeTimeoutMs: 300 }, async (relay) => {
    const raw = await RawPg.connect(relay.port);
    assert.ok(await raw.closedWithin(5_000));
    assert.equal(raw.buffered.length, 0);
    await relay.waitForLog((l) => l.msg === 'no startup message within 0.3 s; closing');
    assert.deepEqual(await pgQuery(relay.port, ALICE), [{ one: 1, who: ALICE }]);
  });
});

test('database unreachable: the client gets an ErrorResponse saying so', async () => {
  await withRelay({ upstreamPort: await freePort() }, async (relay) => {
    const err = await pgError(relay.port, ALICE);
    assert.match(err.message, /^warpstone dbrelay: cannot reach the database: the database at 127\.0\.0\.1:\d+ refused: connect ECONNREFUSED/);
    assert.equal(err.code, '08006');
  });
});

// ---------------------------------------------------------------------------------------------
// Encryption requests

test('TLS terminated at the relay: psql sslmode=require, verify-full with our CA, prefer; pg with ssl; the user is read inside TLS', async () => {
  await withRelay({ tls: tlsMaterial.secureContext }, async (relay) => {
    for (const mode of ['sslmode=require', `sslmode=verify-full sslrootcert=${tlsMaterial.caFile}`, 'sslmode=prefer']) {
      const ran = await psql(relay.port, ALICE, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()', `${mode} gssencmode=disable`);
      assert.equal(ran.code, 0, `${mode}: ${ran.stderr}`);
      assert.equal(ran.stdout.trim(), 'f', 'the relay→database leg is plain TCP');
    }
    // psql's \conninfo shows the client's own TLS session with the relay
    const info = await psql(relay.port, ALICE, '\\conninfo', 'sslmode=require gssencmode=disable');
    assert.match(info.stdout, /SSL connection \(protocol: TLSv1\.3/);
    assert.deepEqual(await pgQuery(relay.port, ALICE, { ssl: { ca: tlsMaterial.caPem } }), [{ one: 1, who: ALICE }]);
    assert.equal(relay.logs.filter((l) => l.reason === 'match' && l.tls === true).length, 5);
    const denied = await psql(relay.port, BOB, 'select 1', 'sslmode=require gssencmode=disable');
    assert.ok(denied.stderr.includes(`FATAL:  ${mismatchMessage(ALICE, BOB)}`), denied.stderr);
  });
});

test('TLS refused: answered N; sslmode=require stops with the client\'s own message, prefer goes on in clear', async () => {
  await withRelay({}, async (relay) => {
    const required = await psql(relay.port, ALICE, 'select 1', 'sslmode=require gssencmode=disable');
    assert.notEqual(required.code, 0);
    assert.match(required.stderr, /server does not support SSL, but SSL was required/);
    await relay.waitForLog((l) => l.msg === 'client asked for TLS; this listener refuses TLS (tls: refuse), answered N');
    await relay.waitForLog((l) => /client closed before sending its startup message \(after the relay answered N/.test(l.msg));
    const preferred = await psql(relay.port, ALICE, '\\conninfo', 'sslmode=prefer gssencmode=disable');
    assert.equal(preferred.code, 0, preferred.stderr);
    assert.doesNotMatch(preferred.stdout, /SSL connection/);
    const driver = await pgError(relay.port, ALICE, { ssl: { rejectUnauthorized: false } });
    assert.match(driver.message, /does not support SSL/);
  });
});

test('GSSENCRequest is answered N, then the startup goes on', async () => {
  await withRelay({}, async (relay) => {
    const raw = await RawPg.connect(relay.port);
    raw.socket.write(buildEncryptionRequest('gssenc'));
    assert.equal((await raw.bytes(1)).toString('latin1'), 'N');
    raw.socket.write(buildStartupMessage({ user: ALICE, database: 'postgres' }));
    const answer = await raw.bytes(10);
    // AuthenticationOk: 'R', length 8, 0 (the server trusts 127.0.0.1)
    assert.equal(answer.subarray(1, 10).toString('hex'), '520000000800000000');
    raw.socket.destroy();
  });
});

test('bytes sent after an SSLRequest before the answer: closed unanswered, with a log line (CVE-2021-23214 class)', async () => {
  for (const secureContext of [tlsMaterial.secureContext, undefined]) {
    await withRelay({ tls: secureContext }, async (relay) => {
      const raw = await RawPg.connect(relay.port);
      raw.socket.write(Buffer.concat([buildEncryptionRequest('ssl'), buildStartupMessage({ user: ALICE })]));
      assert.ok(await raw.closedWithin(3_000));
      assert.equal(raw.buffered.length, 0, 'neither S nor N was sent');
      await relay.waitForLog((l) => l.level === 'warn' && /CVE-2021-23214/.test(l.msg));
      assert.equal(relay.audit.length, 0);
    });
  }
});

test('CancelRequest is passed through to the database and cancels the running query', async () => {
  await withRelay({}, async (relay) => {
    const client = pgClient(relay.port, ALICE);
    await client.connect();
    try {
      const pid = (client as unknown as { processID: number }).processID;
      const secret = (client as unknown as { secretKey: number }).secretKey;
      const sleeping = client.query('select pg_sleep(20)').then(
        () => assert.fail('the query should have been cancelled'),
        (err: Error) => err,
      );
      await new Promise((r) => setTimeout(r, 300));
      const cancel = Buffer.alloc(16);
      cancel.writeInt32BE(16, 0);
      cancel.writeInt32BE(PG_CODE.CANCEL, 4);
      cancel.writeInt32BE(pid, 8);
      cancel.writeInt32BE(secret, 12);
      const raw = await RawPg.connect(relay.port);
      raw.socket.write(cancel);
      const err = await sleeping;
      assert.match(err.message, /canceling statement due to user request/);
      const event = await relay.waitForAudit((e) => e.reason === 'pass-through');
      assert.deepEqual([event.decision, event.dbUser], ['allow', undefined]);
      assert.match(event.message, new RegExp(`CancelRequest for backend ${pid} passed through`));
      raw.socket.destroy();
    } finally {
      await client.end();
    }
  });
});

test('direct TLS (sslnegotiation=direct): terminated with ALPN postgresql; without ALPN, or on a refusing listener, closed', async () => {
  const directTls = (port: number, alpn: string[] | undefined): Promise<RawPg> =>
    new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ca: tlsMaterial.caPem, ...(alpn ? { ALPNProtocols: alpn } : {}) }, () => resolve(new RawPg(socket)));
      socket.once('error', reject);
    });
  await withRelay({ tls: tlsMaterial.secureContext }, async (relay) => {
    const raw = await directTls(relay.port, ['postgresql']);
    assert.equal((raw.socket as tls.TLSSocket).alpnProtocol, 'postgresql');
    raw.socket.write(buildStartupMessage({ user: ALICE, database: 'postgres' }));
    const answer = await raw.bytes(9);
    assert.equal(answer.subarray(0, 9).toString('hex'), '520000000800000000', 'AuthenticationOk from the database');
    raw.socket.destroy();
    const noAlpn = await directTls(relay.port, undefined);
    assert.ok(await noAlpn.closedWithin(3_000));
    await relay.waitForLog((l) => l.msg === 'direct TLS without ALPN "postgresql"; closing');
  });
  await withRelay({}, async (relay) => {
    const socket = tls.connect({ host: '127.0.0.1', port: relay.port, ca: tlsMaterial.caPem, ALPNProtocols: ['postgresql'] });
    const failed = await new Promise<boolean>((resolve) => {
      socket.once('secureConnect', () => resolve(false));
      socket.once('error', () => resolve(true));
      socket.once('close', () => resolve(true));
    });
    socket.destroy();
    assert.ok(failed);
    await relay.waitForLog((l) => /direct TLS handshake .* on a listener that refuses TLS; closing/.test(l.msg));
  });
});

// ---------------------------------------------------------------------------------------------
// Property over real sockets

test('property (real sockets): under strict, whatever a client sends, the database sees only a login as the identity or a CancelRequest, and every session ends', async () => {
  const upstream = await recordingUpstream();
  const relay = await startSessionRelay({ handler: servePostgres, upstreamPort: upstream.port, identity: asAlice, strict: true, known: KNOWN, handshakeTimeoutMs: 400 });
  const users = fc.constantFrom(ALICE, BOB, `${ALICE} `, NOBODY, `${LONG}zz`, 'postgres');
  const startup = users.map((user) => buildStartupMessage({ user, database: 'postgres' }));
  const clientBytes = fc.oneof(
    startup,
    fc.tuple(startup, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([b, at, value]) => {
      const out = Buffer.from(b);
      out[at % out.length] = value;
      return out;
    }),
    fc.tuple(startup, fc.nat()).map(([b, n]) => b.subarray(0, n % b.length)),
    fc.tuple(startup, fc.uint8Array({ maxLength: 40 })).map(([b, junk]) => Buffer.concat([b, Buffer.from(junk)])),
    fc.tuple(fc.constantFrom<'ssl' | 'gssenc'>('ssl', 'gssenc'), startup).map(([kind, b]) => Buffer.concat([buildEncryptionRequest(kind), b])),
    fc.tuple(fc.integer(), fc.integer()).map(([pid, key]) => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(PG_CODE.CANCEL, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(key, 12);
      return b;
    }),
    fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
  );
  try {
    await fc.assert(
      fc.asyncProperty(clientBytes, async (bytes) => {
        const seen = upstream.connections.length;
        assert.ok(await sendAndAwaitClose(relay.port, bytes, 4_000), 'the relay closed the connection');
        await allSessionsDone(relay);
        for (const connection of upstream.connections.slice(seen)) {
          const first = parseStartup(Buffer.concat(connection.data));
          if (first.kind === 'cancel') continue;
          assert.equal(first.kind, 'startup', `forwarded something that is not a startup: ${Buffer.concat(connection.data).toString('hex')}`);
          if (first.kind === 'startup') assert.equal(serverRoleName(first.startup.user ?? ''), ALICE);
        }
      }),
      { numRuns: 80 },
    );
  } finally {
    await relay.close();
    await upstream.close();
  }
});
