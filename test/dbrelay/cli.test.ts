// `warpstone dbrelay` and `warpstone dbrelay check` as real processes (through cli-entry.ts
// until main.ts registers the command): the plain-words check, config errors with file:line:field
// and exit code 2, the UNIX-upstream refusal at startup, and a relay started as root that creates
// a per-user socket, drops to nobody, keeps serving, and stops on SIGTERM.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import mysql from 'mysql2/promise';
import { Cleanup, ROOT, freePort, makeHome, startProgram, startWarpstone, tempDir } from '../helpers/harness.ts';
import { readIdentityFile } from '../../src/pki/pem.ts';
import { runRevoke } from '../../src/cli/revoke.ts';
import { createMariadbUser, createUnixUser, isRoot, runAs } from './accounts.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const ENTRY = join(ROOT, 'test', 'dbrelay', 'cli-entry.ts');
const sessionsExist = existsSync(join(ROOT, 'src', 'dbrelay', 'mysql-session.ts')) && existsSync(join(ROOT, 'src', 'dbrelay', 'postgres-session.ts'));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('dbrelay check says in plain words what each listener will do', async () => {
  const dir = tempDir(cleanup);
  const file = write(
    dir,
    'dbrelay.yaml',
    `audit: /var/log/dbrelay.jsonl
user: nobody
listeners:
  - name: dev
    kind: tcp
    listen: 127.0.0.1:3307
    upstream: mysql://127.0.0.1:3306
  - name: pg
    kind: unix
    path: /run/dbrelay/.s.PGSQL.5432
    mode: "0666"
    upstream: postgres://127.0.0.1:5432
    strict: true
    mapping: { alice: [alice, alice_ro], deploy: app }
    known_users_query: { url: "postgres://postgres:secret@127.0.0.1:5432/postgres", every: 2m }
  - name: homes
    kind: per-user
    pattern: /run/warpstone/{user}.sock
    users: [root]
    upstream: mysql://127.0.0.1:3306
    known_users: [root, app]
    timeouts: { handshake: 5s, idle: 0 }
`,
  );
  const r = await cli(['dbrelay', 'check', '--config', file]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.equal(lines[0], `${file}: 3 listeners`);
  assert.ok(
    lines.includes("listener 'dev' on 127.0.0.1:3307: identity from IDENT (port 113, 3 s), upstream mysql://127.0.0.1:3306, strict: no, client TLS: refused"),
    r.stdout,
  );
  assert.ok(lines.includes('  IDENT believed only from (ident_from): 127.0.0.0/8, ::1/128; clients from elsewhere have no identity and are refused'), r.stdout);
  assert.ok(
    lines.includes(
      "listener 'pg' on unix:/run/dbrelay/.s.PGSQL.5432 (mode 0666): identity from the peer's uid (SO_PEERCRED), upstream postgres://127.0.0.1:5432, strict: yes, client TLS: refused",
    ),
    r.stdout,
  );
  assert.ok(lines.includes('  mapping: alice → alice, alice_ro; deploy → app; any other identity → the DB user of its own name'), r.stdout);
  assert.ok(lines.includes('  known DB users: queried every 120 s from postgres://postgres@127.0.0.1:5432/postgres'), r.stdout);
  assert.ok(!r.stdout.includes('secret'), 'the password is not printed');
  assert.ok(lines.includes("listener 'homes' on 1 per-user socket (mode 0600: /run/warpstone/root.sock for root): identity = the socket's owner, upstream mysql://127.0.0.1:3306, strict: no, client TLS: refused"), r.stdout);
  assert.ok(lines.includes('  known DB users: a list of 2 (root, app)'), r.stdout);
  assert.ok(lines.includes('  timeouts: handshake 5 s, idle never, database connect 10 s; at most 512 clients'), r.stdout);
  assert.ok(lines.includes('  audit: /var/log/dbrelay.jsonl (one JSON line per decision) and the log'), r.stdout);
  assert.ok(lines.includes('after creating the sockets, drops privileges to nobody (uid 65534, gid 65534) when started as root'), r.stdout);
  assert.ok(lines.some((l) => l.startsWith('  decisions: no identity → denied;') && l.endsWith('→ denied (strict)')), r.stdout);
});

test('config errors: file:line:field on stderr, exit code 2, for check and for serving alike', async () => {
  const dir = tempDir(cleanup);
  const bad = write(dir, 'bad.yaml', 'listeners:\n  - name: dev\n    kind: tcp\n    listen: 127.0.0.1:3307\n    upstrem: mysql://127.0.0.1:3306\n');
  for (const args of [['dbrelay', 'check', '--config', bad], ['dbrelay', '--config', bad]]) {
    const r = await cli(args);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `warpstone: ${bad}:5: listeners.0.upstrem: unknown setting 'upstrem'\n`);
  }
  const unix = write(dir, 'unix.yaml', 'listeners:\n  - name: dev\n    kind: tcp\n    listen: 127.0.0.1:3307\n    upstream: mysql+unix:///run/mysqld/mysqld.sock\n');
  const refused = await cli(['dbrelay', '--config', unix]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, new RegExp(`^warpstone: ${unix}:5: listeners\\.0\\.upstream: a UNIX-socket upstream is refused unless allow_unix_upstream: true is set: .*as root`));
  const missing = await cli(['dbrelay', 'check']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--config FILE is required/);
});

test(
  'started as root: creates a per-user socket, drops to nobody, keeps serving (per-user socket, IDENT, TLS with revocations from the store), writes the audit file opened before the drop, stops on SIGTERM',
  { skip: !isRoot ? 'needs root' : !sessionsExist ? 'the protocol sessions (mysql-session.ts, postgres-session.ts) do not exist yet' : false },
  async () => {
    const alice = createUnixUser(cleanup, 'ca');
    const password = `p-${randomBytes(4).toString('hex')}`;
    createMariadbUser(cleanup, alice.name, password);
    const dir = tempDir(cleanup);
    chmodSync(dir, 0o755);
    const privateDir = join(dir, 'private');
    mkdirSync(privateDir, { mode: 0o700 }); // root only: nobody could not create the audit file here
    const identdPort = await freePort();
    const identd = startWarpstone(cleanup, ['identd', '--listen', `127.0.0.1:${identdPort}`], process.env);
    await identd.waitFor(/identd listening/);
    const tcpPort = await freePort();
    const tlsPort = await freePort();
    const home = await makeHome(cleanup); // 0700, root's: its store is opened before the drop
    const aliceCert = readIdentityFile(await home.issue('user', alice.name));
    const socket = join(dir, `${alice.name}.sock`);
    const file = write(
      dir,
      'dbrelay.yaml',
      `user: nobody
home: ${home.dir}
audit: ${join(privateDir, 'audit.jsonl')}
listeners:
  - { name: homes, kind: per-user, sockets: [{ user: ${alice.name}, path: ${socket} }], upstream: "mysql://127.0.0.1:3306" }
  - { name: ident, kind: tcp, listen: "127.0.0.1:${tcpPort}", ident: { port: ${identdPort} }, upstream: "mysql://127.0.0.1:3306" }
  - { name: certs, kind: tls, listen: "127.0.0.1:${tlsPort}", upstream: "mysql://127.0.0.1:3306" }
`,
    );
    const proc = startProgram(cleanup, process.execPath, ['--import', 'tsx', ENTRY, 'dbrelay', '--config', file]);
    await proc.waitFor(/"msg":"dropped privileges"/);
    const status = readFileSync(`/proc/${proc.child.pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'real, effective, saved and fs uid are nobody');
    for (const where of [['--protocol=SOCKET', '-S', socket], ['--protocol=TCP', '-h', '127.0.0.1', '-P', String(tcpPort)]]) {
      const r = await runAs(alice, 'mariadb', ['--no-defaults', ...where, '-u', alice.name, `-p${password}`, '-N', '-B', '-e', 'SELECT CURRENT_USER()']);
      assert.equal(r.stdout, `${alice.name}@127.0.0.1\n`, r.stderr);
    }
    // the store, opened as root before the drop, still answers: a revocation takes effect at once
    const stream = (): tls.TLSSocket => tls.connect({ host: '127.0.0.1', port: tlsPort, key: aliceCert.keyPem, cert: aliceCert.certPem, ca: home.caPem });
    const viaCert = await mysql.createConnection({ stream, user: alice.name, password });
    const [rows] = await viaCert.query<mysql.RowDataPacket[]>('SELECT CURRENT_USER() AS who');
    assert.equal(rows[0]?.who, `${alice.name}@127.0.0.1`);
    await viaCert.end();
    await runRevoke(home.dir, alice.name);
    await assert.rejects(mysql.createConnection({ stream, user: alice.name, password }), /warpstone dbrelay: could not tell who is connecting \(client certificate, tls: certificate of '.*' \(serial [0-9A-F]+\) was revoked on /);

    const audit = readFileSync(join(privateDir, 'audit.jsonl'), 'utf8').trim().split('\n');
    assert.deepEqual(
      audit.map((l) => JSON.parse(l) as Record<string, unknown>).map((e) => [e.listener, e.identity ?? null, e.decision, e.reason]),
      [
        ['homes', alice.name, 'allow', 'match'],
        ['ident', alice.name, 'allow', 'match'],
        ['certs', alice.name, 'allow', 'match'],
        ['certs', null, 'deny', 'no-identity'],
      ],
    );
    assert.equal(await proc.stop('SIGTERM'), 0);
    assert.match(proc.output(), /"msg":"stopping"/);
  },
);
