// Source prefixes and CIDR blocks: IPv4 /32, IPv6 /64 grouping, IPv4-mapped IPv6, canonical
// text (checked against the WHATWG URL serializer on random addresses), containment, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CidrList,
  cidrContains,
  cidrCovers,
  formatCidr,
  formatIp,
  hostOfSource,
  parseCidr,
  parseIp,
  sourcePrefix,
} from '../../src/guard/prefix.ts';
import { UsageError } from '../../src/common/errors.ts';

test('IPv4 sources are grouped per /32, IPv6 per /64 by default', () => {
  assert.equal(sourcePrefix('203.0.113.7'), '203.0.113.7/32');
  assert.equal(sourcePrefix('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
  assert.equal(sourcePrefix('2001:db8:1:2::1'), sourcePrefix('2001:db8:1:2:ffff::9'), 'one /64, one prefix');
  assert.notEqual(sourcePrefix('2001:db8:1:2::1'), sourcePrefix('2001:db8:1:3::1'), 'the next /64 is another prefix');
  assert.equal(sourcePrefix('::1'), '::/64');
  assert.equal(sourcePrefix('2001:db8::1', { v4: 32, v6: 48 }), '2001:db8::/48');
  assert.equal(sourcePrefix('10.1.2.3', { v4: 24, v6: 64 }), '10.1.2.0/24');
  assert.equal(sourcePrefix('not an address'), undefined);
  assert.equal(sourcePrefix('fe80::1%eth0'), 'fe80::/64', 'a zone index is dropped');
});

test('IPv4-mapped IPv6 (what a dual-stack listener reports) is the IPv4 address', () => {
  assert.deepEqual(parseIp('::ffff:192.0.2.1'), parseIp('192.0.2.1'));
  assert.deepEqual(parseIp('::ffff:c000:201'), parseIp('192.0.2.1'), 'hex form of the same mapping');
  assert.equal(sourcePrefix('::ffff:127.0.0.1'), '127.0.0.1/32');
  assert.equal(parseIp('64:ff9b::192.0.2.1')?.family, 6, 'NAT64 is not a mapped address');
  assert.equal(formatIp(parseIp('64:ff9b::192.0.2.1')!), '64:ff9b::c000:201');
  assert.equal(formatCidr(parseCidr('::ffff:10.0.0.0/104', 'x')), '10.0.0.0/8', 'a mapped block with an IPv6 length');
});

test('relay source strings give their host', () => {
  assert.equal(hostOfSource('203.0.113.7:51234'), '203.0.113.7');
  assert.equal(hostOfSource('[2001:db8::1]:443'), '2001:db8::1');
  assert.equal(hostOfSource('2001:db8::1'), '2001:db8::1');
  assert.equal(hostOfSource('unknown'), 'unknown');
});

test('IPv6 text is canonical (RFC 5952), as the URL serializer writes it', () => {
  assert.equal(formatIp(parseIp('2001:0DB8:0000:0000:0001:0000:0000:0001')!), '2001:db8::1:0:0:1', 'first longest run');
  assert.equal(formatIp(parseIp('2001:db8:0:1:1:1:1:1')!), '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed');
  assert.equal(formatIp(parseIp('::')!), '::');
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 8 }), (raw, zeroFrom, zeroCount) => {
      const bytes = Uint8Array.from(raw);
      // make zero runs common, the interesting case for compression
      for (let g = zeroFrom; g < Math.min(8, zeroFrom + zeroCount); g++) bytes.fill(0, g * 2, g * 2 + 2);
      if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return; // mapped: IPv4 here
      const ip = { family: 6 as const, bytes };
      const text = formatIp(ip);
      assert.equal(text, new URL(`http://[${text}]/`).hostname.slice(1, -1));
      assert.deepEqual(parseIp(text), ip, 'parse(format(x)) = x');
    }),
    { numRuns: 500 },
  );
});

test('CIDR blocks: parsing clears host bits, containment, covering', () => {
  const net = parseCidr('198.51.100.77/24', '--ban-ignore');
  assert.equal(formatCidr(net), '198.51.100.0/24');
  assert.ok(cidrContains(net, parseIp('198.51.100.1')!));
  assert.ok(!cidrContains(net, parseIp('198.51.101.1')!));
  assert.ok(!cidrContains(net, parseIp('2001:db8::1')!), 'families never mix');
  const v6 = parseCidr('2001:db8:abcd::/48', 'x');
  assert.ok(cidrContains(v6, parseIp('2001:db8:abcd:12::5')!));
  assert.ok(!cidrContains(v6, parseIp('2001:db8:abce::5')!));
  assert.ok(cidrCovers(v6, parseCidr('2001:db8:abcd:1::/64', 'x')));
  assert.ok(!cidrCovers(parseCidr('2001:db8:abcd:1::/64', 'x'), v6));
  assert.equal(formatCidr(parseCidr('10.0.0.0/0', 'x')), '0.0.0.0/0');
  assert.equal(formatCidr(parseCidr('2001:db8::7', 'x')), '2001:db8::/64', 'a bare IPv6 address means its /64');
  assert.equal(formatCidr(parseCidr('2001:db8::7', 'x', { v4: 32, v6: 128 })), '2001:db8::7/128');
});

test('bad CIDR text is a usage error that names the flag and shows an example', () => {
  for (const [text, pattern] of [
    ['10.0.0.0/33', /--ban-ignore: "10.0.0.0\/33" has prefix length '33'; it must be 0-32 for IPv4/],
    ['2001:db8::/129', /0-128 for IPv6/],
    ['10.0.0.0/x', /prefix length 'x'/],
    ['example.com', /--ban-ignore: "example.com" is not an IP address or CIDR block \(e.g. 203.0.113.7/],
    ['10.0.0.256', /is not an IP address/],
    ['', /is not an IP address/],
  ] as const) {
    assert.throws(() => parseCidr(text, '--ban-ignore'), (err: unknown) => err instanceof UsageError && err.code === 'WS_BAD_CIDR' && pattern.test(err.message), text);
  }
});

test('ignore lists: a bare address is that host only; IPv4 entries match mapped peers', () => {
  const list = CidrList.parse(['127.0.0.0/8', '::1', '2001:db8:5::/48'], '--ban-ignore');
  assert.deepEqual(list.toStrings(), ['127.0.0.0/8', '::1/128', '2001:db8:5::/48']);
  assert.equal(list.match(parseIp('127.0.0.2')!)?.bits, 8);
  assert.ok(list.match(parseIp('::ffff:127.9.9.9')!), 'a dual-stack listener reports IPv4 peers mapped');
  assert.ok(list.match(parseIp('::1')!));
  assert.equal(list.match(parseIp('::2')!), undefined, '::1 does not stand for its /64');
  assert.ok(list.match(parseIp('2001:db8:5:ffff::1')!));
  assert.equal(list.match(parseIp('192.0.2.1')!), undefined);
  assert.equal(new CidrList([]).match(parseIp('192.0.2.1')!), undefined);
});
