// xhost lists: syntax (with stone 2.4's sticky family and dotted-mask rules), resolution
// through an injected resolver, and the allow/deny decision.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { argumentTokens, StoneGrammarError } from '../../src/repeater/tokens.ts';
import {
  contiguousPrefix,
  decide,
  parseIpAddress,
  parseXhostList,
  resolveXhosts,
  stoneDottedMask,
  XhostResolveError,
  type XhostResolver,
} from '../../src/repeater/xhost.ts';
import type { IpAddress, ResolvedXhostEntry, XhostEntry, XhostFamily } from '../../src/repeater/types.ts';

function entries(texts: string[], family: XhostFamily = 'ipv4'): XhostEntry[] {
  return parseXhostList(argumentTokens(texts), family).entries;
}

function hostEntry(e: XhostEntry | undefined): Extract<XhostEntry, { kind: 'host' }> {
  assert.ok(e && e.kind === 'host');
  return e;
}

function ip(text: string): IpAddress {
  const a = parseIpAddress(text);
  assert.ok(a, text);
  return a;
}

async function resolved(texts: string[], family: XhostFamily = 'any'): Promise<ResolvedXhostEntry[]> {
  return resolveXhosts(entries(texts, family), async () => {
    throw new Error('no names in this test');
  });
}

test('entries: host, /bits, v4/v6, p[N], ! and combinations', () => {
  const list = entries(['10.0.0.0/8', '!', '192.168.1.5/p', 'gw.example/v4,p3,16', '::1/v6,128']);
  const [a, toggle, b, c, d] = list;
  assert.deepEqual({ ...hostEntry(a), position: undefined }, { kind: 'host', text: '10.0.0.0/8', host: '10.0.0.0', family: 'ipv4', prefixLength: 8, dumpMode: 0, position: undefined });
  assert.equal(toggle?.kind, 'toggle');
  assert.deepEqual([hostEntry(b).prefixLength, hostEntry(b).dumpMode], [undefined, 1]);
  assert.deepEqual([hostEntry(c).host, hostEntry(c).family, hostEntry(c).dumpMode, hostEntry(c).prefixLength], ['gw.example', 'ipv4', 3, 16]);
  assert.deepEqual([hostEntry(d).family, hostEntry(d).prefixLength], ['ipv6', 128]);
});

test('the resolution family is sticky, as in stone: /v6 or a prefix over 32 changes later entries too', () => {
  const list = entries(['a.example', 'b.example/v6', 'c.example', 'd.example/v4', 'e.example/64', 'f.example']);
  assert.deepEqual(
    list.map((e) => hostEntry(e).family),
    ['ipv4', 'ipv6', 'ipv6', 'ipv4', 'ipv6', 'ipv6'],
  );
  assert.throws(() => entries(['::1/v6', '127.0.0.1']), /'127\.0\.0\.1': 127\.0\.0\.1 is an IPv4 address but this entry is resolved as IPv6/);
  assert.throws(() => entries(['::1']), /argument 1: '::1': ::1 is an IPv6 address but this entry is resolved as IPv4; add \/v6/);
  assert.throws(() => entries(['192.168.1.0/33']), /is an IPv4 address but this entry is resolved as IPv6/);
  assert.doesNotThrow(() => entries(['::1', '127.0.0.1'], 'any'), 'a dual-stack /v6 listener resolves either');
});

test('a dotted netmask is refused with the prefix form (stone 2.4 refuses it as deprecated)', () => {
  const err = assert.throws(() => parseXhostList(argumentTokens(['10.1.1.1', '192.168.1.0/255.255.255.0']), 'ipv4'), (e: unknown) => {
    assert.ok(e instanceof StoneGrammarError);
    assert.equal(e.code, 'WS_STONE_GRAMMAR');
    assert.deepEqual(e.position, { kind: 'argument', index: 1 });
    assert.equal(e.token, '192.168.1.0/255.255.255.0');
    assert.match(e.message, /^argument 2: '192\.168\.1\.0\/255\.255\.255\.0': dotted netmask 255\.255\.255\.0 is refused .*write the prefix length: 192\.168\.1\.0\/24$/);
    return true;
  });
  void err;
  assert.throws(() => entries(['10.0.0.0/255.0.255.0']), /'255\.0\.255\.0' is not a netmask/);
  assert.throws(() => entries(['10.0.0.0/24.5']), /'24\.5' is not a netmask/);
  const lenient = parseXhostList(argumentTokens(['10.0.0.0/255.255.255.255', '0.0.0.0/0.0.0.0']), 'ipv4');
  assert.deepEqual(lenient.entries.map((e) => hostEntry(e).prefixLength), [32, 0], 'the two masks stone 2.4 accepts on 64-bit Linux');
  assert.deepEqual(lenient.warnings.map((w) => w.message), ['dotted netmask 255.255.255.255 is deprecated in stone 2.4; write 10.0.0.0/32', 'dotted netmask 0.0.0.0 is deprecated in stone 2.4; write 0.0.0.0/0']);
});

test("stone's dotted-mask arithmetic on a 64-bit u_long", () => {
  assert.equal(stoneDottedMask('255.255.255.255'), 32);
  assert.equal(stoneDottedMask('0.0.0.0'), 0);
  assert.equal(stoneDottedMask('0.0'), 0);
  assert.equal(stoneDottedMask('255.255.255.0'), undefined);
  assert.equal(stoneDottedMask('128.0.0.0'), undefined);
  assert.equal(stoneDottedMask('255.255.255'), undefined);
  assert.equal(contiguousPrefix('255.255.254.0'), 23);
  assert.equal(contiguousPrefix('255.0.255.0'), undefined);
  assert.equal(contiguousPrefix('256.0.0.0'), undefined);
});

test('bad extensions and hosts name the token and what was expected', () => {
  for (const [text, message] of [
    ['h/', /empty extension after 'h\/'/],
    ['h/24,', /empty extension after 'h\/24,'/],
    ['h/,24', /empty extension/],
    ['h/129', /prefix length 129 is over 128/],
    ['h/v5', /unknown extension 'v5'/],
    ['h/p3x', /unknown extension 'x'/],
    ['h/v44', /unknown extension '4'/],
    ['/24', /expected a host name or address before '\/'/],
    ['-d', /options go before the first stone or after '--'/],
    ['a b', /expected '!', a host name or an IP address/],
    ['!x', /expected '!', a host name/],
  ] as const) {
    assert.throws(() => entries([text]), (e: unknown) => e instanceof StoneGrammarError && message.test(e.message), text);
  }
});

test('IP literals', () => {
  assert.deepEqual(ip('192.0.2.1'), { family: 4, bytes: [192, 0, 2, 1] });
  assert.deepEqual(ip('::1').bytes, [...new Array(15).fill(0), 1]);
  assert.deepEqual(ip('2001:db8::8:1').bytes, [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1]);
  assert.deepEqual(ip('::ffff:10.1.2.3').bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
  assert.deepEqual(ip('fe80::1%eth0').bytes.slice(0, 2), [0xfe, 0x80]);
  assert.equal(parseIpAddress('256.1.1.1'), undefined);
  assert.equal(parseIpAddress('127.1'), undefined);
  assert.equal(parseIpAddress('example.org'), undefined);
});

test('decide: empty list allows everybody with the -p level', async () => {
  assert.deepEqual(decide([], ip('203.0.113.9'), { defaultDumpMode: 3 }), { allowed: true, dumpMode: 3, matchedIndex: undefined });
  assert.deepEqual(decide([], 'unix'), { allowed: true, dumpMode: 0, matchedIndex: undefined });
});

test('decide: first match wins; ! switches to deny; the end of the list decides the rest', async () => {
  const allowNet = await resolved(['10.0.0.0/8,p2', '192.168.1.5']);
  assert.deepEqual(decide(allowNet, ip('10.9.8.7'), { defaultDumpMode: 1 }), { allowed: true, dumpMode: 2, matchedIndex: 0 });
  assert.deepEqual(decide(allowNet, ip('192.168.1.5'), { defaultDumpMode: 1 }), { allowed: true, dumpMode: 0, matchedIndex: 1 }, 'a matching entry without p dumps nothing even with -p');
  assert.deepEqual(decide(allowNet, ip('192.168.1.6')), { allowed: false, dumpMode: 0, matchedIndex: undefined }, 'a list in allow mode denies the rest');

  const denyOne = await resolved(['!', '10.0.0.1']);
  assert.equal(decide(denyOne, ip('10.0.0.1')).allowed, false);
  assert.deepEqual(decide(denyOne, ip('10.0.0.2'), { defaultDumpMode: 2 }), { allowed: true, dumpMode: 2, matchedIndex: undefined }, 'a list ending in deny mode allows the rest');

  const mixed = await resolved(['10.0.0.1', '!', '10.0.0.0/8', '!', '0.0.0.0/0']);
  assert.equal(decide(mixed, ip('10.0.0.1')).allowed, true, 'allowed before the deny');
  assert.equal(decide(mixed, ip('10.0.0.2')).allowed, false);
  assert.equal(decide(mixed, ip('11.0.0.1')).allowed, true, '/0 matches every IPv4 client');
  assert.equal(decide(mixed, ip('::1')).allowed, false, 'IPv4 entries never match IPv6 clients');

  assert.equal(decide(await resolved(['!', '!']), ip('1.2.3.4')).allowed, false, "'! !' denies everybody");
  assert.equal(decide(await resolved(['!']), ip('1.2.3.4')).allowed, true);
  assert.equal(decide(await resolved(['10.0.0.1']), 'unix').allowed, false, 'no entry matches a UNIX-socket peer');
});

test('decide: IPv6 prefixes, and IPv4 entries against IPv4-mapped clients', async () => {
  const v6 = await resolved(['2001:db8::/32', '::1/v6']);
  assert.equal(decide(v6, ip('2001:db8:1::5')).allowed, true);
  assert.equal(decide(v6, ip('2001:db9::5')).allowed, false);
  assert.equal(decide(v6, ip('::1')).matchedIndex, 1);
  assert.equal(decide(v6, ip('10.0.0.1')).allowed, false, 'IPv6 entries never match IPv4 clients');

  const deny = await resolved(['!', '192.0.2.0/24']);
  const mapped = ip('::ffff:192.0.2.10');
  assert.equal(decide(deny, mapped).allowed, false, 'fixed: the IPv4 deny entry catches the mapped client');
  assert.equal(decide(deny, mapped, { mappedIpv4: 'stone-lp64' }).allowed, true, 'stone 2.4 on amd64 lets it through');
  const allow = await resolved(['192.0.2.0/24']);
  assert.equal(decide(allow, mapped).allowed, true);
  assert.equal(decide(allow, mapped, { mappedIpv4: 'stone-lp64' }).allowed, false);
});

test('resolution goes through the injected resolver with the entry family', async () => {
  const calls: string[] = [];
  const resolver: XhostResolver = async (host, family) => {
    calls.push(`${host}/${family}`);
    if (host === 'gw.example') return ip(family === 'ipv6' ? '2001:db8::1' : '198.51.100.1');
    throw new Error('NXDOMAIN');
  };
  const out = await resolveXhosts(entries(['gw.example/24', '10.0.0.1', 'gw.example/v6']), resolver);
  assert.deepEqual(calls, ['gw.example/ipv4', 'gw.example/ipv6']);
  assert.deepEqual(out.map((r) => (r.kind === 'host' ? [r.address.family, r.prefixLength] : [])), [[4, 24], [4, 32], [6, 128]]);
  await assert.rejects(resolveXhosts(entries(['x', 'nosuch.example']), resolver), (err: unknown) => {
    assert.ok(err instanceof XhostResolveError);
    assert.equal(err.code, 'WS_STONE_XHOST_RESOLVE');
    assert.match(err.message, /^argument 1: 'x': cannot resolve x \(ipv4\): NXDOMAIN$/);
    return true;
  });
  await assert.rejects(
    resolveXhosts(entries(['gw.example']), async () => ip('::1')),
    /the resolver returned an IPv6 address/,
  );
});

test('decide agrees with the rule as stated, on random IPv4 lists', () => {
  const entry = fc.oneof(
    fc.constant('!'),
    fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 32 })).map(([a, bits]) => `10.0.${a}.0/${bits}`),
  );
  fc.assert(
    fc.asyncProperty(fc.array(entry, { maxLength: 8 }), fc.integer({ min: 0, max: 3 }), async (texts, third) => {
      const rules = await resolved(texts, 'ipv4');
      const client = ip(`10.0.${third}.0`);
      const got = decide(rules, client);
      // reference: walk the list
      let allow = true;
      let expected: boolean | undefined;
      for (const text of texts) {
        if (text === '!') {
          allow = !allow;
          continue;
        }
        const [addr, bits] = text.split('/') as [string, string];
        const a = Number(addr.split('.')[2]);
        const n = Number(bits);
        const matches = n <= 16 || (n <= 24 ? (a >> (24 - n)) === (third >> (24 - n)) : a === third);
        if (matches) {
          expected = allow;
          break;
        }
      }
      if (texts.length === 0) expected = true;
      assert.equal(got.allowed, expected ?? !allow, JSON.stringify(texts));
    }),
  );
});
