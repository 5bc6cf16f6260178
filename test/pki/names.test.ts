import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { nameProblem, assertValidName } from '../../src/pki/names.ts';

test('good names pass', () => {
  for (const name of ['alice', 'bob.smith', 'svc_1', 'a-b', 'user@example.org', '9lives']) {
    assert.equal(nameProblem(name, 'user'), undefined, name);
  }
});

test('each broken rule is named, with the position', () => {
  assert.match(nameProblem('', 'user') ?? '', /is empty/);
  assert.match(nameProblem('bob smith', 'user') ?? '', /whitespace \(U\+0020\) at position 4/);
  assert.match(nameProblem(' bob', 'user') ?? '', /position 1 \(leading\)/);
  assert.match(nameProblem('bob ', 'user') ?? '', /position 4 \(trailing\)/);
  assert.match(nameProblem('bo\u0007b', 'user') ?? '', /control character \(U\+0007\) at position 3/);
  assert.match(nameProblem('bob:22', 'tunnel') ?? '', /contains ":" at position 4/);
  assert.match(nameProblem('x'.repeat(65), 'agent') ?? '', /65 characters long; the limit is 64/);
  assert.match(nameProblem('-bob', 'user') ?? '', /must start with a letter or a digit/);
});

test('assertValidName throws a UsageError with code WS_BAD_NAME', () => {
  assert.throws(() => assertValidName('a b', 'user'), (err: Error & { code?: string }) => err.code === 'WS_BAD_NAME');
});

test('property: any accepted name is printable ASCII without separators', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      if (nameProblem(s, 'user') === undefined) {
        assert.match(s, /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/);
      }
    }),
    { numRuns: 2000 },
  );
});
