// Unit tests of src/repeater/proxy-request.ts (stone 2.4's proxy request parsing) and of the -x
// permit decision in proxy-stone.ts.
// Owns: these tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeaderEnd, MAX_REQUEST_LINE, parseProxyRequest } from '../../src/repeater/proxy-request.ts';
import { permitDecision, type ResolvedPermit } from '../../src/repeater/proxy-stone.ts';
import { parseIpAddress } from '../../src/repeater/xhost.ts';
import type { IpAddress, ResolvedXhostEntry } from '../../src/repeater/types.ts';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

test('GET/HEAD/POST absolute URIs lose scheme://host[:port], keep the rest byte for byte', () => {
  const r = parseProxyRequest(b('GET http://web.example:8080/a/b?c=d HTTP/1.1\r\nHost: web\r\n\r\nbody'));
  assert.equal(r.kind, 'forward');
  if (r.kind !== 'forward') return;
  assert.deepEqual([r.host, r.port, r.https], ['web.example', '8080', false]);
  assert.equal(r.bytes.toString('latin1'), 'GET /a/b?c=d HTTP/1.1\r\nHost: web\r\n\r\nbody');
  assert.equal(r.note, 'GET http://web.example:8080/a/b?c=d HTTP/1.1');
  const noPath = parseProxyRequest(b('head http://h HTTP/1.0\r\n\r\n'));
  assert.ok(noPath.kind === 'forward' && noPath.bytes.toString('latin1') === 'head / HTTP/1.0\r\n\r\n' && noPath.port === '80');
  const https = parseProxyRequest(b('POST https://secure/x HTTP/1.0\r\n\r\n'));
  assert.ok(https.kind === 'forward' && https.https && https.port === '443' && https.host === 'secure');
});

test('CONNECT takes host[:port] (443 by default) and hands back the rest of the header', () => {
  const r = parseProxyRequest(b('CONNECT db.example:5432 HTTP/1.1\r\nHost: x\r\n'));
  assert.ok(r.kind === 'connect');
  if (r.kind !== 'connect') return;
  assert.deepEqual([r.host, r.port, r.note], ['db.example', '5432', 'CONNECT db.example:5432 HTTP/1.1']);
  const end = new HeaderEnd();
  assert.equal(end.feed(r.afterLine), -1, 'the header is not finished yet');
  assert.equal(end.feed(b('\r\nDATA')), 2);
  const bare = parseProxyRequest(b('connect host\r\n'));
  assert.ok(bare.kind === 'connect' && bare.port === '443' && bare.host === 'host');
});

test('bad requests give stone\'s messages; an unfinished line waits, an endless one is refused', () => {
  assert.deepEqual(parseProxyRequest(b('BREW pot HTTP/1.0\r\n')), { kind: 'error', message: 'Unknown method: BREW pot HTTP/1.0' });
  assert.deepEqual(parseProxyRequest(b('GETX http://h/ HTTP/1.0\r\n')), { kind: 'error', message: 'Unknown method: GETX http://h/ HTTP/1.0' });
  const ftp = parseProxyRequest(b('GET ftp://h/ HTTP/1.0\r\n'));
  assert.deepEqual(ftp, { kind: 'error', message: 'Unknown URL format: ftp://h/ HTTP/1.0', note: 'GET ftp://h/ HTTP/1.0' });
  assert.equal(parseProxyRequest(b('GET /relative HTTP/1.0\r\n')).kind, 'error');
  assert.deepEqual(parseProxyRequest(b('GET http://h/')), { kind: 'more' });
  const long = parseProxyRequest(b(`GET http://h/${'a'.repeat(MAX_REQUEST_LINE)}`));
  assert.equal(long.kind, 'error');
});

test('HeaderEnd finds the empty line across chunks, ignoring CR', () => {
  const end = new HeaderEnd(false);
  assert.equal(end.feed(b('A: 1\n')), -1);
  assert.equal(end.feed(b('\r')), -1);
  assert.equal(end.feed(b('\nrest')), 1);
});

function host(text: string, prefixLength = 32): ResolvedXhostEntry {
  const address = parseIpAddress(text) as IpAddress;
  return { kind: 'host', address, prefixLength, dumpMode: 0, entry: { kind: 'host', text, host: text, family: 'ipv4', prefixLength, dumpMode: 0, position: { kind: 'argument', index: 0 } } };
}

function permit(from: number, to: number, rules: ResolvedXhostEntry[]): ResolvedPermit {
  return { permit: { ports: [], xhosts: [], position: { kind: 'argument', index: 0 } }, ports: [{ from, to }], rules };
}

test('-x permits: newest first, the first with the port decides by its hosts; none for the port refuses', () => {
  const ip = parseIpAddress('10.1.2.3') as IpAddress;
  assert.equal(permitDecision([], ip, 25), 'allowed', 'no permits: anything goes');
  const permits = [permit(80, 80, [host('10.1.0.0', 16)]), permit(1, 65535, [])];
  assert.equal(permitDecision(permits, ip, 80), 'allowed');
  assert.equal(permitDecision(permits, parseIpAddress('10.2.0.1') as IpAddress, 80), 'host');
  assert.equal(permitDecision(permits, parseIpAddress('10.2.0.1') as IpAddress, 443), 'allowed', 'the older permit with an empty list');
  assert.equal(permitDecision([permit(80, 80, [])], ip, 40000), 'port');
  assert.equal(permitDecision([permit(40000, 50000, [])], ip, 44675), 'allowed', 'ports above 32767 (stone 2.4 refuses them)');
});
