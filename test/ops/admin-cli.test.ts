// `warpstone admin token` on a real home: every run mints a fresh token that works against the
// admin listener, `list` shows tokens without secrets, `revoke ID` ends a token. The command is
// parsed by commander exactly as main.ts would (register(program)).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { register, runAdminTokenList, runAdminTokenMint, runAdminTokenRevoke } from '../../src/cli/admin.ts';
import { AdminHttp } from '../../src/ops/admin-http.ts';
import { RelayEvents } from '../../src/ops/events.ts';
import { openStore } from '../../src/store/open.ts';
import { homePaths } from '../../src/common/home.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Cleanup, makeHome } from '../helpers/harness.ts';
import { TestView, request } from './helpers.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

/** Runs `warpstone <args>` through commander in this process; returns what it printed. */
async function cli(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  register(program);
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['node', 'warpstone', ...args]);
  } finally {
    process.stdout.write = write;
  }
  return out;
}

test('admin token mints a fresh token each time; list hides secrets; revoke removes one', async () => {
  const home = await makeHome(cleanup);
  const first = await cli(['admin', 'token', '--label', 'phone', '--home', home.dir]);
  const token1 = /^(wsa_[A-Za-z0-9_-]{43})$/m.exec(first)?.[1];
  assert.ok(token1, first);
  assert.match(first, /admin token \d+ \('phone'\), shown only this once/);
  const second = await cli(['admin', 'token', '--home', home.dir]);
  const token2 = /^(wsa_[A-Za-z0-9_-]{43})$/m.exec(second)?.[1];
  assert.ok(token2 && token2 !== token1, 'a second run mints another token; the first stays valid');
  assert.match(second, /\('made \d{4}-\d\d-\d\d \d\d:\d\dZ'\)/, 'a default label says when');

  const listed = await cli(['admin', 'token', 'list', '--home', home.dir]);
  assert.match(listed, /^ID\s+LABEL\s+CREATED\s+LAST USED$/m);
  assert.match(listed, /phone/);
  assert.ok(!listed.includes(token1.slice(4)) && !listed.includes(token2.slice(4)), 'no secrets listed');
  const json = JSON.parse(await cli(['admin', 'token', 'list', '--json', '--home', home.dir])) as Array<Record<string, unknown>>;
  assert.equal(json.length, 2);
  assert.ok(json.every((t) => !('hash' in t)), 'not even the hashes');

  // the tokens work against an admin listener on this home's store
  const store = await openStore(homePaths(home.dir).store);
  cleanup.add(() => store.close());
  const admin = new AdminHttp({ view: new TestView(store), events: new RelayEvents(), log: silentLogger(), listen: { host: '127.0.0.1', port: 0 }, trusted: [], metrics: { processMetrics: false } });
  await admin.start();
  cleanup.add(() => admin.stop());
  const port = admin.address().port;
  const get = (token: string): Promise<number> => request(port, { path: '/metrics', headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
  assert.equal(await get(token1), 200);
  assert.equal(await get(token2), 200);
  const tokens = await runAdminTokenList(home.dir);
  assert.ok(tokens.find((t) => t.label === 'phone')?.lastUsedAt, 'lastUsedAt was written');

  const id1 = tokens.find((t) => t.label === 'phone')?.id;
  assert.match(await cli(['admin', 'token', 'revoke', String(id1), '--home', home.dir]), new RegExp(`revoked admin token ${id1}`));
  assert.equal(await get(token1), 401, 'revoked');
  assert.equal(await get(token2), 200, 'the other token still works');
  await assert.rejects(cli(['admin', 'token', 'revoke', String(id1), '--home', home.dir]), /no admin token with id/);
  await assert.rejects(runAdminTokenRevoke(home.dir, 'abc'), /is not a token id/);
  await assert.rejects(runAdminTokenMint(home.dir, ' '), /--label/);
});
