// Unit tests of src/repeater/stream-filters.ts: stone's /base encoding and lenient decoding, and
// /proxy, /mproxy header insertion.
// Owns: these tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Base64Decoder, HeaderInserter, chain, stoneBase64Encode } from '../../src/repeater/stream-filters.ts';

test('stone encodes each chunk on its own and ends it with =', () => {
  assert.equal(stoneBase64Encode(Buffer.from('abc')).toString(), 'YWJj=');
  assert.equal(stoneBase64Encode(Buffer.from('ab')).toString(), 'YWI=');
  assert.equal(stoneBase64Encode(Buffer.from('a')).toString(), 'YQ==');
  assert.equal(stoneBase64Encode(Buffer.alloc(0)).length, 0);
});

test('decoding skips junk and stray =, keeps partial quads across chunks', () => {
  const d = new Base64Decoder();
  assert.equal(d.transform(Buffer.from('YW\r\nJ')).toString(), '');
  assert.equal(d.transform(Buffer.from('j=YQ==')).toString(), 'abca');
});

test('any byte stream cut into any chunks survives encode then decode', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 50 }), { maxLength: 20 }), fc.integer({ min: 1, max: 7 }), (chunks, cut) => {
      const encoded = Buffer.concat(chunks.map((c) => stoneBase64Encode(Buffer.from(c))));
      const d = new Base64Decoder();
      const out: Buffer[] = [];
      for (let i = 0; i < encoded.length; i += cut) out.push(d.transform(encoded.subarray(i, i + cut)));
      assert.deepEqual(Buffer.concat(out), Buffer.concat(chunks.map((c) => Buffer.from(c))));
    }),
  );
});

test('/proxy inserts the header after the first line break only; /mproxy again after a reply', () => {
  const once = new HeaderInserter('X-A: 1', false);
  assert.equal(once.transform(Buffer.from('GET / HT')).toString(), 'GET / HT');
  assert.equal(once.transform(Buffer.from('TP/1.0\r\nHost: h\r\n\r\n')).toString(), 'TP/1.0\r\nX-A: 1\r\nHost: h\r\n\r\n');
  once.replySeen();
  assert.equal(once.transform(Buffer.from('GET /2 HTTP/1.0\r\n\r\n')).toString(), 'GET /2 HTTP/1.0\r\n\r\n');
  const every = chain([new HeaderInserter('X-A: 1', true)]);
  assert.ok(every);
  assert.equal(every.transform(Buffer.from('GET / HTTP/1.0\n\n')).toString(), 'GET / HTTP/1.0\nX-A: 1\r\n\n');
  every.replySeen?.();
  assert.equal(every.transform(Buffer.from('GET /2 HTTP/1.0\n\n')).toString(), 'GET /2 HTTP/1.0\nX-A: 1\r\n\n');
});
