// `warpstone stone` proxy behaviour that the differential test does not reach: -x refusing a
// host, -b sending a proxy request to the backup of a failing master, /mproxy inserting its
// header in every request of a kept-alive connection, a request line that never ends (refused
// once it passes the bound, the process serving on).
// Owns: these tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Cleanup, freePort } from '../helpers/harness.ts';
import { converse } from '../helpers/programs.ts';
import { startRepeater, waitListening, until } from './stone-runner.ts';

/** Origin that answers `ok N` for every complete request header, keeping the connection. */
async function keepAliveOrigin(cleanup: Cleanup): Promise<{ port: number; requests: string[] }> {
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      for (let end = text.indexOf('\r\n\r\n'); end >= 0; end = text.indexOf('\r\n\r\n')) {
        requests.push(text.slice(0, end + 4));
        text = text.slice(end + 4);
        s.write(`ok ${requests.length}\n`);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return { port: (server.address() as net.AddressInfo).port, requests };
}

test('proxy: -x refuses a host, -b redirects a failing master, an endless request line is cut off', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const web = await keepAliveOrigin(cleanup);
  const [dead, strict, failover] = await Promise.all([freePort(), freePort(), freePort()]);
  const p = startRepeater(cleanup, 'warpstone', [
    '-b', '0', `127.0.0.1:${dead}`, `127.0.0.1:${web.port}`,
    '-x', `1-65535`, '10.0.0.0/8', '--', 'proxy', String(strict),
    '--', '-x', '--', 'proxy', String(failover),
  ]);
  await waitListening(p, 2);

  const refused = await converse(strict);
  refused.socket.write(`GET http://127.0.0.1:${web.port}/ HTTP/1.0\r\n\r\n`);
  assert.equal((await refused.ended).length, 0);
  await until(() => /stone \d+: proxy may not connect to 127\.0\.0\.1$/m.test(p.stderr()), 'the -x refusal line');

  const viaBackup = await converse(failover);
  viaBackup.socket.write(`GET http://127.0.0.1:${dead}/moved HTTP/1.0\r\n\r\n`);
  assert.equal((await viaBackup.waitForBytes(5)).toString(), 'ok 1\n');
  assert.equal(web.requests[0], 'GET /moved HTTP/1.0\r\n\r\n');
  viaBackup.socket.destroy();

  const endless = await converse(failover);
  endless.socket.write(`GET http://127.0.0.1:${web.port}/${'a'.repeat(9000)}`);
  await endless.ended;
  await until(() => /proxy request line longer than 8192 bytes/.test(p.stderr()), 'the bound');
  assert.equal(p.hasExited(), false);
});

test('/mproxy inserts its header in each request of a kept-alive connection, /proxy only in the first', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const web = await keepAliveOrigin(cleanup);
  const [every, once] = await Promise.all([freePort(), freePort()]);
  const p = startRepeater(cleanup, 'warpstone', ['-n', `127.0.0.1:${web.port}/mproxy`, String(every), 'X-From: \\a', '--', `127.0.0.1:${web.port}/proxy`, String(once), 'X-Once: 1']);
  await waitListening(p, 2);
  for (const port of [every, once]) {
    const c = await converse(port);
    c.socket.write('GET /1 HTTP/1.1\r\nHost: h\r\n\r\n');
    await c.waitForBytes(5);
    c.socket.write('GET /2 HTTP/1.1\r\nHost: h\r\n\r\n');
    await c.waitForBytes(10);
    c.socket.destroy();
  }
  assert.deepEqual(web.requests, [
    'GET /1 HTTP/1.1\r\nX-From: 127.0.0.1\r\nHost: h\r\n\r\n',
    'GET /2 HTTP/1.1\r\nX-From: 127.0.0.1\r\nHost: h\r\n\r\n',
    'GET /1 HTTP/1.1\r\nX-Once: 1\r\nHost: h\r\n\r\n',
    'GET /2 HTTP/1.1\r\nHost: h\r\n\r\n',
  ]);
});

test('close() ends open health, identd and half-sent proxy clients instead of waiting for them', { timeout: 30_000 }, async () => {
  const { parseStoneArguments } = await import('../../src/repeater/grammar.ts');
  const { startStones } = await import('../../src/repeater/engine.ts');
  const { stoneEnvironment } = await import('../../src/cli/stone.ts');
  const [h, i, p] = await Promise.all([freePort(), freePort(), freePort()]);
  const parsed = parseStoneArguments(['-L', '/dev/null', 'health', String(h), '--', 'identd', String(i), '--', 'proxy', String(p)], stoneEnvironment());
  assert.equal(parsed.kind, 'program');
  if (parsed.kind !== 'program') return;
  const running = await startStones(parsed.program);
  const health = await converse(h);
  health.socket.write('HELO x\r\n');
  assert.match((await health.waitForBytes(10)).toString(), /^250 stone:2\.4 debug=0 stone=3 pair=2 /);
  const identd = await converse(i);
  const proxy = await converse(p);
  proxy.socket.write('GET http://127.0.0.1:1/ HT');
  await new Promise((r) => setTimeout(r, 200));
  await running.close();
  for (const c of [health, identd, proxy]) await c.ended;
});

test('proxy: GET https://... is sent over SSL with the -q options', { timeout: 30_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const { execFileSync } = await import('node:child_process');
  const { readFileSync } = await import('node:fs');
  const tls = await import('node:tls');
  const { tempDir } = await import('../helpers/harness.ts');
  const dir = tempDir(cleanup, 'ws-proxy-tls-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '2', '-subj', '/CN=origin'], { cwd: dir, stdio: 'ignore' });
  const seen: string[] = [];
  const server = tls.createServer({ key: readFileSync(`${dir}/k.pem`), cert: readFileSync(`${dir}/c.pem`) }, (s) => {
    s.on('data', (d: Buffer) => {
      seen.push(d.toString('latin1'));
      s.end('HTTP/1.0 200 OK\r\n\r\nsecret');
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
  const port = await freePort();
  const p = startRepeater(cleanup, 'warpstone', ['proxy', String(port)]);
  await waitListening(p, 1);
  const c = await converse(port);
  c.socket.write(`GET https://127.0.0.1:${(server.address() as net.AddressInfo).port}/x HTTP/1.0\r\n\r\n`);
  assert.equal((await c.ended).toString(), 'HTTP/1.0 200 OK\r\n\r\nsecret');
  assert.deepEqual(seen, ['GET /x HTTP/1.0\r\n\r\n']);
});
