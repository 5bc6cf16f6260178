// Unit tests of src/repeater/dump.ts. The expected lines are what Debian's stone 2.4 printed for
// the same bytes (captured by hand; differential.test.ts re-checks against the live binary).
// Owns: these tests only. Must not: start processes or open sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { dumpBodies, dumpLines, dumpStream, stoneChunks, tcpDumpHead, udpDumpHead } from '../../src/repeater/dump.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const ALL = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const MIXED = b('hello world\r\nsecond line\n\tthird\x01\x02 end');

test('headers: listener, client fd first, > toward the destination, < back to the client', () => {
  assert.equal(tcpDumpHead({ listenFd: 3, sourceFd: 5, destFd: 6, direction: '>' }), '3 5>6');
  assert.equal(tcpDumpHead({ listenFd: 3, sourceFd: 5, destFd: 6, direction: '<' }), '3 5<6');
  assert.equal(tcpDumpHead({ listenFd: 4, sourceFd: 6, destFd: 7, direction: '>', tag: 'tu' }), '4 tu6>7');
  assert.equal(udpDumpHead(3, '<', 7), '3 UDP<7:');
});

test('-p: text lines end after \\n; a binary run falls back to hex with \'c for printable bytes', () => {
  assert.deepEqual(dumpLines('3 5>6', MIXED, 1), [
    '3 5>6 hello world<0d><0a>',
    '3 5>6 second line<0a>',
    "3 5>6 09 't 'h 'i 'r 'd 01 02 '  'e 'n 'd",
  ]);
});

test('-pp: the same text, plain hex fallback', () => {
  assert.deepEqual(dumpBodies(MIXED, 2), [' hello world<0d><0a>', ' second line<0a>', ' 09 74 68 69 72 64 01 02 20 65 6e 64']);
});

test('-ppp: 8 hex bytes padded to 26 columns, then ASCII with dots', () => {
  assert.deepEqual(dumpBodies(MIXED, 3), [
    ' 68 65 6c 6c 6f 20 77 6f  hello wo',
    ' 72 6c 64 0d 0a 73 65 63  rld..sec',
    ' 6f 6e 64 20 6c 69 6e 65  ond line',
    ' 0a 09 74 68 69 72 64 01  ..third.',
    ' 02 20 65 6e 64           . end',
  ]);
  assert.equal(dumpBodies(MIXED, 7)[0], ' 68 65 6c 6c 6f 20 77 6f  hello wo', 'any mode >= 3 prints like -ppp');
});

test('all 256 byte values in each mode', () => {
  const p = dumpBodies(ALL, 1);
  assert.equal(p.length, 16);
  assert.equal(p[0], ' 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f');
  assert.equal(p[2], " '  '! '\" '# '$ '% '& '' '( ') '* '+ ', '- '. '/");
  assert.equal(p[7], " 'p 'q 'r 's 't 'u 'v 'w 'x 'y 'z '{ '| '} '~ 7f");
  assert.equal(p[15], ' f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 fa fb fc fd fe ff');
  const pp = dumpBodies(ALL, 2);
  assert.equal(pp[4], ' 40 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f');
  const ppp = dumpBodies(ALL, 3);
  assert.equal(ppp.length, 32);
  assert.equal(ppp[4], " 20 21 22 23 24 25 26 27   !\"#$%&'");
  assert.equal(ppp[15], ' 78 79 7a 7b 7c 7d 7e 7f  xyz{|}~.');
  assert.equal(ppp[16], ' 80 81 82 83 84 85 86 87  ........');
});

test('a byte >= 0x80 in a text line prints as <ffffffXX> (signed char), or <XX> on request', () => {
  const data = b('abcdefghijklmnopqrstuvwxyz\xe9 more\t\x1b[0m\r\n');
  assert.deepEqual(dumpBodies(data, 1), [' abcdefghijklmnopqrstuvwxyz<ffffffe9> more<09><1b>[0m<0d><0a>']);
  assert.deepEqual(dumpBodies(data, 2, { signedChar: false }), [' abcdefghijklmnopqrstuvwxyz<e9> more<09><1b>[0m<0d><0a>']);
});

test('too many binary bytes early in a line: hex, and the binary count carries to the next line', () => {
  assert.deepEqual(dumpBodies(b('abcdefghij\xe9klm\x80\x81\n'), 1), [" 'a 'b 'c 'd 'e 'f 'g 'h 'i 'j e9 'k 'l 'm 80 81", ' 0a']);
  // a hex line ending in \n resets the count: text again
  assert.deepEqual(dumpBodies(b('\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0d\x0e\x0f\x10\x11\x0aplain text again\n'), 1), [
    ' 01 02 03 04 05 06 07 08 0b 0c 0d 0e 0f 10 11 0a',
    ' plain text again<0a>',
  ]);
});

test('long text lines wrap at 1014 characters; a control byte in one turns the rest of the chunk to hex', () => {
  const as = dumpBodies(b('A'.repeat(1100)), 1);
  assert.deepEqual(as, [` ${'A'.repeat(1013)}`, ` ${'A'.repeat(87)}`]);
  const xy = dumpBodies(b(`${'x'.repeat(500)}\x01${'y'.repeat(600)}\x02zzzz`), 1);
  assert.equal(xy[0], ` ${'x'.repeat(500)}<01>${'y'.repeat(509)}`);
  assert.equal(xy.length, 7);
  assert.equal(xy[1], ` ${"'y ".repeat(15)}'y`);
  assert.equal(xy[6], ` ${"'y ".repeat(11)}02 'z 'z 'z 'z`);
});

test('lines are cut to 1023 bytes with their prefix, as stone\'s message() cuts them', () => {
  const [first] = dumpLines('3 5>6', b('A'.repeat(1100)), 1, { prefixLength: 39 });
  assert.equal(first?.length, 1023 - 39);
  assert.equal(first, `3 5>6 ${'A'.repeat(978)}`);
});

test('every chunk starts afresh: the same bytes split across two reads print differently', () => {
  assert.deepEqual(dumpBodies(b('hello world\n'), 1), [' hello world<0a>']);
  assert.deepEqual([...dumpBodies(b('hello wor'), 1), ...dumpBodies(b('ld\n'), 1)], [' hello wor', ' ld<0a>']);
  assert.deepEqual(dumpBodies(b(''), 1), [], 'an empty chunk prints nothing');
});

test('stoneChunks cuts a burst into -X sized reads', () => {
  assert.deepEqual(stoneChunks(Buffer.alloc(2500), 1000).map((c) => c.length), [1000, 1000, 500]);
  assert.deepEqual(stoneChunks(Buffer.alloc(0), 1000), []);
  assert.throws(() => stoneChunks(Buffer.alloc(1), 0), /positive integer/);
  const lines = dumpStream('3 5>6', b('0123456789'), 2, 4);
  assert.deepEqual(lines, ['3 5>6 0123', '3 5>6 4567', '3 5>6 89']);
});

/**
 * How many bytes of `data` from `at` a dump body stands for, rendering them independently as a
 * text line, a hex line (modes 1-2) or a hex+ASCII line (mode 3); undefined if it stands for none.
 * (Text is ambiguous: the bytes "<00>" and a NUL print alike, so this renders, never parses.)
 */
function covers(body: string, data: Uint8Array, at: number, mode: number): number | undefined {
  const printable = (c: number): boolean => c >= 0x20 && c <= 0x7e;
  const hex = (c: number): string => c.toString(16).padStart(2, '0');
  if (mode >= 3) {
    const n = Math.min(8, data.length - at);
    const bytes = [...data.subarray(at, at + n)];
    const line = ' ' + bytes.map(hex).join(' ');
    return body === line.padEnd(26, ' ') + bytes.map((c) => (printable(c) ? String.fromCharCode(c) : '.')).join('') ? n : undefined;
  }
  let hexLine = '';
  let text = ' ';
  for (let n = 1; at + n <= data.length && (hexLine.length < body.length || text.length < body.length); n++) {
    const c = data[at + n - 1] as number;
    hexLine += mode === 1 && printable(c) ? ` '${String.fromCharCode(c)}` : ` ${hex(c)}`;
    text += printable(c) ? String.fromCharCode(c) : c >= 0x80 ? `<ffffff${hex(c)}>` : `<${hex(c)}>`;
    if ((n <= 16 && hexLine === body) || text === body) return n;
  }
  return undefined;
}

// mostly printable text with newlines and control bytes, sometimes raw binary, up to 3 kB
const BYTES = fc.oneof(
  fc.array(
    fc.oneof(
      { weight: 30, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
      { weight: 3, arbitrary: fc.constantFrom(0x0a, 0x0d, 0x09, 0x1b) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
    ),
    { maxLength: 3000, size: 'large' },
  ),
  fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 600, size: 'medium' }),
  // long lines: past the 1014-character wrap, with the odd control byte
  fc.array(fc.oneof({ weight: 200, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x1f }) }), {
    minLength: 1000,
    maxLength: 3000,
  }),
);

test('property: never throws, every line starts with a space, and the bytes can be read back', () => {
  fc.assert(
    fc.property(BYTES, fc.constantFrom(1, 2, 3), (bytes, mode) => {
      const data = Uint8Array.from(bytes);
      const bodies = dumpBodies(data, mode);
      for (const body of bodies) {
        assert.ok(body.startsWith(' '));
        assert.ok(body.length <= 1023);
      }
      if (mode === 3) assert.equal(bodies.length, Math.ceil(data.length / 8));
      // each line stands for the next bytes of the chunk, and together they cover all of it
      let at = 0;
      for (const body of bodies) {
        const n = covers(body, data, at, mode);
        assert.ok(n, `line ${JSON.stringify(body)} does not stand for the bytes at ${at}`);
        at += n;
      }
      assert.equal(at, data.length);
    }),
    { numRuns: 300 },
  );
});
