// Request/header templates, -s send strings and POSIX extended regular expressions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NotationError,
  expandTemplate,
  parseExtendedRegex,
  parseSendString,
  parseTemplate,
  toRegExp,
} from '../../src/repeater/escapes.ts';

const CONTEXT = {
  values: {
    'peer-address': '192.0.2.7',
    'peer-address-port': '192.0.2.7:40000',
    'original-destination': '10.0.0.1',
    'original-destination-port': '10.0.0.1:443',
    'user-id': '1000',
    'group-id': '100',
    'user-name': 'alice',
    'group-name': 'users',
  },
  matches: ['0A1B', 'alice', ''],
} as const;

test('template: control characters, values, match groups, literal fallbacks', () => {
  const t = parseTemplate('GET /\\a/\\A?u=\\U&g=\\G&id=\\u:\\g&d=\\d,\\D&cn=\\1&s=\\0&x=\\2 HTTP/1.0\\r\\nX: \\\\ \\q \\: \\/\\t');
  assert.equal(
    expandTemplate(t, CONTEXT),
    'GET /192.0.2.7/192.0.2.7:40000?u=alice&g=users&id=1000:100&d=10.0.0.1,10.0.0.1:443&cn=alice&s=0A1B&x= HTTP/1.0\r\nX: \\ q : /\t',
  );
  assert.deepEqual(parseTemplate('CONNECT web HTTP/1.1').parts, [{ kind: 'text', text: 'CONNECT web HTTP/1.1' }]);
  assert.deepEqual(parseTemplate('a\\').parts, [{ kind: 'text', text: 'a\\' }], 'a final backslash stays');
  assert.equal(expandTemplate(parseTemplate('\\a\\u\\9'), {}), '', 'missing values expand to nothing');
});

test('template: \\?N then \\: else \\/ conditional, nested, and its refusals', () => {
  const t = parseTemplate('X-User: \\?1\\1\\:anonymous\\/!');
  assert.equal(expandTemplate(t, { matches: [undefined, 'bob'] }), 'X-User: bob!');
  assert.equal(expandTemplate(t, { matches: [undefined, ''] }), 'X-User: anonymous!');
  assert.equal(expandTemplate(t, {}), 'X-User: anonymous!');
  const nested = parseTemplate('[\\?1a\\?2b\\:c\\/d\\:e\\?2f\\:g\\/h\\/]');
  assert.equal(expandTemplate(nested, { matches: [undefined, 'x', 'y'] }), '[abd]');
  assert.equal(expandTemplate(nested, { matches: [undefined, 'x', ''] }), '[acd]');
  assert.equal(expandTemplate(nested, { matches: [undefined, '', 'y'] }), '[efh]');
  assert.equal(expandTemplate(nested, { matches: [undefined, '', ''] }), '[egh]');
  assert.equal(expandTemplate(parseTemplate('\\?1yes'), { matches: [undefined, 'x'] }), 'yes', 'an unclosed conditional ends with the text');
  assert.equal(expandTemplate(parseTemplate('\\?1a\\:b:c'), { matches: [] }), 'b:c');
  assert.throws(() => parseTemplate('a\\?x'), (err: unknown) => err instanceof NotationError && err.offset === 1 && /must be followed by a group digit/.test(err.message));
  assert.throws(() => parseTemplate('\\?1yes\\/'), /'\\\/' before the '\\:'/);
});

test('template parse is total on random text and expansion never throws', () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom('a', '\\', '?', ':', '/', '1', 'n', 'U', 'x') , maxLength: 30 }), (text) => {
      let t;
      try {
        t = parseTemplate(text);
      } catch (err) {
        assert.ok(err instanceof NotationError && err.code === 'WS_STONE_ESCAPE', String(err));
        return;
      }
      assert.equal(typeof expandTemplate(t, CONTEXT), 'string');
    }),
  );
});

test('-s send strings: \\xHH and \\0ooo work (stone 2.4 garbles them), \\c is c', () => {
  const bytes = (s: string): number[] => [...parseSendString(s).bytes];
  assert.deepEqual(bytes('HELO\\r\\n'), [...Buffer.from('HELO\r\n')]);
  assert.deepEqual(bytes('\\x41\\x4a\\xA'), [0x41, 0x4a, 0x0a]);
  assert.deepEqual(bytes('\\x414'), [0x41, 0x34], 'at most two hex digits');
  assert.deepEqual(bytes('\\0101\\0\\012\\08'), [0x41, 0, 0x0a, 0, 0x38]);
  assert.deepEqual(bytes('\\q\\\\é\\'), [0x71, 0x5c, 0xc3, 0xa9, 0x5c]);
  assert.throws(() => parseSendString('\\xZ'), (err: unknown) => err instanceof NotationError && err.offset === 0 && /hex digits/.test(err.message));
  assert.throws(() => parseSendString('ab\\0777'), (err: unknown) => err instanceof NotationError && err.offset === 2 && /more than one byte/.test(err.message));
});

test('extended regex: accepted as glibc does, translated to JavaScript', () => {
  const match = (source: string, subject: string, ignoreCase = false): string[] | null => {
    const m = toRegExp(parseExtendedRegex(source, ignoreCase)).exec(subject);
    return m ? [...m].map((g) => g ?? '') : null;
  };
  assert.deepEqual(match('^2[0-9][0-9] ', '250 ok'), ['250 ']);
  assert.deepEqual(match('[[:alpha:]]+[[:digit:]]{2,}', '  abc123'), ['abc123']);
  assert.deepEqual(match('CN=([^/,]+)', 'C=JP, CN=alice, O=x'), ['CN=alice', 'alice']);
  assert.deepEqual(match('cn=(.*)$', 'CN=Bob', true), ['CN=Bob', 'Bob'], 're<n>= rules are case-insensitive');
  assert.deepEqual(match('a.b', 'a\nb'), ['a\nb'], 'POSIX . matches a newline');
  assert.deepEqual(match('x)', 'x)'), ['x)'], 'an unmatched ) is literal');
  assert.deepEqual(match('[]a]+', ']a]'), [']a]']);
  assert.deepEqual(match('[\\]+', 'a\\\\'), ['\\\\'], 'backslash is literal in brackets');
  assert.deepEqual(match('a+?', 'aaa'), ['aaa'], '+? is two greedy quantifiers, not a lazy one');
  assert.deepEqual(match('a{1,2}{3}', 'aaaaaa'), ['aaaaaa']);
  assert.deepEqual(match('x{,3}y', 'xxy'), ['xxy']);
  assert.deepEqual(match('(ab)\\1', 'abab'), ['abab', 'ab']);
  assert.deepEqual(match('\\<is\\>', 'this is'), ['is']);
  assert.deepEqual(match('a\\d', 'ad'), ['ad'], '\\d is a plain d in POSIX');
  assert.deepEqual(match('[[.-.]a]+', '-a-'), ['-a-']);
  assert.deepEqual(match('', 'x'), [''], 'an empty expression matches');
});

test('extended regex: refused where glibc regcomp refuses', () => {
  for (const source of ['(', '[', 'a{', 'a{1', '*a', '+', '^*', 'a$*', '{1}', 'a|{', '({)', 'a{x}', 'a{}', 'a{2,1}', 'a{32768}', '(a|*b)', '[]', '[^]', '[z-a]', '[[:foo:]]', '[[:alpha:]-z]', 'x\\', '\\2']) {
    assert.throws(() => parseExtendedRegex(source), (err: unknown) => err instanceof NotationError && err.code === 'WS_STONE_REGEX', source);
  }
  for (const source of [')', ']', 'a**', 'a|', '|a', '()', 'a{32767}', 'a{,}', '[a-]', '[[=a=]]']) {
    assert.doesNotThrow(() => parseExtendedRegex(source), source);
  }
});

test('extended regex: the translation itself is always valid JavaScript', () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom('a', 'b', '(', ')', '[', ']', '{', '}', ',', '1', '2', '*', '+', '?', '|', '^', '$', '\\', '.', ':', '-'), maxLength: 16 }), (source) => {
      try {
        const regex = parseExtendedRegex(source);
        assert.ok(toRegExp(regex) instanceof RegExp);
      } catch (err) {
        assert.ok(err instanceof NotationError && err.code === 'WS_STONE_REGEX', `${source}: ${String(err)}`);
        assert.doesNotMatch(err.message, /not a usable regular expression/, `the translator let through ${JSON.stringify(source)}`);
      }
    }),
    { numRuns: 2000 },
  );
});
