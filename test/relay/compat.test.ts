// VPN-Warp compatibility with REAL programs: Debian's stone (`host:port/ssl,http` with a
// `CONNECT <tunnel> HTTP/1.1` request line, exactly as VPN-Warp documented it), openssl
// s_client without ALPN, and curl using the relay as an HTTPS proxy with a client certificate.
//
// About half-close through stone: when its local client shuts down writing, stone sends a TLS
// close_notify to the relay (SSL_shutdown in doshutdown()), and OpenSSL 3 then refuses any
// application data that still arrives ("application data after close notify") - so through
// stone, bytes the service sends after the client's FIN are lost, whatever the relay does. The
// tests therefore half-close only after everything came back, and check the clean close after.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Cleanup, startCluster, startWarpstone, freePort, sha256, tempDir, type Cluster } from '../helpers/harness.ts';
import { requireProgram, startStone, spawnProgram, converse, within, runProgram, type Conversation, type Program } from '../helpers/programs.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

let cluster: Cluster;
let homeDir: string;
let relay: string;
/** A connection through stone opened at setup and used again at the very end. */
let longLived: { conversation: Conversation; openedAt: number };

const MiB = 1024 * 1024;

/** The stone command line of the README: identity and CA file names relative to the home dir. */
function stoneArgs(identity: string, relayAddress: string, localPort: number, request: string, extra: string[] = []): string[] {
  return [...extra, '-q', `key=${identity}`, '-q', `cert=${identity}`, '-q', 'CAfile=ca.pem', `${relayAddress}/ssl,http`, String(localPort), request];
}

async function stoneFor(identity: string, request = 'CONNECT echo HTTP/1.1', options: { relayAddress?: string; extra?: string[]; cwd?: string } = {}): Promise<{ stone: Program; port: number }> {
  const port = await freePort();
  const stone = await startStone(cleanup, stoneArgs(identity, options.relayAddress ?? relay, port, request, options.extra), port, options.cwd ?? homeDir);
  return { stone, port };
}

function countMatches(text: string, pattern: RegExp): number {
  return (text.match(new RegExp(pattern.source, 'g')) ?? []).length;
}

/** Grants in the store, then waits until the running relay has reloaded its policy. */
async function grantNow(user: string, tunnel: string): Promise<void> {
  const reloaded = /"msg":"policy reloaded"/;
  const before = countMatches(cluster.relay.output(), reloaded);
  await cluster.home.grant(user, tunnel);
  const deadline = Date.now() + 10_000;
  while (countMatches(cluster.relay.output(), reloaded) <= before) {
    if (Date.now() > deadline) throw new Error(`relay did not reload its policy after granting ${user} -> ${tunnel}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** openssl s_client without -alpn (so the relay picks the text mode), writing `input`. */
function sClient(identity: string, input: string): Program {
  const program = spawnProgram(cleanup, 'openssl', [
    's_client',
    '-connect',
    relay,
    '-cert',
    identity,
    '-key',
    identity,
    '-CAfile',
    join(homeDir, 'ca.pem'),
    '-quiet',
  ]);
  program.child.stdin?.write(input);
  return program;
}

/** s_client for a CONNECT the relay must refuse: returns the status line once the relay closed. */
async function refusedStatusLine(identity: string, target: string): Promise<string> {
  const program = sClient(identity, `CONNECT ${target} HTTP/1.1\r\n\r\n`);
  // -quiet implies -ign_eof: s_client exits only because the relay closed the connection.
  await within(program.exited, 10_000, `s_client to close after the relay refused CONNECT ${target}; stderr: ${program.stderr()}`);
  const text = program.stdout().toString();
  const statusLine = text.split('\r\n')[0] ?? '';
  assert.match(statusLine, /^HTTP\/1\.1 [45]\d\d \S/, `expected a refusal status line, got ${JSON.stringify(text)}`);
  return statusLine;
}

test('setup: relay, agent with an echo tunnel, user alice granted it, user bob without grants', async () => {
  for (const name of ['stone', 'openssl', 'curl']) requireProgram(name);
  // More than --ban-maxretry refusals from 127.0.0.1 on purpose: bans would stop the later tests.
  cluster = await startCluster(cleanup, { relayArgs: ['--no-ban'] });
  homeDir = cluster.home.dir;
  relay = `127.0.0.1:${cluster.relayPort}`;
  await cluster.home.issue('user', 'bob');
  assert.ok(existsSync(join(homeDir, 'ca.pem')), 'the CA certificate is in <home>/ca.pem');
  assert.equal(cluster.userIdentity, join(homeDir, 'alice.pem'));

  // Opened now, checked again by the last test: a text-mode connection must outlive every
  // timer that guards only the start of a connection (first byte, TLS handshake, CONNECT head).
  const { port } = await stoneFor('alice.pem');
  const conversation = await converse(port);
  const openedAt = Date.now();
  conversation.socket.write('first words\n');
  assert.equal((await conversation.waitForBytes(12)).toString(), 'first words\n');
  longLived = { conversation, openedAt };
});

test('stone as VPN-Warp documented: small round trip, then 64 MiB each way byte-exact', async () => {
  const { stone, port } = await stoneFor('alice.pem');
  assert.match(stone.stderr(), new RegExp(`127\\.0\\.0\\.1:${cluster.relayPort}/(http,ssl|ssl,http) <- `));

  const small = await converse(port);
  small.socket.write('hello through stone\n');
  assert.equal((await small.waitForBytes(20)).toString(), 'hello through stone\n');
  small.socket.end();
  assert.equal((await within(small.ended, 10_000, 'stone to close after the client half-closed')).toString(), 'hello through stone\n');

  const payload = randomBytes(64 * MiB);
  const big = await converse(port);
  big.socket.write(payload);
  const echoed = await big.waitForBytes(payload.length, 45_000);
  // Half-close only now (see the note at the top): the far end must then close cleanly,
  // with not one byte more than was sent.
  big.socket.end();
  const all = await within(big.ended, 10_000, 'stone to close after the client half-closed');
  assert.equal(echoed.length, payload.length);
  assert.equal(all.length, payload.length);
  assert.equal(sha256(all), sha256(payload));
  await cluster.relay.waitFor(/"user":"alice"[^\n]*"bytesIn":67108864,"bytesOut":67108864/, 10_000);
});

test('stone with -q verify accepts the relay certificate for localhost, and rejects it under a foreign CA', async () => {
  const verified = await stoneFor('alice.pem', 'CONNECT echo HTTP/1.1', { relayAddress: `localhost:${cluster.relayPort}`, extra: ['-q', 'verify'] });
  const ok = await converse(verified.port);
  ok.socket.write('verified\n');
  assert.equal((await ok.waitForBytes(9)).toString(), 'verified\n');
  ok.socket.destroy();

  // Same command, but ca.pem is another CA: stone must refuse the relay, the client gets nothing.
  const elsewhere = tempDir(cleanup, 'ws-foreign-ca-');
  const made = await runProgram(cleanup, 'openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=some other CA', '-keyout', join(elsewhere, 'ca.key'), '-out', join(elsewhere, 'ca.pem'),
  ]);
  assert.equal(made.code, 0, made.stderr);
  const foreign = await stoneFor(cluster.userIdentity, 'CONNECT echo HTTP/1.1', {
    relayAddress: `localhost:${cluster.relayPort}`,
    extra: ['-q', 'verify'],
    cwd: elsewhere,
  });
  const refused = await converse(foreign.port);
  refused.socket.write('should not pass\n');
  const got = await within(refused.ended, 10_000, 'stone to drop a relay it cannot verify');
  assert.equal(got.length, 0, `stone passed on ${JSON.stringify(got.toString())}`);
  // ... because stone refused the relay's certificate ("unknown ca" alert), not for another reason.
  await cluster.relay.waitFor(/"code":"WS_HANDSHAKE"[^\n]*alert unknown ca/, 5_000);
});

test('stone refused: a user without a grant gets a closed connection and no bytes; the relay logs WS_NOT_GRANTED', async () => {
  const { port } = await stoneFor('bob.pem');
  const conversation = await converse(port);
  conversation.socket.write('hello\n');
  const got = await within(conversation.ended, 10_000, 'stone to close the refused connection');
  await cluster.relay.waitFor(/"user":"bob"[^\n]*"tunnel":"echo"[^\n]*"code":"WS_NOT_GRANTED"/, 5_000);
  // stone's /http mode strips the response head whatever its status, so any body after a
  // refusal's head would reach the local client as if the service had sent it.
  assert.equal(got.length, 0, `stone passed on ${JSON.stringify(got.toString())} as if the service had sent it`);
});

test('openssl s_client without ALPN: CONNECT echo gets 200 OK and the echo', async () => {
  const program = sClient(cluster.userIdentity, 'CONNECT echo HTTP/1.1\r\n\r\nhello\n');
  const expected = 'HTTP/1.1 200 OK\r\n\r\nhello\n';
  await program.waitUntil((out) => out.length >= expected.length, 'to print the answer and the echo');
  assert.equal(program.stdout().toString(), expected);
  await program.kill();
});

test('openssl s_client: unknown tunnel -> 404 with a reason; ungranted tunnel -> 403 naming user and tunnel', async () => {
  // A grant for a tunnel that no agent serves: the relay gets past the grant check to "no such tunnel".
  await grantNow('alice', 'nosuch');
  const notFound = await refusedStatusLine(cluster.userIdentity, 'nosuch');
  assert.match(notFound, /^HTTP\/1\.1 404 \S.*nosuch/);

  const forbidden = await refusedStatusLine(join(homeDir, 'bob.pem'), 'echo');
  assert.match(forbidden, /^HTTP\/1\.1 403 /);
  assert.match(forbidden, /\bbob\b/);
  assert.match(forbidden, /\becho\b/);

  // Without a grant, whether a tunnel exists is not revealed: 403 as well, not 404.
  const hidden = await refusedStatusLine(cluster.userIdentity, 'private');
  assert.match(hidden, /^HTTP\/1\.1 403 /);
  assert.match(hidden, /\balice\b/);
  assert.match(hidden, /\bprivate\b/);
});

test('CONNECT echo:<port> works with the service port and is 404 naming the port otherwise', async () => {
  const { servicePort } = cluster;
  const program = sClient(cluster.userIdentity, `CONNECT echo:${servicePort} HTTP/1.1\r\n\r\nwith port\n`);
  const expected = 'HTTP/1.1 200 OK\r\n\r\nwith port\n';
  await program.waitUntil((out) => out.length >= expected.length, 'to print the answer and the echo');
  assert.equal(program.stdout().toString(), expected);
  await program.kill();

  const wrong = servicePort === 65535 ? 1 : servicePort + 1;
  const statusLine = await refusedStatusLine(cluster.userIdentity, `echo:${wrong}`);
  assert.match(statusLine, new RegExp(`^HTTP/1\\.1 404 \\S.*\\b${wrong}\\b`));
});

test('curl uses the relay as an HTTPS proxy with a client certificate (CONNECT web:<port>)', async () => {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url} host=${req.headers.host}`);
    res.end(`hello from web: ${req.method} ${req.url}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.add(() => server.close());
  const webPort = (server.address() as net.AddressInfo).port;
  const agentFile = await cluster.home.issue('agent', 'webbox');
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', relay, '--expose', `web=127.0.0.1:${webPort}`], cluster.home.env);
  await agent.waitFor(/tunnel registered/);
  await grantNow('alice', 'web');

  const identity = cluster.userIdentity;
  const curl = (url: string): Promise<{ code: number | string; stdout: string; stderr: string }> =>
    runProgram(cleanup, 'curl', [
      '-sS', '--max-time', '15', '--noproxy', '',
      '--proxy', `https://${relay}`, '--proxy-cert', identity, '--proxy-key', identity, '--proxy-cacert', join(homeDir, 'ca.pem'),
      '--proxytunnel', url,
    ]);

  const ok = await curl(`http://web:${webPort}/page?x=1`);
  assert.equal(ok.code, 0, `curl failed: ${ok.stderr}`);
  assert.equal(ok.stdout, 'hello from web: GET /page?x=1\n');
  assert.deepEqual(requests, [`GET /page?x=1 host=web:${webPort}`]);

  const wrong = webPort === 65535 ? 1 : webPort + 1;
  const refused = await curl(`http://web:${wrong}/`);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /CONNECT tunnel failed, response 404/);
  assert.equal(requests.length, 1, 'the refused request never reached the service');
});

test('the connection opened through stone at setup still works after 12 s', async () => {
  const wait = longLived.openedAt + 12_000 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const { conversation } = longLived;
  conversation.socket.write('still here\n');
  const got = await conversation.waitForBytes(12 + 11, 5_000);
  assert.equal(got.toString(), 'first words\nstill here\n');
  conversation.socket.destroy();
});
