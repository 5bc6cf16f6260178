// Property tests of the -C tokenizer and the grammar on random input: never a crash, always
// either a parse or a StoneGrammarError (WS_STONE_GRAMMAR) whose position points into the input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LINE_MARKER, StoneGrammarError, argumentTokens, formatPosition, tokenizeConfig } from '../../src/repeater/tokens.ts';
import { parseStoneTokens, type GrammarEnvironment } from '../../src/repeater/grammar.ts';
import type { StoneCommandLine, TokenPosition } from '../../src/repeater/types.ts';
import { isDirectory, lookupService } from './grammar-env.ts';

const WORDS = [
  // options, alone and clustered
  '-d', '-p', '-pp', '-n', '-r', '-D', '-N', '-l', '-h', '-', '--', '---', '-dp', '-Ld', '-x', '-s', '-b', '-B', '-q', '-z',
  '-T', '-A', '-u', '-X', '-f', '-I', '-L', '-a', '-i', '-o', '-g', '-t', '-c', '-P', '-Q', '-C', '-H', '-M',
  // values
  '0', '10', '-5', '600', '65536', 'abc', '', '-', 'root', '/tmp', 'file.log', 'host=h', 'port=25', 'ext=v6',
  // destinations and listeners
  'localhost:80', 'localhost:http', 'h:80/ssl', 'h:80/http', 'h:80/proxy', 'h:80/mproxy', 'h:80/udp', 'h:80/v6', '::1:80/v6',
  'h:80/sslx,v6', 'h:80/ssl/v6', 'h:', ':80', 'proxy', 'proxy/v6only', 'health', 'identd', 'health/http', '/tmp/x.sock',
  './x.sock/ssl', '/nonexistent/dir/sock', '8080', '8080/ssl', '8080/udp,ssl', '127.0.0.1:8080', '%lo:8080', ':8080',
  '8080/v6only', 'http', 'nosuchservice', '[::1]:80', 'fe80::1:80/v6',
  // request lines, xhosts, regexes, SSL options
  'GET / HTTP/1.0', 'X: \\U\\?1a\\:b\\/', '\\?x', '10.0.0.0/8', '192.168.1.0/255.255.255.0', '0.0.0.0/0.0.0.0', '!', '::1',
  'h/v6', 'h/p3', 'h/129', 'h/,', '^250', '(', 'a{1,2}', '[[:alpha:]]', '\\x41\\0101', '\\xZ',
  'verify', 'verify,once', 'verify,ifany', 'verify,none', 'crl_check_all', 're0=^CN=(.*)$', 're-1=x', 're1=(', 'depth=3',
  'depth=x', 'certkey=/k.pem', 'certkeypat=%n-%s-%t', 'CAfile=/ca.pem', 'lb1=3', 'tls1.3', 'default', 'shutdown=x', 'sni',
  // -C files
  'a.cfg', 'b.cfg', 'missing.cfg',
];

const token = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...WORDS) }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) });

/** Config texts: random words joined by separators, quotes, comments, $VARs. */
const configText = fc
  .array(
    fc.oneof(
      fc.constantFrom(...WORDS).map((w) => (/[\s#'"\\$]/.test(w) || w === '' ? `'${w}'` : w)),
      fc.constantFrom(' ', '\n', '\t', ' # comment\n', '"a b"', "'c d'", '$HOME', '${X}', '\\', ' :', ' =', '"', "'", '#'),
      fc.string({ maxLength: 6 }),
    ),
    { maxLength: 25 },
  )
  .map((parts) => parts.join(' '));

function environment(files: Record<string, string>): GrammarEnvironment {
  return {
    env: { HOME: '/home/op', X: 'x y' },
    readConfigFile: (request) => {
      const text = files[request.path];
      if (text === undefined) throw new Error(`ENOENT: ${request.path}`);
      return text;
    },
    isDirectory,
    lookupService,
  };
}

/** The error's position must be inside the input: an argument index up to n, or a line and column of a -C file that exists. */
function checkPosition(position: TokenPosition, argumentCount: number, files: Record<string, string>): void {
  if (position.kind === 'argument') {
    assert.ok(Number.isInteger(position.index) && position.index >= 0 && position.index <= argumentCount, JSON.stringify(position));
    return;
  }
  const text = files[position.file];
  if (text === undefined && Object.values(files).some((t) => t.split('\n').some((l) => LINE_MARKER.test(l)))) return; // a cpp line marker renamed the file
  assert.ok(text !== undefined, `error in unknown file ${position.file}`);
  if (text.split('\n').some((l) => LINE_MARKER.test(l))) return; // positions follow the markers, not this text
  const lines = text.split('\n');
  assert.ok(position.line >= 1 && position.line <= lines.length, JSON.stringify(position));
  assert.ok(position.column >= 1 && position.column <= (lines[position.line - 1] ?? '').length + 1, JSON.stringify(position));
}

function checkResult(result: StoneCommandLine, argumentCount: number): void {
  if (result.kind === 'help') return;
  const { stones } = result.program;
  assert.ok(stones.length >= 1);
  stones.forEach((stone, i) => {
    assert.equal(stone.index, i);
    if (stone.position.kind === 'argument') assert.ok(stone.position.index < argumentCount);
    assert.equal(stone.settings.sslServer !== undefined, stone.listener.extensions.ssl);
  });
}

test('grammar on random token lists: a parse, or a positioned WS_STONE_GRAMMAR error', () => {
  fc.assert(
    fc.property(fc.array(token, { maxLength: 16 }), configText, configText, (words, a, b) => {
      const files = { 'a.cfg': a, 'b.cfg': b };
      let result: StoneCommandLine;
      try {
        result = parseStoneTokens(argumentTokens(words), environment(files));
      } catch (err) {
        assert.ok(err instanceof StoneGrammarError, `not a StoneGrammarError: ${String((err as Error)?.stack ?? err)} for ${JSON.stringify(words)}`);
        assert.equal(err.code, 'WS_STONE_GRAMMAR');
        checkPosition(err.position, words.length, files);
        assert.ok(err.message.startsWith(`${formatPosition(err.position)}: `), err.message);
        assert.ok(err.expected.length > 0);
        return;
      }
      checkResult(result, words.length);
    }),
    { numRuns: 3000 },
  );
});

/** Mostly well-formed command lines (options, stones, `--`), sometimes with one token replaced. */
const optionGroup = fc.oneof(
  fc.constantFrom(['-d'], ['-p'], ['-r'], ['-n'], ['-T', '30'], ['-A', '5'], ['-X', '4096'], ['-I', '127.0.0.1'], ['-I', '']),
  fc.constantFrom(['-q', 'verify'], ['-z', 'verify,once'], ['-z', 're0=CN=(.*)'], ['-q', 'CAfile=/ca.pem'], ['-z', 'default']),
  fc.constantFrom(['-x', '80,443', '10.0.0.0/8', '--'], ['-x', '--'], ['-s', 'HELO\\r\\n', '^250', '--'], ['-B', 'a:1', 'b:1', '--']),
  fc.constantFrom(['-b', '5', 'm.example:25', 'b.example:25'], ['-b', 'port=26', '0', 'm:25', 'b:25']),
);
const stoneWords = fc.oneof(
  fc.tuple(fc.constantFrom('localhost:80', 'h:443/ssl', 'h:53/udp', '::1:80/v6', '/run/x.sock', 'proxy', 'health', 'identd', 'm.example:25'), fc.constantFrom('8080', '127.0.0.1:8443/ssl', '53/udp', '8080/v6', '%lo:1', './s.sock'))
    .chain(([d, l]) => fc.array(fc.constantFrom('127.0.0.1', '!', '10.0.0.0/8', '::1/v6', 'h/p2'), { maxLength: 3 }).map((x) => [d, l, ...x])),
  fc.constantFrom(['h:80/http', '8080', 'GET /\\a HTTP/1.0'], ['h:80/proxy', '8080', 'X-From: \\A'], ['h:80/mproxy', '8080', 'X: \\?1\\1\\:none\\/']),
);
const commandLine = fc
  .array(fc.tuple(fc.array(optionGroup, { maxLength: 3 }), stoneWords), { minLength: 1, maxLength: 4 })
  .map((stones) => stones.flatMap(([options, words], i) => [...(i > 0 ? ['--'] : []), ...options.flat(), ...words]));

test('grammar on mostly well-formed command lines, with one token sometimes replaced', () => {
  let parsed = 0;
  fc.assert(
    fc.property(commandLine, fc.option(fc.tuple(fc.nat(), token), { freq: 2 }), (words, mutation) => {
      const list = [...words];
      if (mutation) list[mutation[0] % list.length] = mutation[1];
      try {
        checkResult(parseStoneTokens(argumentTokens(list), environment({})), list.length);
        parsed++;
      } catch (err) {
        assert.ok(err instanceof StoneGrammarError, `not a StoneGrammarError: ${String((err as Error)?.stack ?? err)} for ${JSON.stringify(list)}`);
        checkPosition(err.position, list.length, {});
      }
    }),
    { numRuns: 3000 },
  );
  assert.ok(parsed > 1000, `only ${parsed} of 3000 parsed: the generator should mostly produce valid command lines`);
});

test('grammar on random -C files', () => {
  fc.assert(
    fc.property(configText, (text) => {
      const files = { 'a.cfg': text };
      try {
        checkResult(parseStoneTokens(argumentTokens(['-C', 'a.cfg']), environment(files)), 2);
      } catch (err) {
        assert.ok(err instanceof StoneGrammarError, String((err as Error)?.stack ?? err));
        checkPosition(err.position, 2, files);
      }
    }),
    { numRuns: 2000 },
  );
});

test('tokenizer on random text: tokens in order with valid positions, or a positioned error', () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom('a', ' ', '\n', '\r', '\t', '#', "'", '"', '\\', '$', '{', '}', ':', '=', 'X', '\0', 'é'), maxLength: 60 }), (text) => {
      const files = { 'f.cfg': text };
      try {
        const tokens = tokenizeConfig(text, 'f.cfg', { env: { X: 'v' } });
        let previous: [number, number] = [0, 0];
        for (const t of tokens) {
          checkPosition(t.position, 0, files);
          assert.equal(t.position.kind, 'file');
          if (t.position.kind !== 'file') return;
          const here: [number, number] = [t.position.line, t.position.column];
          assert.ok(here[0] > previous[0] || (here[0] === previous[0] && here[1] > previous[1]), `${JSON.stringify(text)}: positions must increase`);
          previous = here;
        }
      } catch (err) {
        assert.ok(err instanceof StoneGrammarError, String(err));
        checkPosition(err.position, 0, files);
      }
    }),
    { numRuns: 3000 },
  );
});
