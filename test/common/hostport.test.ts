import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHostPort, formatHostPort, formatAddress } from '../../src/common/hostport.ts';

test('host:port, [v6]:port, default host', () => {
  assert.deepEqual(parseHostPort('relay.example.org:7443', 'x'), { host: 'relay.example.org', port: 7443 });
  assert.deepEqual(parseHostPort('[::1]:7443', 'x'), { host: '::1', port: 7443 });
  assert.deepEqual(parseHostPort('8080', 'x', '127.0.0.1'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseHostPort(':8080', 'x', '127.0.0.1'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseHostPort('127.0.0.1:0', 'x', undefined, true), { host: '127.0.0.1', port: 0 });
});

test('errors name the flag and say what is expected', () => {
  assert.throws(() => parseHostPort('relay', '--relay'), /--relay: 'relay' has no port; write HOST:PORT/);
  assert.throws(() => parseHostPort('::1:7443', '--relay'), /write it in brackets, e.g. \[::1\]:7443/);
  assert.throws(() => parseHostPort('h:70000', '--relay'), /port 70000 is out of range/);
  assert.throws(() => parseHostPort('h:0', '--relay'), /port 0 is out of range/);
  assert.throws(() => parseHostPort('h:x', '--relay'), /'x' is not a port number/);
  assert.throws(() => parseHostPort('[zz]:1', '--relay'), /'zz' is not an IPv6 address/);
});

test('formatting brackets IPv6 and strips v4-mapped prefixes', () => {
  assert.equal(formatHostPort({ host: '::1', port: 1 }), '[::1]:1');
  assert.equal(formatHostPort({ host: '10.0.0.1', port: 2 }), '10.0.0.1:2');
  assert.equal(formatAddress('::ffff:127.0.0.2', 5), '127.0.0.2:5');
  assert.equal(formatAddress(undefined, undefined), 'unknown');
});
