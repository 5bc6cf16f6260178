// Differential test of -z crl_check / crl_check_all (src/repeater/ssl.ts) against Debian's real
// stone 2.4: a CA made with openssl revokes bob's client certificate; its CRL is given the way
// stone takes it (appended to CAfile=, or as the `<hash>.r0` file of a CApath= directory next to
// the CA's `<hash>.0`). Both stones must accept alice, refuse bob (revoked) and a client without
// a certificate, deliver the same bytes and log the same lines. Without any CRL, warpstone
// refuses to start (stone would refuse every client instead).
// Owns: this test. Must not: loosen a comparison to fit a run; a mismatch is a bug.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, echoServer, freePort, tempDir } from '../helpers/harness.ts';
import { requireProgram } from '../helpers/programs.ts';
import { normalise } from '../../src/repeater/logline.ts';
import { startRepeater, stopRepeater, waitListening, type Which } from './stone-runner.ts';

interface Pki {
  dir: string;
  file(name: string): string;
}

function makeRevokingPki(cleanup: Cleanup): Pki {
  requireProgram('openssl');
  const dir = tempDir(cleanup, 'ws-stone-crl-');
  const run = (args: string[]): string => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'crlnumber'), '01\n');
  writeFileSync(join(dir, 'ca.cnf'), '[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n');
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30', '-subj', '/CN=CRL Test CA/O=warp']);
  // small serials: stone 2.4 on OpenSSL 3 fails a handshake when a serial does not fit a long
  for (const [name, serial] of [['server', 2], ['alice', 3], ['bob', 4]] as const) {
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}/O=warp`]);
    run(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(serial), '-out', `${name}.pem`, '-days', '30']);
  }
  run(['ca', '-config', 'ca.cnf', '-keyfile', 'ca.key', '-cert', 'ca.pem', '-revoke', 'bob.pem']);
  run(['ca', '-config', 'ca.cnf', '-keyfile', 'ca.key', '-cert', 'ca.pem', '-gencrl', '-out', 'ca.crl']);
  writeFileSync(join(dir, 'ca-and-crl.pem'), Buffer.concat([readFileSync(join(dir, 'ca.pem')), readFileSync(join(dir, 'ca.crl'))]));
  const hashdir = join(dir, 'hashed');
  mkdirSync(hashdir);
  copyFileSync(join(dir, 'ca.pem'), join(hashdir, `${run(['x509', '-hash', '-noout', '-in', 'ca.pem'])}.0`));
  copyFileSync(join(dir, 'ca.crl'), join(hashdir, `${run(['crl', '-hash', '-noout', '-in', 'ca.crl'])}.r0`));
  return { dir, file: (name) => join(dir, name) };
}

/** TLS client: sends `payload` (no half-close) and returns what came back. */
function roundTrip(port: number, payload: Buffer, cert?: { key: Buffer; cert: Buffer }): Promise<Buffer> {
  return new Promise((resolve) => {
    const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...(cert ?? {}) });
    const chunks: Buffer[] = [];
    let length = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks, length));
    };
    const timer = setTimeout(finish, 10_000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      length += c.length;
      if (length >= payload.length) finish();
    });
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', finish);
    socket.once('secureConnect', () => socket.write(payload));
  });
}

function norm(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) =>
      normalise(l, { loops: true })
        .replace(/^(<TIME> <TID> start \(2\.4\) )\[\d+\]$/, '$1[PID]')
        .replace(/(127\.0\.0\.1|0\.0\.0\.0):\d+/g, '$1:<PORT>'),
    )
    .filter((l) => !/SIGTERM|exiting/.test(l));
}

const PAYLOAD = Buffer.from('revocation check\n');
const CLIENTS = ['alice', 'bob', 'none'] as const;

async function run(which: Which, pki: Pki, trust: string[], check: 'crl_check' | 'crl_check_all'): Promise<{ got: Record<string, boolean>; log: string[] }> {
  const cleanup = new Cleanup();
  try {
    const echo = await echoServer(cleanup);
    const port = await freePort();
    const z = ['verify', check, ...trust, `key=${pki.file('server.key')}`, `cert=${pki.file('server.pem')}`].flatMap((o) => ['-z', o]);
    const p = startRepeater(cleanup, which, [...z, `127.0.0.1:${echo}`, `${port}/ssl`]);
    await waitListening(p, 1);
    const got: Record<string, boolean> = {};
    for (const who of CLIENTS) {
      const cert = who === 'none' ? undefined : { key: readFileSync(pki.file(`${who}.key`)), cert: readFileSync(pki.file(`${who}.pem`)) };
      got[who] = (await roundTrip(port, PAYLOAD, cert)).equals(PAYLOAD);
      await new Promise((r) => setTimeout(r, 200));
    }
    await stopRepeater(p);
    return { got, log: norm(p.stderr()) };
  } finally {
    await cleanup.run();
  }
}

test('-z crl_check / crl_check_all: a revoked client certificate is refused as by stone 2.4 (CAfile= and CApath=)', { timeout: 120_000 }, async (t) => {
  requireProgram('stone');
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const pki = makeRevokingPki(cleanup);
  const cases: [string[], 'crl_check' | 'crl_check_all'][] = [
    [[`CAfile=${pki.file('ca-and-crl.pem')}`], 'crl_check'],
    [[`CApath=${pki.file('hashed')}`], 'crl_check'],
    [[`CAfile=${pki.file('ca-and-crl.pem')}`], 'crl_check_all'],
  ];
  for (const [trust, check] of cases) {
    const stone = await run('stone', pki, trust, check);
    const ours = await run('warpstone', pki, trust, check);
    const what = `${check} ${trust.join(' ')}`;
    assert.deepEqual(stone.got, { alice: true, bob: false, none: false }, `stone, ${what}: the scenario`);
    assert.deepEqual(ours.got, stone.got, `${what}: decisions`);
    assert.ok(stone.log.some((l) => /certificate verify failed/.test(l)), `stone, ${what}: logs the refusal`);
    assert.deepEqual(ours.log, stone.log, `${what}: log lines`);
  }
});

test('-z crl_check without any CRL in CAfile=/CApath= stops start-up with a clear error', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const pki = makeRevokingPki(cleanup);
  const port = await freePort();
  const p = startRepeater(cleanup, 'warpstone', ['-z', 'verify', '-z', 'crl_check', '-z', `CAfile=${pki.file('ca.pem')}`, '-z', `key=${pki.file('server.key')}`, '-z', `cert=${pki.file('server.pem')}`, '127.0.0.1:1', `${port}/ssl`]);
  assert.notEqual(await p.exited, 0);
  assert.match(p.stderr(), /-z crl_check: no X509 CRL found in CAfile=/);
  // nothing listens
  await assert.rejects(new Promise((resolve, reject) => net.connect(port, '127.0.0.1').on('connect', resolve).on('error', reject)));
});
