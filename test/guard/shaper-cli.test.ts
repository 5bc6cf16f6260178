// `warpstone limit` against a real home (SQLite store): set, change, list, remove; the policy
// revision moves so relays reload; user limits need an issued user; flag errors name the flag.
// (Lives under test/guard with the shaper until src/cli/limit.ts gets its test/cli file.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { Cleanup, makeHome } from '../helpers/harness.ts';
import { withStore } from '../../src/cli/shared.ts';
import { formatLimits, limitFromFlags, register, runLimitList, runLimitRemove, runLimitSet } from '../../src/cli/limit.ts';
import { UsageError, WarpstoneError } from '../../src/common/errors.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());

const code = (c: string) => (err: unknown) => err instanceof WarpstoneError && err.code === c;

test('set, change, list and remove limits; each change moves the policy revision', async () => {
  const home = await makeHome(cleanup);
  const revision = (): Promise<number> => withStore(home.dir, (s) => s.revision());
  const r0 = await revision();
  const first = await runLimitSet(home.dir, 'tunnel', 'web', { baseline: '10Mbit', max: '50Mbit', credits: '1GB' });
  assert.deepEqual(first.record, { scope: 'tunnel', name: 'web', baselineBytesPerSecond: 1_250_000, maxBytesPerSecond: 6_250_000, creditCapBytes: 1e9 });
  assert.equal(first.previous, undefined);
  assert.deepEqual(first.notes, ["no agent has served tunnel 'web' yet; the limit applies once one does"]);
  const r1 = await revision();
  assert.ok(r1 > r0, `revision ${r0} -> ${r1}`);

  await home.issue('user', 'alice');
  await runLimitSet(home.dir, 'user', 'alice', { baseline: '2MB/s' });
  const changed = await runLimitSet(home.dir, 'tunnel', 'web', { baseline: '20Mbit', max: '50Mbit', credits: '512MiB' });
  assert.equal(changed.previous?.baselineBytesPerSecond, 1_250_000);
  assert.ok((await revision()) > r1);

  const listed = await runLimitList(home.dir);
  assert.deepEqual(
    listed.map((l) => [l.scope, l.name, l.baselineBytesPerSecond, l.maxBytesPerSecond, l.creditCapBytes]),
    [
      ['tunnel', 'web', 2_500_000, 6_250_000, 512 * 1024 * 1024],
      ['user', 'alice', 2_000_000, 2_000_000, 0],
    ],
  );
  const table = formatLimits(listed);
  assert.match(table, /^SCOPE\s+NAME\s+BASELINE\s+MAX\s+CREDITS\s+FULL BURST$/m);
  assert.match(table, /^tunnel\s+web\s+20 Mbit\/s \(2\.5 MB\/s\)\s+50 Mbit\/s \(6\.25 MB\/s\)\s+512 MiB\s+2 min 23 s$/m);
  assert.match(table, /^user\s+alice\s+16 Mbit\/s \(2 MB\/s\)\s+16 Mbit\/s \(2 MB\/s\)\s+0 B\s+-$/m);

  assert.equal(await runLimitRemove(home.dir, 'tunnel', 'web'), true);
  assert.equal(await runLimitRemove(home.dir, 'tunnel', 'web'), false);
  assert.deepEqual((await runLimitList(home.dir)).map((l) => l.name), ['alice']);
});

test('a user limit needs an issued user; an agent is not a user', async () => {
  const home = await makeHome(cleanup);
  await assert.rejects(runLimitSet(home.dir, 'user', 'nobody', { baseline: '1Mbit' }), code('WS_NO_SUCH_USER'));
  await home.issue('agent', 'box');
  await assert.rejects(runLimitSet(home.dir, 'user', 'box', { baseline: '1Mbit' }), (err: unknown) => err instanceof UsageError && /'box' is an agent, not a user/.test(err.message));
  assert.deepEqual(await runLimitList(home.dir), []);
});

test('flag errors name the flag and say what to write', () => {
  const refusals: Array<[string, string, { baseline?: string; max?: string; credits?: string }, RegExp]> = [
    ['tunnel', 'web', {}, /^--baseline RATE is required/],
    ['tunnel', 'web', { baseline: '10' }, /^--baseline: '10' needs a unit/],
    ['tunnel', 'web', { baseline: '10Mbit', max: '5Mbit', credits: '1GB' }, /^--max: 5 Mbit\/s \(625 kB\/s\) is below --baseline 10 Mbit\/s/],
    ['tunnel', 'web', { baseline: '10Mbit', max: '50Mbit' }, /^--credits: bursting to --max 50 Mbit\/s .* needs credits to spend/],
    ['tunnel', 'web', { baseline: '10Mbit', credits: '1GB' }, /^--max: credits are spent only above the baseline/],
    ['tunnel', 'web', { baseline: '10Mbit', credits: '1Gbit' }, /^--credits: '1Gbit' is in bits/],
    ['tunnels', 'web', { baseline: '10Mbit' }, /^the first argument says what is limited: 'tunnel' or 'user', got 'tunnels'/],
    ['user', ' alice', { baseline: '10Mbit' }, /^user name " alice" contains whitespace .* \(leading\)/],
  ];
  for (const [scope, name, flags, pattern] of refusals) {
    assert.throws(() => limitFromFlags(scope, name, flags), (err: unknown) => err instanceof UsageError && pattern.test(err.message), `${scope} ${name} ${JSON.stringify(flags)}`);
  }
});

test('the commands as registered: set, list --json, remove', async () => {
  const home = await makeHome(cleanup);
  const program = new Command().exitOverride();
  register(program);
  const out: string[] = [];
  const err: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  const run = async (...args: string[]): Promise<string> => {
    out.length = 0;
    err.length = 0;
    process.stdout.write = ((chunk: string) => out.push(chunk) > 0) as typeof process.stdout.write;
    process.stderr.write = ((chunk: string) => err.push(chunk) > 0) as typeof process.stderr.write;
    try {
      await program.parseAsync([...args, '--home', home.dir], { from: 'user' });
    } finally {
      process.stdout.write = write;
      process.stderr.write = writeErr;
    }
    return out.join('');
  };
  assert.equal(
    await run('limit', 'set', 'tunnel', 'db', '--baseline', '500kbit', '--max', '10Mbit', '--credits', '100MB'),
    'set: tunnel db: baseline 500 kbit/s (62.5 kB/s), bursts to 10 Mbit/s (1.25 MB/s) with up to 100 MB of credit (a full burst lasts 1 min 24 s)\n',
  );
  assert.equal(err.join(''), "warpstone: note: no agent has served tunnel 'db' yet; the limit applies once one does\n");
  assert.deepEqual(JSON.parse(await run('limit', 'list', '--json')), [{ scope: 'tunnel', name: 'db', baselineBytesPerSecond: 62_500, maxBytesPerSecond: 1_250_000, creditCapBytes: 100e6 }]);
  assert.equal(await run('limit', 'remove', 'tunnel', 'db'), 'removed: tunnel db is no longer limited\n');
  assert.equal(await run('limit', 'list'), 'no bandwidth limits\n');
});
