import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConnectHeadParser } from '../../src/wire/connect-head.ts';

const parse = (text: string | Buffer, max = 8192) => new ConnectHeadParser(max).push(Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1'));

test('stone/VPN-Warp request with CRLF, bytes after the head are kept', () => {
  const r = parse('CONNECT samba HTTP/1.1\r\n\r\nhello');
  assert.equal(r.kind, 'done');
  if (r.kind !== 'done') return;
  assert.deepEqual(r.target, { tunnel: 'samba', port: undefined });
  assert.equal(r.rest.toString(), 'hello');
});

test('port, header lines and bare LF are accepted', () => {
  const r = parse('CONNECT web:80 HTTP/1.0\nHost: web:80\nUser-Agent: curl\n\n');
  assert.equal(r.kind, 'done');
  if (r.kind === 'done') assert.deepEqual(r.target, { tunnel: 'web', port: 80 });
});

test('incremental: one byte at a time', () => {
  const parser = new ConnectHeadParser(8192);
  const bytes = Buffer.from('CONNECT echo HTTP/1.1\r\nX: y\r\n\r\nABC');
  let result;
  for (let i = 0; i < bytes.length; i++) {
    result = parser.push(bytes.subarray(i, i + 1));
    if (result.kind !== 'more') break;
  }
  assert.equal(result?.kind, 'done');
  if (result?.kind === 'done') assert.equal(result.rest.toString(), '');
});

test('refusals say why', () => {
  const cases: Array<[string, RegExp]> = [
    ['GET / HTTP/1.1\r\n\r\n', /expected 'CONNECT <tunnel>/],
    ['CONNECT a b HTTP/1.1\r\n\r\n', /expected 'CONNECT <tunnel>\[:<port>\] HTTP\/1.1'/],
    ['CONNECT bad:name:99999 HTTP/1.1\r\n\r\n', /not a port number/],
    ['CONNECT -x HTTP/1.1\r\n\r\n', /must start with a letter or a digit/],
    ['CONNECT x HTTP/2.0\r\n\r\n', /expected 'CONNECT/],
  ];
  for (const [input, reason] of cases) {
    const r = parse(input);
    assert.equal(r.kind, 'bad', input);
    if (r.kind === 'bad') assert.match(r.reason, reason, input);
  }
});

test('a head longer than the limit is refused, not buffered', () => {
  const parser = new ConnectHeadParser(64);
  assert.equal(parser.push(Buffer.from('CONNECT x HTTP/1.1\r\n')).kind, 'more');
  const r = parser.push(Buffer.from('X-Pad: ' + 'a'.repeat(100)));
  assert.equal(r.kind, 'bad');
  if (r.kind === 'bad') assert.match(r.reason, /longer than 64 bytes/);
});

test('property: random bytes in random chunks never throw and always settle within the limit', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
      const parser = new ConnectHeadParser(1024);
      let total = 0;
      for (const chunk of chunks) {
        total += chunk.length;
        const r = parser.push(Buffer.from(chunk));
        if (r.kind !== 'more') return;
        assert.ok(total <= 1024, 'kept asking for more beyond the limit');
      }
    }),
    { numRuns: 3000 },
  );
});

test('property: valid requests split anywhere parse to the same target', () => {
  fc.assert(
    fc.property(
      fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/),
      fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
      fc.uint8Array({ maxLength: 50 }),
      fc.nat(),
      (tunnel, port, tail, cut) => {
        const head = Buffer.from(`CONNECT ${tunnel}${port === undefined ? '' : `:${port}`} HTTP/1.1\r\n\r\n`);
        const all = Buffer.concat([head, Buffer.from(tail)]);
        const at = cut % (all.length + 1);
        const parser = new ConnectHeadParser(8192);
        let r = parser.push(all.subarray(0, at));
        // Bytes the parser never saw (it finished before them) still belong to the stream.
        let unseen = all.subarray(at);
        if (r.kind === 'more') {
          r = parser.push(unseen);
          unseen = Buffer.alloc(0);
        }
        assert.equal(r.kind, 'done');
        if (r.kind === 'done') {
          assert.deepEqual(r.target, { tunnel, port });
          assert.ok(Buffer.concat([r.rest, unseen]).equals(Buffer.from(tail)));
        }
      },
    ),
    { numRuns: 1000 },
  );
});
