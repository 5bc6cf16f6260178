// The words the admin reads when a handshake or a stream is refused: the sentences themselves,
// then a real relay (in-process, real TLS) putting them in its log for each kind of bad
// certificate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Cleanup, makeHome, freePort } from '../helpers/harness.ts';
import { tlsOpen, sleep } from '../helpers/tls-clients.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { issueCertificate } from '../../src/pki/ca.ts';
import { loadCa } from '../../src/cli/shared.ts';
import { runRevoke } from '../../src/cli/revoke.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { Relay } from '../../src/relay/relay.ts';
import { captureLog } from './capture-log.ts';
import {
  explainExpired,
  explainForeignCa,
  explainNotYetValid,
  explainRevoked,
  explainUnknownTunnel,
  nameOddity,
  quoteName,
} from '../../src/guard/explain.ts';

const now = new Date('2025-03-10T12:00:00.000Z');

test('names with stray whitespace are shown JSON-quoted, with what is wrong', () => {
  assert.equal(quoteName('alice'), "'alice'");
  assert.equal(quoteName('alice '), '"alice "');
  assert.equal(quoteName('warpstone CA box'), '"warpstone CA box"');
  assert.equal(nameOddity('alice'), undefined);
  assert.equal(nameOddity('alice '), 'the name "alice " has trailing whitespace ("alice" without it)');
  assert.equal(nameOddity(' alice'), 'the name " alice" has leading whitespace ("alice" without it)');
  assert.equal(nameOddity('\talice\n'), 'the name "\\talice\\n" has leading and trailing whitespace ("alice" without it)');
  assert.equal(nameOddity('al ice'), 'the name "al ice" contains whitespace');
  assert.equal(nameOddity('al\u0007ice'), 'the name "al\\u0007ice" contains control characters');
});

test('an expired certificate: the date and how long ago', () => {
  assert.equal(
    explainExpired("'alice'", new Date('2025-03-07T11:00:00.000Z'), now),
    "the certificate of 'alice' expired on 2025-03-07 11:00:00 UTC, 3 days 1 h ago; issue a new one with 'warpstone issue'",
  );
});

test('not yet valid: far ahead is just a date; within minutes the clock is suspected', () => {
  assert.equal(explainNotYetValid("'bob'", new Date('2025-04-01T00:00:00.000Z'), now), "the certificate of 'bob' is not valid before 2025-04-01 00:00:00 UTC (in 3 weeks)");
  const soon = explainNotYetValid("'bob'", new Date('2025-03-10T12:03:00.000Z'), now);
  assert.match(soon, /not valid before 2025-03-10 12:03:00 UTC \(in 3 min\); that is only 3 min from the relay's clock \(2025-03-10 12:00:00 UTC\): the relay's clock, or the clock of the host that issued it, may be off \(check NTP\)/);
});

test("another CA: the issuer's name against ours", () => {
  assert.equal(
    explainForeignCa("'mallory'", 'warpstone CA otherhost 1a2b', 'warpstone CA relayhost 9f8e'),
    `the certificate of 'mallory' was issued by "warpstone CA otherhost 1a2b", not by this relay's CA "warpstone CA relayhost 9f8e": it belongs to another warpstone installation or another PKI`,
  );
  assert.match(explainForeignCa("'x'", undefined, undefined), /issued by an unnamed issuer, not by this relay's CA this relay's CA/);
});

test('revoked: when', () => {
  assert.equal(explainRevoked("'carol'", new Date('2025-03-10T10:00:00.000Z'), now), "the certificate of 'carol' was revoked on 2025-03-10 10:00:00 UTC, 2 h ago");
  assert.equal(explainRevoked("'carol'", null, now), "the certificate of 'carol' is revoked");
});

test('an unknown tunnel: stray whitespace and a near miss by case are pointed out', () => {
  assert.equal(explainUnknownTunnel('nosuch', ['web', 'db']), "no tunnel is named 'nosuch'");
  assert.equal(explainUnknownTunnel('Web', ['web', 'db']), "no tunnel is named 'Web'; a tunnel 'web' exists");
  assert.equal(explainUnknownTunnel('web ', ['web']), `no tunnel is named "web "; the name "web " has trailing whitespace ("web" without it); a tunnel 'web' exists`);
});

test('a real relay explains refused handshakes in its log: expiry, a clock that is off, another CA, revocation, a stray space', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const home = await makeHome(cleanup);
  const day = 86_400_000;
  const expired = readIdentityFile(await home.issueRaw('user', 'oldtimer', { notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - 3 * day) }));
  const early = readIdentityFile(await home.issueRaw('user', 'early', { notBefore: new Date(Date.now() + 120_000) }));
  const revoked = readIdentityFile(await home.issue('user', 'carol'));
  await runRevoke(home.dir, 'carol');
  const foreign = readIdentityFile(await (await makeHome(cleanup)).issue('user', 'mallory'));
  // signed by this relay's CA but never recorded (the name has a trailing space)
  const ca = loadCa(home.dir);
  const spaced = await issueCertificate(ca, { name: 'alice ', role: 'user', days: 1 });

  const store = await openSqliteStore(join(home.dir, 'store.sqlite'));
  cleanup.add(() => store.close());
  const captured = captureLog();
  const port = await freePort();
  const relay = new Relay({ home: home.dir, listen: [{ host: '127.0.0.1', port }], store, log: captured.log, adminSocket: false });
  await relay.start();
  cleanup.add(() => relay.stop());

  const explainFor = async (key: string, cert: string): Promise<string> => {
    const socket = await tlsOpen({ port, ca: home.caPem, key, cert });
    socket.on('error', () => undefined);
    const deadline = Date.now() + 5_000;
    const source = `${socket.localAddress}:${socket.localPort}`;
    for (;;) {
      const line = captured.lines().find((l) => l.msg === 'connection refused' && l.source === source);
      if (line) {
        socket.destroy();
        return String(line.explain);
      }
      if (Date.now() > deadline) throw new Error(`no refusal logged for ${source}: ${JSON.stringify(captured.lines())}`);
      await sleep(25);
    }
  };
  assert.match(await explainFor(expired.keyPem, expired.certPem), /^the certificate of 'oldtimer' expired on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, 3 days( \d+ h)? ago; issue a new one/);
  assert.match(await explainFor(early.keyPem, early.certPem), /^the certificate of 'early' is not valid before .* \(in (1|2) min.*\); that is only .* from the relay's clock .*: the relay's clock, or the clock of the host that issued it, may be off/);
  assert.match(await explainFor(foreign.keyPem, foreign.certPem), /^the certificate of 'mallory' was issued by "warpstone CA [^"]+", not by this relay's CA "warpstone CA [^"]+"/);
  assert.match(await explainFor(revoked.keyPem, revoked.certPem), /^the certificate of 'carol' was revoked on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, .+ ago$/);
  assert.equal(
    await explainFor(spaced.keyPem, spaced.certPem),
    `the certificate of "alice " (serial ${spaced.serial}) carries this relay's CA signature but is not in its store: it was issued with a copy of the CA key, or the store was replaced; the name "alice " has trailing whitespace ("alice" without it)`,
  );
});
