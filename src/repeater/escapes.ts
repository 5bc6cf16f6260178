// The notations stone interprets inside one token, parsed once and used per connection:
//   - request/header templates of `/http`, `/proxy`, `/mproxy` (stone's strnparse()):
//     `\n \r \t`, `\a \A` client address (and :port), `\d \D` original destination (and :port),
//     `\u \g \U \G` uid, gid, user and group of the client, `\0`..`\9` certificate match groups,
//     `\?N then \: else \/` conditional; any other `\c` is `c` (so `\\` is a backslash) and a
//     backslash at the end stays a backslash;
//   - `-s` send strings (stone's str2bin()): `\n \r \t`, and the `\xHH` and `\0ooo` byte escapes
//     that stone 2.4 garbles (its str2num() adds character codes instead of digit values and
//     leaves the digits in the output) — here they work;
//   - POSIX extended regular expressions (`-s` expect strings, `re<n>=`), validated as glibc's
//     regcomp() does and translated to JavaScript.
// Differences from stone, on purpose: a conditional nested inside a branch that is skipped is
// skipped as a whole (stone's skip mode does not see nested `\:`/`\/`); `\?` not followed by a
// digit, and `\/` before the `\:` of a conditional (stone reads it as a literal `/` and runs the
// then-part to the next `\:` or the end), are refused rather than guessed.
// Owns: these three notations. Must not: touch sockets, look up names or users (the caller
// supplies every value in an ExpansionContext), know token positions (errors carry an offset
// into the text; grammar.ts adds the position).
import { WarpstoneError } from '../common/errors.js';
import type { EscapedTemplate, ExtendedRegex, SendString, TemplatePart, TemplateValue } from './types.js';

/** A notation inside a token is wrong; `offset` is the index in the token's text. */
export class NotationError extends WarpstoneError {
  readonly offset: number;
  constructor(code: 'WS_STONE_ESCAPE' | 'WS_STONE_REGEX', offset: number, message: string) {
    super(code, message);
    this.offset = offset;
  }
}

// ---------------------------------------------------------------------------------------------
// Request and header templates

const VALUE_ESCAPES: Readonly<Record<string, TemplateValue>> = {
  a: 'peer-address',
  A: 'peer-address-port',
  d: 'original-destination',
  D: 'original-destination-port',
  u: 'user-id',
  g: 'group-id',
  U: 'user-name',
  G: 'group-name',
};

const CONTROL_ESCAPES: Readonly<Record<string, string>> = { n: '\n', r: '\r', t: '\t' };

/** Parses a `/http` request or `/proxy` header once. Throws NotationError (WS_STONE_ESCAPE). */
export function parseTemplate(text: string): EscapedTemplate {
  const reader = new TemplateReader(text);
  const parts = reader.parts('top');
  return { text, parts };
}

type PartsEnd = 'top' | 'then' | 'otherwise';

class TemplateReader {
  private at = 0;
  constructor(private readonly text: string) {}

  /** Reads parts until the end of the text, or the `\:` / `\/` that closes a branch. */
  parts(end: PartsEnd): TemplatePart[] {
    const out: TemplatePart[] = [];
    const addText = (s: string): void => {
      const last = out[out.length - 1];
      if (last && last.kind === 'text') out[out.length - 1] = { kind: 'text', text: last.text + s };
      else out.push({ kind: 'text', text: s });
    };
    while (this.at < this.text.length) {
      const c = this.text[this.at] as string;
      if (c !== '\\') {
        addText(c);
        this.at++;
        continue;
      }
      const escapeAt = this.at;
      const e = this.text[this.at + 1];
      this.at += 2;
      if (e === undefined) {
        addText('\\');
        break;
      }
      if (end === 'then' && e === ':') return out;
      if (end === 'otherwise' && e === '/') return out;
      if (end === 'then' && e === '/') {
        throw new NotationError('WS_STONE_ESCAPE', escapeAt, "'\\/' before the '\\:' of a '\\?N' conditional: write '\\?N then\\:else\\/' (with an empty else: '\\?N then\\:\\/')");
      }
      if (e === '?') {
        out.push(this.conditional(escapeAt));
        continue;
      }
      if (e >= '0' && e <= '9') {
        out.push({ kind: 'match', group: Number(e) });
        continue;
      }
      const value = VALUE_ESCAPES[e];
      if (value) {
        out.push({ kind: 'value', value });
        continue;
      }
      addText(CONTROL_ESCAPES[e] ?? e);
    }
    return out;
  }

  private conditional(escapeAt: number): TemplatePart {
    const digit = this.text[this.at];
    if (digit === undefined || digit < '0' || digit > '9') {
      throw new NotationError('WS_STONE_ESCAPE', escapeAt, "'\\?' must be followed by a group digit: '\\?N then\\:else\\/' (N = 0..9)");
    }
    this.at++;
    const then = this.parts('then');
    const otherwise = this.parts('otherwise');
    return { kind: 'conditional', group: Number(digit), then, otherwise };
  }
}

/**
 * What the escapes stand for on one connection. Missing values expand to '' (what stone gives
 * where it has nothing, e.g. `\u` on a TCP listener); the engine passes stone's own fallbacks
 * where stone has one (`0.0.0.0` / `0.0.0.0:0` when the peer address is unknown, `-1` for the
 * uid/gid of a UNIX peer without credentials).
 */
export interface ExpansionContext {
  readonly values?: Readonly<Partial<Record<TemplateValue, string>>>;
  /** certificate match groups; index 0 = serial, 1..9 = re<n>= groups */
  readonly matches?: readonly (string | undefined)[];
}

export function expandTemplate(template: EscapedTemplate, context: ExpansionContext): string {
  return expandParts(template.parts, context);
}

export function expandParts(parts: readonly TemplatePart[], context: ExpansionContext): string {
  let out = '';
  for (const part of parts) out += expandPart(part, context);
  return out;
}

function expandPart(part: TemplatePart, context: ExpansionContext): string {
  switch (part.kind) {
    case 'text':
      return part.text;
    case 'value':
      return context.values?.[part.value] ?? '';
    case 'match':
      return context.matches?.[part.group] ?? '';
    case 'conditional': {
      const group = context.matches?.[part.group];
      return expandParts(group ? part.then : part.otherwise, context);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// -s send strings

/**
 * Parses a `-s` send string: `\n \r \t`, `\xH` / `\xHH` (hex byte), `\0` followed by up to
 * three octal digits (`\0` alone is NUL, `\0101` is `A`), `\c` = c, a final backslash stays.
 * Other characters are sent as UTF-8.
 */
export function parseSendString(text: string): SendString {
  const bytes: number[] = [];
  const pushText = (s: string): void => {
    for (const b of Buffer.from(s, 'utf8')) bytes.push(b);
  };
  let at = 0;
  while (at < text.length) {
    const c = text[at] as string;
    if (c !== '\\') {
      const cp = text.codePointAt(at) as number;
      const ch = String.fromCodePoint(cp);
      pushText(ch);
      at += ch.length;
      continue;
    }
    const e = text[at + 1];
    if (e === undefined) {
      bytes.push(0x5c);
      break;
    }
    if (e === 'x') {
      const hex = /^[0-9A-Fa-f]{1,2}/.exec(text.slice(at + 2));
      if (!hex) throw new NotationError('WS_STONE_ESCAPE', at, "'\\x' must be followed by one or two hex digits, e.g. \\x0d");
      bytes.push(parseInt(hex[0], 16));
      at += 2 + hex[0].length;
      continue;
    }
    if (e === '0') {
      const octal = /^[0-7]{0,3}/.exec(text.slice(at + 2))?.[0] ?? '';
      const value = octal === '' ? 0 : parseInt(octal, 8);
      if (value > 0xff) throw new NotationError('WS_STONE_ESCAPE', at, `'\\0${octal}' is more than one byte (at most \\0377)`);
      bytes.push(value);
      at += 2 + octal.length;
      continue;
    }
    const escaped = String.fromCodePoint(text.codePointAt(at + 1) as number);
    const control = CONTROL_ESCAPES[escaped];
    if (control) bytes.push(control.charCodeAt(0));
    else pushText(escaped);
    at += 1 + escaped.length;
  }
  return { text, bytes: Uint8Array.from(bytes) };
}

// ---------------------------------------------------------------------------------------------
// POSIX extended regular expressions

/** glibc's RE_DUP_MAX */
const DUP_MAX = 0x7fff;

const CLASS_RANGES: Readonly<Record<string, string>> = {
  alpha: 'a-zA-Z',
  digit: '0-9',
  alnum: '0-9a-zA-Z',
  upper: 'A-Z',
  lower: 'a-z',
  space: ' \\t\\n\\r\\f\\v',
  blank: ' \\t',
  punct: '!-\\/:-@\\[-`{-~',
  print: ' -~',
  graph: '!-~',
  cntrl: '\\x00-\\x1f\\x7f',
  xdigit: '0-9A-Fa-f',
};

/**
 * Validates `source` as a POSIX extended regular expression (what glibc's regcomp with
 * REG_EXTENDED accepts) and translates it. `ignoreCase` for REG_ICASE (`re<n>=`). Throws
 * NotationError (WS_STONE_REGEX) with the offset of the problem.
 */
export function parseExtendedRegex(source: string, ignoreCase = false): ExtendedRegex {
  const translator = new EreTranslator(source);
  const javascript = translator.translate();
  const flags = ignoreCase ? 'is' : 's';
  try {
    new RegExp(javascript, flags);
  } catch (err) {
    throw new NotationError('WS_STONE_REGEX', 0, `not a usable regular expression: ${(err as Error).message}`);
  }
  return { source, javascript, flags };
}

export function toRegExp(regex: ExtendedRegex): RegExp {
  return new RegExp(regex.javascript, regex.flags);
}

class EreTranslator {
  private at = 0;
  private openGroups = 0;
  private closedGroups = 0;
  private depth = 0;

  constructor(private readonly source: string) {}

  translate(): string {
    const js = this.alternation();
    if (this.at < this.source.length) throw this.error(this.at, 'unexpected character');
    return js;
  }

  private error(offset: number, message: string): NotationError {
    return new NotationError('WS_STONE_REGEX', offset, `regular expression ${JSON.stringify(this.source)}: ${message} at offset ${offset}`);
  }

  private alternation(): string {
    const branches = [this.branch()];
    while (this.source[this.at] === '|') {
      this.at++;
      branches.push(this.branch());
    }
    return branches.join('|');
  }

  private branch(): string {
    let js = '';
    for (;;) {
      const c = this.source[this.at];
      if (c === undefined || c === '|' || (c === ')' && this.depth > 0)) return js;
      js += this.piece();
    }
  }

  private piece(): string {
    const start = this.at;
    const atom = this.atom();
    let js = atom.js;
    let quantified = 0;
    for (;;) {
      const q = this.quantifier();
      if (q === undefined) break;
      if (!atom.quantifiable) throw this.error(start, `nothing to repeat before '${this.source.slice(start, this.at)}'`);
      js = quantified === 0 ? `${js}${q}` : `(?:${js})${q}`;
      quantified++;
    }
    return js;
  }

  private quantifier(): string | undefined {
    const c = this.source[this.at];
    if (c === '*' || c === '+' || c === '?') {
      this.at++;
      return c;
    }
    if (c !== '{') return undefined;
    const start = this.at;
    const m = /^\{(\d*)(,(\d*))?\}/.exec(this.source.slice(this.at));
    if (!m) {
      if (!this.source.includes('}', this.at)) throw this.error(start, "unterminated '{' interval");
      throw this.error(start, "invalid '{' interval: write {n}, {n,}, {,m} or {n,m}");
    }
    const [, low = '', comma, high = ''] = m;
    if (low === '' && comma === undefined) throw this.error(start, "empty '{}' interval");
    const min = low === '' ? 0 : Number(low);
    const max = comma === undefined ? min : high === '' ? undefined : Number(high);
    if (min > DUP_MAX || (max !== undefined && max > DUP_MAX)) throw this.error(start, `interval bound over ${DUP_MAX}`);
    if (max !== undefined && max < min) throw this.error(start, `interval {${min},${max}} has its bounds in the wrong order`);
    this.at += m[0].length;
    return max === min ? `{${min}}` : `{${min},${max ?? ''}}`;
  }

  private atom(): { js: string; quantifiable: boolean } {
    const start = this.at;
    const c = this.source[this.at] as string;
    switch (c) {
      case '*':
      case '+':
      case '?':
      case '{':
        throw this.error(start, `'${c}' has nothing to repeat`);
      case '(':
        return { js: this.group(), quantifiable: true };
      case '[':
        return { js: this.bracket(), quantifiable: true };
      case '.':
        this.at++;
        return { js: '.', quantifiable: true };
      case '^':
      case '$':
        this.at++;
        return { js: c, quantifiable: false };
      case '\\':
        return this.escape();
      default:
        this.at++;
        return { js: escapeLiteral(c), quantifiable: true };
    }
  }

  private group(): string {
    const start = this.at;
    this.at++;
    this.openGroups++;
    const number = this.openGroups;
    this.depth++;
    const inner = this.alternation();
    this.depth--;
    if (this.source[this.at] !== ')') throw this.error(start, "unmatched '('");
    this.at++;
    this.closedGroups = Math.max(this.closedGroups, number);
    return `(${inner})`;
  }

  private escape(): { js: string; quantifiable: boolean } {
    const start = this.at;
    const e = this.source[this.at + 1];
    if (e === undefined) throw this.error(start, 'trailing backslash');
    this.at += 2;
    if (e >= '1' && e <= '9') {
      if (Number(e) > this.closedGroups) throw this.error(start, `back reference \\${e} to a group that is not complete`);
      return { js: `(?:\\${e})`, quantifiable: true };
    }
    switch (e) {
      case 'w':
      case 'W':
      case 's':
      case 'S':
        return { js: `\\${e}`, quantifiable: true };
      case 'b':
      case 'B':
        return { js: `\\${e}`, quantifiable: false };
      case '<':
        return { js: '\\b(?=\\w)', quantifiable: false };
      case '>':
        return { js: '\\b(?<=\\w)', quantifiable: false };
      case '`':
        return { js: '(?<![\\s\\S])', quantifiable: false };
      case "'":
        return { js: '(?![\\s\\S])', quantifiable: false };
      default:
        return { js: escapeLiteral(e), quantifiable: true };
    }
  }

  /** `[...]`: POSIX bracket expression → JavaScript character class. */
  private bracket(): string {
    const start = this.at;
    this.at++;
    let negate = false;
    if (this.source[this.at] === '^') {
      negate = true;
      this.at++;
    }
    const items: string[] = [];
    let first = true;
    for (;;) {
      const c = this.source[this.at];
      if (c === undefined) throw this.error(start, "unterminated '[' bracket expression");
      if (c === ']' && !first) {
        this.at++;
        break;
      }
      first = false;
      const element = this.bracketElement(start);
      if (this.source[this.at] === '-' && this.source[this.at + 1] !== ']' && this.source[this.at + 1] !== undefined) {
        const rangeAt = this.at;
        this.at++;
        const end = this.bracketElement(start);
        if (element.kind !== 'char' || end.kind !== 'char') throw this.error(rangeAt, 'a character class cannot be a range end point');
        if ((end.value.codePointAt(0) as number) < (element.value.codePointAt(0) as number)) {
          throw this.error(rangeAt, `range ${element.value}-${end.value} is backwards`);
        }
        items.push(`${escapeClassChar(element.value)}-${escapeClassChar(end.value)}`);
        continue;
      }
      items.push(element.kind === 'char' ? escapeClassChar(element.value) : element.value);
    }
    return `[${negate ? '^' : ''}${items.join('')}]`;
  }

  private bracketElement(bracketStart: number): { kind: 'char'; value: string } | { kind: 'class'; value: string } {
    const c = this.source[this.at] as string;
    const next = this.source[this.at + 1];
    if (c === '[' && (next === ':' || next === '=' || next === '.')) {
      const close = this.source.indexOf(`${next}]`, this.at + 2);
      if (close < 0) throw this.error(this.at, `unterminated '[${next}'`);
      const name = this.source.slice(this.at + 2, close);
      const at = this.at;
      this.at = close + 2;
      if (next === ':') {
        const range = CLASS_RANGES[name];
        if (range === undefined) throw this.error(at, `unknown character class [:${name}:]`);
        return { kind: 'class', value: range };
      }
      if ([...name].length !== 1) throw this.error(at, `[${next}${name}${next}] must name one character`);
      return { kind: 'char', value: name };
    }
    if (c === undefined) throw this.error(bracketStart, "unterminated '[' bracket expression");
    const ch = String.fromCodePoint(this.source.codePointAt(this.at) as number);
    this.at += ch.length;
    return { kind: 'char', value: ch };
  }
}

function escapeLiteral(c: string): string {
  return /[\\^$.|?*+()[\]{}/]/.test(c) ? `\\${c}` : c;
}

function escapeClassChar(c: string): string {
  return /[\\\]^[-]/.test(c) ? `\\${c}` : c;
}
