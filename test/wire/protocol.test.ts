import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseTarget, parseHello, formatTarget, PROTOCOL_VERSION } from '../../src/wire/protocol.ts';

test('targets', () => {
  assert.deepEqual(parseTarget('samba'), { tunnel: 'samba', port: undefined });
  assert.deepEqual(parseTarget('samba:445'), { tunnel: 'samba', port: 445 });
  assert.match(String(parseTarget('samba:0')), /not a port number/);
  assert.match(String(parseTarget('')), /empty/);
  assert.equal(formatTarget({ tunnel: 'a', port: 1 }), 'a:1');
});

test('hello validation names the problem', () => {
  const ok = parseHello(JSON.stringify({ version: PROTOCOL_VERSION, agent: 'box', tunnels: [{ name: 'web', port: 80 }] }));
  assert.deepEqual(ok, { version: 1, agent: 'box', tunnels: [{ name: 'web', port: 80 }] });
  assert.match(String(parseHello('{')), /not JSON/);
  assert.match(String(parseHello(JSON.stringify({ version: 2, agent: 'a', tunnels: [] }))), /version 2/);
  assert.match(String(parseHello(JSON.stringify({ version: 1, agent: 'a', tunnels: [{ name: 'a b', port: 1 }] }))), /bad tunnel/);
  assert.match(String(parseHello(JSON.stringify({ version: 1, agent: 'a', tunnels: [{ name: 'ab', port: 0 }] }))), /bad port/);
});

test('property: parseHello never throws on arbitrary JSON', () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const r = parseHello(JSON.stringify(v));
      assert.ok(typeof r === 'string' || r.version === 1);
    }),
    { numRuns: 2000 },
  );
});
