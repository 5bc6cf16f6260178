// Unit and property tests of src/repeater/udp-framing.ts: stone's 2-byte length framing of
// datagrams on the stream side of a TCP<->UDP stone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Deframer, FrameTooLargeError, MAX_FRAME_PAYLOAD, frame } from '../../src/repeater/udp-framing.ts';

test('frame(): 2-byte big-endian length, then the payload; empty and 65535-byte payloads', () => {
  assert.deepEqual(frame(Buffer.from('abc')), Buffer.from([0, 3, 0x61, 0x62, 0x63]));
  assert.deepEqual(frame(Buffer.alloc(0)), Buffer.from([0, 0]));
  const big = frame(Buffer.alloc(MAX_FRAME_PAYLOAD, 7));
  assert.equal(big.readUInt16BE(0), 0xffff);
  assert.equal(big.length, 0xffff + 2);
  assert.throws(() => frame(Buffer.alloc(MAX_FRAME_PAYLOAD + 1)), (err: unknown) => err instanceof FrameTooLargeError && err.code === 'WS_STONE_DATAGRAM_SIZE');
});

test('Deframer: frames split anywhere, several in one chunk, an empty datagram, a tail kept for later', () => {
  const d = new Deframer();
  assert.deepEqual(d.push(Buffer.from([0])), []);
  assert.equal(d.pending, 1);
  assert.deepEqual(d.push(Buffer.from([2, 0x68])), []);
  assert.deepEqual(d.push(Buffer.from([0x69, 0, 0, 0, 1, 0x21, 0])).map(String), ['hi', '', '!']);
  assert.equal(d.pending, 1, 'the first byte of the next length waits');
  assert.deepEqual(d.push(Buffer.from([1, 0x3f])).map(String), ['?']);
  assert.equal(d.pending, 0);
});

test('Deframer (property): any datagrams, framed and cut into any chunks, come out unchanged and in order', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }),
      (datagrams, cuts) => {
        const stream = Buffer.concat(datagrams.map((d) => frame(d)));
        const d = new Deframer();
        const out: Buffer[] = [];
        let at = 0;
        for (let i = 0; at < stream.length; i++) {
          const size = cuts[i % cuts.length] as number;
          out.push(...d.push(stream.subarray(at, at + size)));
          at += size;
        }
        assert.deepEqual(out.map((b) => [...b]), datagrams.map((b) => [...b]));
        assert.equal(d.pending, 0);
      },
    ),
    { numRuns: 300 },
  );
});

test('Deframer: memory stays bounded by one frame whatever arrives (a 65537-byte frame at most)', () => {
  const d = new Deframer();
  for (let i = 0; i < 100; i++) {
    d.push(Buffer.from([0xff]));
    d.push(Buffer.from([0xff]));
    d.push(Buffer.alloc(1000, 1));
    assert.ok(d.pending <= 0xffff + 2, `pending ${d.pending}`);
    d.push(Buffer.alloc(0xffff - 1000, 2));
    assert.equal(d.pending, 0);
  }
});
