// Property tests of the handshake parsers the sessions rely on, beyond those in mysql.test.ts and
// postgres.test.ts (random bytes never throw or over-buffer; lying lengths wait within the cap or
// are refused; valid messages split anywhere parse back). Here: every parser reaches a verdict
// once a cap's worth of bytes arrived (never a hang), the verdict does not depend on how the
// bytes were cut, a finished parser stays finished and holds nothing, and the sessions' own
// readers (the response inside TLS, the COM_CHANGE_USER scanner, the greeting and packet edits)
// keep what they must keep.
// Owns: test/dbrelay/parsers-property.test.ts. Must not: open sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CLIENT, MysqlClientHandshakeParser, MysqlGreetingParser, buildPacket, parseClientPayload } from '../../src/dbrelay/mysql.ts';
import { PgStartupParser, buildStartupMessage } from '../../src/dbrelay/postgres.ts';
import { COM_CHANGE_USER, MysqlCommandScanner, MysqlResponseInsideTlsParser, clientPacketForDatabase, greetingForClient } from '../../src/dbrelay/mysql-session.ts';

interface Incremental {
  push(chunk: Buffer): { kind: string };
  readonly bufferedBytes: number;
}

const CAP = 2048;
const parsers: Array<{ name: string; make(): Incremental; verdictWithin: number }> = [
  { name: 'MySQL client handshake', make: () => new MysqlClientHandshakeParser(CAP), verdictWithin: CAP },
  { name: 'MySQL greeting', make: () => new MysqlGreetingParser(CAP), verdictWithin: CAP },
  { name: 'MySQL response inside TLS', make: () => new MysqlResponseInsideTlsParser(CAP), verdictWithin: CAP },
  { name: 'PostgreSQL startup', make: () => new PgStartupParser(CAP), verdictWithin: CAP },
];

/** Cuts `bytes` at the given points (taken modulo its length). */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const at = [...new Set(points.map((p) => (bytes.length === 0 ? 0 : p % bytes.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of at) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  out.push(bytes.subarray(from));
  return out;
}

/** Feeds chunks until a verdict; returns it with the number of bytes it took and the chunks not fed. */
function feed(parser: Incremental, chunks: Buffer[]): { verdict: { kind: string }; fed: number; maxBuffered: number; unfed: Buffer[] } {
  let fed = 0;
  let maxBuffered = 0;
  let verdict: { kind: string } = { kind: 'need-more' };
  let i = 0;
  while (i < chunks.length) {
    const chunk = chunks[i++] as Buffer;
    verdict = parser.push(chunk);
    fed += chunk.length;
    maxBuffered = Math.max(maxBuffered, parser.bufferedBytes);
    if (verdict.kind !== 'need-more') break;
  }
  return { verdict, fed, maxBuffered, unfed: chunks.slice(i) };
}

/** A verdict with its `rest` replaced by everything that followed the message (rest + bytes not fed yet). */
function settled(parser: Incremental, chunks: Buffer[]): unknown {
  const { verdict, unfed } = feed(parser, chunks);
  const rest = (verdict as { rest?: Buffer }).rest;
  return plain(rest === undefined ? verdict : { ...verdict, rest: Buffer.concat([rest, ...unfed]) });
}

/** Buffers as hex, so two verdicts compare by content. */
function plain(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v instanceof Map ? [...v] : v)));
}

// A mix of well-formed starts (so parsers get past their first checks) and noise.
const interesting = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  fc.record({ len: fc.integer({ min: 0, max: CAP + 100 }), seq: fc.integer({ min: 0, max: 255 }), body: fc.uint8Array({ maxLength: 300 }) }).map(({ len, seq, body }) => {
    const head = Buffer.alloc(4);
    head.writeUIntLE(len, 0, 3);
    head[3] = seq;
    return Buffer.concat([head, Buffer.from(body)]);
  }),
  fc.record({ len: fc.integer({ min: -10, max: CAP + 100 }), code: fc.constantFrom(196608, 80877102, 80877103, 80877104, 131072, 0x04d20000), body: fc.uint8Array({ maxLength: 300 }) }).map(({ len, code, body }) => {
    const head = Buffer.alloc(8);
    head.writeInt32BE(len, 0);
    head.writeInt32BE(code, 4);
    return Buffer.concat([head, Buffer.from(body)]);
  }),
  fc.dictionary(fc.string({ maxLength: 10 }).map((s) => s.replace(/\0/g, '')), fc.string({ maxLength: 20 }).map((s) => s.replace(/\0/g, '')), { maxKeys: 5 }).map((d) => buildStartupMessage(d)),
);

test('property: every parser gives a verdict once a cap of bytes arrived, buffering at most the cap', () => {
  fc.assert(
    fc.property(interesting, fc.uint8Array({ minLength: CAP + 8, maxLength: CAP + 8 }), fc.array(fc.nat(), { maxLength: 12 }), (start, padding, points) => {
      const bytes = Buffer.concat([start, Buffer.from(padding)]);
      for (const p of parsers) {
        const { verdict, fed, maxBuffered } = feed(p.make(), cut(bytes, points));
        assert.notEqual(verdict.kind, 'need-more', `${p.name} still waiting after ${fed} bytes`);
        assert.ok(maxBuffered <= p.verdictWithin, `${p.name} buffered ${maxBuffered}`);
      }
    }),
    { numRuns: 400 },
  );
});

test('property: the verdict does not depend on how the bytes were cut', () => {
  fc.assert(
    fc.property(interesting, fc.array(fc.nat(), { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 8 }), (bytes, a, b) => {
      for (const p of parsers) {
        assert.deepEqual(settled(p.make(), cut(bytes, a)), settled(p.make(), cut(bytes, b)), p.name);
      }
    }),
    { numRuns: 1500 },
  );
});

test('property: a parser that gave a verdict stays finished and holds nothing', () => {
  fc.assert(
    fc.property(interesting, fc.array(fc.uint8Array({ maxLength: 200 }), { minLength: 1, maxLength: 5 }), (bytes, more) => {
      for (const p of parsers) {
        const parser = p.make();
        const first = parser.push(Buffer.concat([bytes, Buffer.alloc(CAP + 8)]));
        assert.notEqual(first.kind, 'need-more');
        for (const m of more) {
          assert.equal(parser.push(Buffer.from(m)).kind, 'invalid', `${p.name} reads on after its verdict`);
          assert.equal(parser.bufferedBytes, 0);
        }
      }
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------
// The session's MySQL readers and edits

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');
const safe = fc.string({ maxLength: 30 }).map((s) => s.replace(/\0/g, ''));

const arbResponse = fc.record({
  ssl: fc.boolean(),
  compress: fc.boolean(),
  db: fc.option(safe, { nil: undefined }),
  plugin: fc.option(safe, { nil: undefined }),
  user: safe,
  auth: fc.uint8Array({ maxLength: 250 }),
});

function response41(r: { ssl: boolean; compress: boolean; db: string | undefined; plugin: string | undefined; user: string; auth: Uint8Array }): Buffer {
  let caps = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION;
  if (r.ssl) caps |= CLIENT.SSL;
  if (r.compress) caps |= CLIENT.COMPRESS;
  if (r.db !== undefined) caps |= CLIENT.CONNECT_WITH_DB;
  if (r.plugin !== undefined) caps |= CLIENT.PLUGIN_AUTH;
  const head = Buffer.alloc(32);
  head.writeUInt32LE(caps >>> 0, 0);
  head.writeUInt32LE(1 << 24, 4);
  head[8] = 45;
  const parts = [head, cstr(r.user), Buffer.from([r.auth.length]), Buffer.from(r.auth)];
  if (r.db !== undefined) parts.push(cstr(r.db));
  if (r.plugin !== undefined) parts.push(cstr(r.plugin));
  return Buffer.concat(parts);
}

test('property: inside TLS the handshake response is read whatever its CLIENT_SSL flag, split anywhere', () => {
  fc.assert(
    fc.property(arbResponse, fc.array(fc.nat(), { maxLength: 6 }), (r, points) => {
      const packet = buildPacket(2, response41(r));
      const { verdict } = feed(new MysqlResponseInsideTlsParser(), cut(packet, points));
      assert.equal(verdict.kind, 'response');
      if (verdict.kind !== 'response') return;
      const v = verdict as unknown as { response: { user: string; database: string | undefined; authPluginName: string | undefined }; packet: { raw: Buffer } };
      assert.deepEqual([v.response.user, v.response.database, v.response.authPluginName], [r.user, r.db, r.plugin]);
      assert.ok(v.packet.raw.equals(packet), 'the raw packet is kept unchanged for forwarding');
    }),
    { numRuns: 1000 },
  );
});

test('property: the packet edit for the database changes only the sequence and the TLS/compression flags', () => {
  fc.assert(
    fc.property(arbResponse, fc.integer({ min: 1, max: 255 }), fc.boolean(), (r, seq, clearSsl) => {
      const packet = buildPacket(seq, response41(r));
      const out = clientPacketForDatabase(packet, { seqDelta: -1, clearSsl });
      assert.equal(out.length, packet.length);
      assert.equal(out[3], seq - 1);
      // Parsed with the two flags cleared in both, everything else reads the same.
      const withoutFlags = (b: Buffer) => {
        const payload = Buffer.from(b.subarray(4));
        payload.writeUInt32LE((payload.readUInt32LE(0) & ~(CLIENT.SSL | CLIENT.COMPRESS)) >>> 0, 0);
        return parseClientPayload(payload);
      };
      const before = withoutFlags(packet);
      assert.equal(before.kind, 'response');
      assert.deepEqual(plain(withoutFlags(out)), plain(before));
      const caps = out.readUInt32LE(4);
      assert.equal(caps & CLIENT.COMPRESS, 0);
      assert.equal((caps & CLIENT.SSL) !== 0, r.ssl && !clearSsl);
      assert.ok(out.subarray(8).equals(packet.subarray(8)), 'everything after the flags is untouched');
    }),
    { numRuns: 1000 },
  );
});

test('property: the greeting edit keeps the version, scramble and plugin; only TLS, compression and COM_MULTI flags change', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 40 }).map((s) => s.replace(/\0/g, 'x')),
      fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => Buffer.from(b.map((x) => x || 1))),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.boolean(),
      (version, scramble, rawCaps, extended, offer) => {
        const caps = (rawCaps | CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH) >>> 0;
        const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
        fixed.writeUInt32LE(5, 0);
        scramble.copy(fixed, 4, 0, 8);
        fixed.writeUInt16LE(caps & 0xffff, 13);
        fixed[15] = 33;
        fixed.writeUInt16LE(caps >>> 16, 18);
        fixed[20] = 21;
        fixed.writeUInt32LE(extended >>> 0, 27);
        const raw = buildPacket(0, Buffer.concat([Buffer.from([10]), cstr(version), fixed, scramble.subarray(8), Buffer.from([0]), cstr('client_ed25519')]));
        const parse = (b: Buffer) => {
          const g = new MysqlGreetingParser().push(b);
          assert.equal(g.kind, 'greeting');
          return g.kind === 'greeting' ? g.greeting : undefined;
        };
        const before = parse(raw);
        const after = parse(greetingForClient(raw, offer));
        assert.ok(before && after);
        assert.deepEqual([after.serverVersion, after.authPluginData.toString('hex'), after.authPluginName, after.connectionId], [before.serverVersion, before.authPluginData.toString('hex'), before.authPluginName, before.connectionId]);
        const changed = (before.capabilities ^ after.capabilities) >>> 0;
        assert.equal(changed & ~(CLIENT.SSL | CLIENT.COMPRESS | (1 << 26)), 0, 'no other flag changed');
        assert.equal((after.capabilities & CLIENT.SSL) !== 0, offer);
        assert.equal(after.capabilities & CLIENT.COMPRESS, 0);
        assert.equal((before.mariadbCapabilities ^ after.mariadbCapabilities) & ~0x2, 0);
        assert.equal(after.mariadbCapabilities & 0x2, 0);
      },
    ),
    { numRuns: 1000 },
  );
});

const arbPacket = fc.record({
  seq: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 255 })),
  payload: fc.oneof(fc.uint8Array({ maxLength: 60 }), fc.uint8Array({ minLength: 1, maxLength: 60 }).map((b) => Uint8Array.from([COM_CHANGE_USER, ...b.subarray(1)]))),
});

test('property: the scanner reports COM_CHANGE_USER exactly when a sequence-0 packet starts with it, however the stream is cut', () => {
  fc.assert(
    fc.property(fc.array(arbPacket, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 10 }), (packets, points) => {
      const stream = Buffer.concat(packets.map((p) => buildPacket(p.seq, Buffer.from(p.payload))));
      const expected = packets.some((p) => p.seq === 0 && p.payload[0] === COM_CHANGE_USER);
      const scanner = new MysqlCommandScanner();
      let found = false;
      for (const chunk of cut(stream, points)) {
        if (scanner.push(chunk).kind === 'change-user') {
          found = true;
          break;
        }
      }
      assert.equal(found, expected);
    }),
    { numRuns: 3000 },
  );
  // Random bytes: never an exception, whatever the verdict.
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 500 }), { maxLength: 10 }), (chunks) => {
      const scanner = new MysqlCommandScanner();
      for (const c of chunks) scanner.push(Buffer.from(c));
    }),
    { numRuns: 1000 },
  );
});
