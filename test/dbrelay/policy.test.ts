// The database relay's decision (policy.ts): every rule of issue 4 with its reason and message,
// the mapping's exact-list semantics, what "cannot tell" means, visible quoting of odd names, and
// fast-check properties that no combination of inputs lets a known, unmapped DB user through.
// Owns: test/dbrelay/policy.test.ts. Must not: open sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createPolicy, describeIdentity, visibleName } from '../../src/dbrelay/policy.ts';
import type { ClientIdentity, IdentitySource } from '../../src/dbrelay/types.ts';

const alice: ClientIdentity = { name: 'alice', source: 'certificate' };

function known(...users: string[]): { has(user: string): Promise<boolean>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    has: async (user) => {
      calls.push(user);
      return users.includes(user);
    },
  };
}

test('equality by default: the identity may use the DB user of its own name, and only that', async () => {
  const users = known('alice', 'bob');
  const decide = createPolicy({ strict: false, mapping: new Map(), knownUsers: users });
  assert.deepEqual(await decide({ identity: alice, dbUser: 'alice' }), {
    allow: true,
    reason: 'match',
    message: "identity 'alice' (client certificate) may log in as database user 'alice'",
  });
  assert.deepEqual(users.calls, [], 'a match needs no lookup');
  assert.deepEqual(await decide({ identity: alice, dbUser: 'bob' }), {
    allow: false,
    reason: 'mismatch',
    message: "warpstone dbrelay: identity 'alice' (client certificate) may not log in as database user 'bob'",
  });
  // Names compare exactly, as the databases compare them.
  assert.equal((await decide({ identity: { name: 'Alice', source: 'ident' }, dbUser: 'alice' })).reason, 'mismatch');
});

test('mapping: a listed identity gets exactly its list; its own name is not implied', async () => {
  const decide = createPolicy({
    strict: false,
    mapping: new Map([
      ['alice', ['alice', 'alice_ro']],
      ['deploy', ['app']],
    ]),
    knownUsers: known('alice', 'alice_ro', 'app', 'deploy', 'carol'),
  });
  const as = (name: string): ClientIdentity => ({ name, source: 'unix-peer' });
  const verdicts = async (name: string, dbUser: string): Promise<string> => {
    const d = await decide({ identity: as(name), dbUser });
    return `${d.allow ? 'allow' : 'deny'}/${d.reason}`;
  };
  assert.equal(await verdicts('alice', 'alice'), 'allow/match');
  assert.equal(await verdicts('alice', 'alice_ro'), 'allow/match');
  assert.equal(await verdicts('alice', 'app'), 'deny/mismatch');
  assert.equal(await verdicts('deploy', 'app'), 'allow/match');
  assert.equal(await verdicts('deploy', 'deploy'), 'deny/mismatch', 'deploy is listed, so deploy → deploy is not implied');
  assert.equal(await verdicts('carol', 'carol'), 'allow/match', 'unlisted: equality');
  assert.equal(await verdicts('carol', 'app'), 'deny/mismatch');
  const empty = createPolicy({ strict: false, mapping: new Map([['nobody', []]]), knownUsers: known('nobody') });
  assert.equal((await empty({ identity: as('nobody'), dbUser: 'nobody' })).allow, false, 'an empty list allows nothing');
});

test('unknown DB user: logged and allowed, refused under strict', async () => {
  const lax = createPolicy({ strict: false, mapping: new Map(), knownUsers: known('alice') });
  assert.deepEqual(await lax({ identity: alice, dbUser: 'ghost' }), {
    allow: true,
    reason: 'unknown-db-user',
    message: "database user 'ghost' does not exist in the database; identity 'alice' (client certificate) is let through because the listener is not strict (the database will refuse the login)",
  });
  const strict = createPolicy({ strict: true, mapping: new Map(), knownUsers: known('alice') });
  assert.deepEqual(await strict({ identity: alice, dbUser: 'ghost' }), {
    allow: false,
    reason: 'unknown-db-user',
    message: "warpstone dbrelay: database user 'ghost' does not exist in the database; identity 'alice' (client certificate) is refused because the listener is strict",
  });
  assert.equal((await strict({ identity: alice, dbUser: 'alice' })).allow, true, 'strict still allows a match');
});

test('cannot tell whether the DB user exists (undefined, or the lookup fails): the mapping applies', async () => {
  for (const knownUsers of [{ has: async () => undefined }, { has: async (): Promise<boolean> => Promise.reject(new Error('db down')) }]) {
    const decide = createPolicy({ strict: false, mapping: new Map(), knownUsers });
    const d = await decide({ identity: alice, dbUser: 'bob' });
    assert.equal(d.allow, false);
    assert.equal(d.reason, 'mismatch');
    assert.match(d.message, /the relay cannot tell whether that user exists, so the mapping applies/);
    assert.equal((await decide({ identity: alice, dbUser: 'alice' })).allow, true);
  }
});

test('unparsable first packet: logged and allowed, refused under strict; the parser\'s words are kept', async () => {
  const input = { identity: alice, dbUser: undefined, parseProblem: 'user name is not NUL-terminated' };
  const lax = await createPolicy({ strict: false, mapping: new Map(), knownUsers: known() })(input);
  assert.deepEqual(lax, {
    allow: true,
    reason: 'unparsable',
    message: "could not read the database user from the first packet (user name is not NUL-terminated); identity 'alice' (client certificate) is let through because the listener is not strict",
  });
  const strict = await createPolicy({ strict: true, mapping: new Map(), knownUsers: known() })(input);
  assert.equal(strict.allow, false);
  assert.equal(strict.reason, 'unparsable');
  assert.match(strict.message, /^warpstone dbrelay: could not read the database user .*refused because the listener is strict$/);
});

test('no identity: refused, strict or not, whatever the DB user', async () => {
  for (const strict of [false, true]) {
    const decide = createPolicy({ strict, mapping: new Map([['', ['x']]]), knownUsers: known('alice') });
    const none: ClientIdentity = { name: undefined, source: 'ident', detail: 'NO-USER' };
    assert.deepEqual(await decide({ identity: none, dbUser: 'alice' }), {
      allow: false,
      reason: 'no-identity',
      message: "warpstone dbrelay: could not tell who is connecting (IDENT, NO-USER), so database user 'alice' is refused",
    });
    const unparsed = await decide({ identity: { name: undefined, source: 'unix-peer' }, dbUser: undefined });
    assert.deepEqual([unparsed.allow, unparsed.reason], [false, 'no-identity']);
    assert.match(unparsed.message, /\(UNIX peer credentials\), so any database user is refused/);
    // An empty name is no name (even if a mapping lists '').
    assert.equal((await decide({ identity: { name: '', source: 'tunnel' }, dbUser: 'x' })).reason, 'no-identity');
  }
});

test('names that could hide something are shown JSON-quoted and escaped', async () => {
  assert.equal(visibleName('alice'), "'alice'");
  assert.equal(visibleName('jé_ü'), "'jé_ü'");
  assert.equal(visibleName('alice '), '"alice "');
  assert.equal(visibleName(' alice'), '" alice"');
  assert.equal(visibleName(''), '""');
  assert.equal(visibleName('a\nb\tc\0'), '"a\\nb\\tc\\u0000"');
  assert.equal(visibleName('\u202eecila'), '"\\u202eecila"', 'right-to-left override made visible');
  assert.equal(visibleName('al\u200bice'), '"al\\u200bice"', 'zero-width space made visible');
  assert.equal(visibleName('a\u00a0b'), '"a\\u00a0b"', 'no-break space made visible');
  assert.equal(visibleName("o'brien"), '"o\'brien"');
  assert.equal(visibleName('x\u0085'), '"x\\u0085"');
  const decide = createPolicy({ strict: true, mapping: new Map(), knownUsers: known('alice') });
  const d = await decide({ identity: alice, dbUser: 'alice\r\n' });
  assert.equal(d.message, 'warpstone dbrelay: database user "alice\\r\\n" does not exist in the database; identity \'alice\' (client certificate) is refused because the listener is strict');
  assert.equal(describeIdentity({ name: 'bob ', source: 'unix-socket-owner', detail: '/home/bob/db.sock' }), 'identity "bob " (per-user socket, /home/bob/db.sock)');
});

// ---------------------------------------------------------------------------------------------
// Properties

const sources: IdentitySource[] = ['certificate', 'tunnel', 'unix-peer', 'unix-socket-owner', 'ident'];
const smallName = fc.constantFrom('alice', 'bob', 'app', 'alice_ro', 'Alice', 'alice ', '', 'deploy');

test('property: a known DB user is allowed only through the mapping (or equality), and never without an identity', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.option(smallName, { nil: undefined }),
      fc.constantFrom(...sources),
      fc.option(smallName, { nil: undefined }),
      fc.array(fc.tuple(smallName, fc.array(smallName, { maxLength: 3 })), { maxLength: 4 }),
      fc.boolean(),
      fc.constantFrom<'all' | 'none' | 'unsure'>('all', 'none', 'unsure'),
      async (name, source, dbUser, entries, strict, existence) => {
        const mapping = new Map(entries);
        const knownUsers = { has: async (): Promise<boolean | undefined> => (existence === 'all' ? true : existence === 'none' ? false : undefined) };
        const d = await createPolicy({ strict, mapping, knownUsers })({ identity: { name, source }, dbUser });
        assert.ok(d.message.length > 0);
        if (name === undefined || name === '') {
          assert.deepEqual([d.allow, d.reason], [false, 'no-identity']);
          return;
        }
        const mayUse = dbUser !== undefined && (mapping.has(name) ? (mapping.get(name) ?? []).includes(dbUser) : name === dbUser);
        if (mayUse) assert.deepEqual([d.allow, d.reason], [true, 'match']);
        else if (dbUser === undefined) assert.deepEqual([d.allow, d.reason], [!strict, 'unparsable']);
        else if (existence === 'none') assert.deepEqual([d.allow, d.reason], [!strict, 'unknown-db-user']);
        else assert.deepEqual([d.allow, d.reason], [false, 'mismatch']);
        if (!d.allow) assert.match(d.message, /^warpstone dbrelay: /);
        if (dbUser !== undefined && name !== undefined) assert.ok(d.message.includes(visibleName(dbUser)), d.message);
      },
    ),
    { numRuns: 2000 },
  );
});

test('property: visibleName never shows a control, format or separator character bare, and round-trips through JSON when quoted', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (name) => {
      const shown = visibleName(name);
      const inner = shown.slice(1, -1);
      assert.doesNotMatch(inner, /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u);
      if (shown.startsWith('"')) assert.equal(JSON.parse(shown), name);
      else assert.equal(inner, name);
    }),
    { numRuns: 3000 },
  );
});
