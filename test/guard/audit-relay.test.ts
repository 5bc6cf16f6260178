// The audit log through a real relay process: a stream opened and closed through the tunnel, a
// stream refused (no grant), a handshake refused (no certificate) each appear in
// <home>/audit.jsonl and through `warpstone audit`, with identities, bytes and reasons.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { Cleanup, startCluster, runWarpstone } from '../helpers/harness.ts';
import { h2EchoRoundTrip, h2OpenError, tlsOpen, waitForLog, sleep } from '../helpers/tls-clients.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

type Line = Record<string, unknown>;

async function auditLines(file: string, until: (lines: Line[]) => boolean, what: string): Promise<Line[]> {
  const deadline = Date.now() + 8_000;
  for (;;) {
    const lines = existsSync(file)
      ? readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Line)
      : [];
    if (until(lines)) return lines;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} in ${file}; it has:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    await sleep(100);
  }
}

test('stream open and close, a refused stream and a refused handshake: in the JSON file and via `warpstone audit`', async () => {
  const cluster = await startCluster(cleanup);
  const file = join(cluster.home.dir, 'audit.jsonl');
  const alice = readIdentityFile(cluster.userIdentity);
  const bob = readIdentityFile(await cluster.home.issue('user', 'bob'));

  const echoed = await h2EchoRoundTrip(alice, cluster.relayPort);
  const refused = await h2OpenError(bob, cluster.relayPort, 'echo');
  assert.equal(refused.status, 403);
  const anonymous = await tlsOpen({ port: cluster.relayPort, ca: cluster.home.caPem });
  const anonymousSource = `${anonymous.localAddress}:${anonymous.localPort}`;
  anonymous.on('error', () => undefined);
  anonymous.write('CONNECT echo HTTP/1.1\r\n\r\n');

  const lines = await auditLines(
    file,
    (ls) => ls.some((l) => l.kind === 'stream-close') && ls.some((l) => l.kind === 'stream-refused') && ls.some((l) => l.kind === 'handshake-refused'),
    'close, refusal and handshake records',
  );
  anonymous.destroy();
  const open = lines.find((l) => l.kind === 'stream-open');
  const close = lines.find((l) => l.kind === 'stream-close');
  assert.deepEqual([open?.identity, open?.tunnel, open?.target], ['alice', 'echo', `echo:${cluster.servicePort}`]);
  assert.match(String(open?.source), /^127\.0\.0\.1:\d+$/);
  assert.deepEqual([close?.identity, close?.tunnel, close?.bytesIn, close?.bytesOut], ['alice', 'echo', echoed.length, echoed.length]);
  assert.equal(typeof close?.durationMs, 'number');
  assert.ok(Date.parse(String(close?.time)) >= Date.parse(String(open?.time)));
  const refusal = lines.find((l) => l.kind === 'stream-refused');
  assert.deepEqual([refusal?.identity, refusal?.tunnel], ['bob', 'echo']);
  assert.equal(refusal?.reason, "not-granted (403): user 'bob' is not granted tunnel 'echo'");
  const handshake = lines.find((l) => l.kind === 'handshake-refused');
  assert.equal(handshake?.source, anonymousSource);
  assert.match(String(handshake?.reason), /^tls-no-certificate: the client presented no certificate/);

  // the admin's log explains the refused stream with what bob may use
  const explained = await waitForLog(cluster.relay, (l) => l.msg === 'stream refused' && l.user === 'bob', 5_000, 'the refusal of bob');
  assert.equal(explained.explain, "tunnel 'echo' exists; 'bob' is granted no tunnel at all");

  // the same records from the store, through the command
  const mine = await runWarpstone(['audit', '--identity', 'alice', '--since', '10m'], cluster.home.env);
  assert.equal(mine.code, 0, mine.stderr);
  const rows = mine.stdout.trimEnd().split('\n');
  assert.match(rows[0] ?? '', /^TIME\s+KIND\s+IDENTITY\s+SOURCE\s+TUNNEL\s+IN\s+OUT\s+MS\s+REASON$/);
  assert.equal(rows.length, 3, mine.stdout);
  assert.match(rows[1] ?? '', new RegExp(`^\\S+\\s+stream-close\\s+alice\\s+127\\.0\\.0\\.1:\\d+\\s+echo\\s+${echoed.length}\\s+${echoed.length}\\s+\\d+\\s+closed$`));
  assert.match(rows[2] ?? '', /^\S+\s+stream-open\s+alice\s+127\.0\.0\.1:\d+\s+echo\s+-\s+-\s+-\s+-$/);

  const json = await runWarpstone(['audit', '--kind', 'handshake-refused', '--json'], cluster.home.env);
  assert.equal(json.code, 0, json.stderr);
  const records = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Line);
  assert.deepEqual(records.map((r) => [r.kind, r.source]), [['handshake-refused', anonymousSource]]);
  const tunnel = await runWarpstone(['audit', '--tunnel', 'echo', '--limit', '1', '--json'], cluster.home.env);
  assert.equal(tunnel.stdout.trimEnd().split('\n').length, 1);
  const none = await runWarpstone(['audit', '--identity', 'nobody'], cluster.home.env);
  assert.equal(none.stdout, 'no audit records match\n');

  const bad = await runWarpstone(['audit', '--since', 'yesterday'], cluster.home.env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--since: 'yesterday' is neither a duration before now \(30m, 1h, 7d\) nor a date/);
  const badKind = await runWarpstone(['audit', '--kind', 'open'], cluster.home.env);
  assert.equal(badKind.code, 2);
  assert.match(badKind.stderr, /--kind: 'open' is not one of stream-open, stream-refused/);
});
