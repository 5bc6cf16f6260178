// Tokens of a `warpstone stone` command line and of its `-C` file, with positions, and the error
// every part of the stone front end reports a bad token with (StoneGrammarError,
// WS_STONE_GRAMMAR).
// The -C tokenizer follows stone 2.4's gettoken()/getvar()/skipcomment() (checked against
// Debian's binary, which prints its tokens at debug level 10):
//   - white space separates tokens, except that ONE white space character directly before `:`
//     or `=` is dropped and the two sides join (`host :80` is `host:80`; `a  :b` is two tokens);
//   - `#` outside quotes starts a comment to the end of the line; the line breaks after it are
//     skipped too, so a comment in the middle of a token joins the token to the next line;
//   - '...' is literal; "..." keeps white space and `#` but expands `$VAR`/`${VAR}` and
//     backslashes; quotes can open and close anywhere in a token (`a'b c'd` is `ab cd`);
//   - `$NAME` / `${NAME}` (letters, digits, `_`) expands from the environment outside single
//     quotes; unset or empty names give nothing (a lone `$` vanishes); `${A-b}` is $A then `-b}`;
//   - a backslash outside single quotes takes the next character, `\n \r \t` giving control
//     characters; the result is then treated like any other character, so `\"` opens or closes
//     a quote, `\ ` and unquoted `\n` end the token and `\#` starts a comment (stone 2.4 does so);
//   - a token that is still empty at the end of the file is dropped (an empty token elsewhere,
//     e.g. from an unset `$VAR`, is kept).
// Where stone is silently lossy this tokenizer refuses, with the position: an unterminated quote
// (stone ends the token at end of file), a NUL character, a token over 2047 bytes (stone splits
// it into two tokens).
// Owns: token positions, the -C token grammar, StoneGrammarError. Must not: know what tokens
// mean (grammar.ts), read files or the environment itself (both are handed in).
import { WarpstoneError } from '../common/errors.js';
import type { Token, TokenPosition } from './types.js';

/** stone's token buffer holds BUFMAX-1 = 2047 bytes */
export const MAX_TOKEN_BYTES = 2047;

/** "argument 3" (counting from 1 after `stone`) or "file:line:column". */
export function formatPosition(position: TokenPosition): string {
  if (position.kind === 'argument') return `argument ${position.index + 1}`;
  return `${position.file}:${position.line}:${position.column}`;
}

/**
 * A token of a stone command line or -C file is wrong. Names the token, where it is, and what
 * was expected there. `position` is always set (past the end of the input when a token is
 * missing).
 */
export class StoneGrammarError extends WarpstoneError {
  readonly token: string | undefined;
  readonly position: TokenPosition;
  readonly expected: string;
  constructor(position: TokenPosition, token: string | undefined, expected: string, options?: { cause?: unknown }) {
    super('WS_STONE_GRAMMAR', `${formatPosition(position)}: ${token === undefined ? '' : `${quoteToken(token)}: `}${expected}`, options);
    this.token = token;
    this.position = position;
    this.expected = expected;
  }
}

/** A token shown in a message: in single quotes, control characters escaped. */
export function quoteToken(text: string): string {
  const shown = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  return `'${shown.replace(/[\u0000-\u001f\u007f\\']/g, (c) => escapeForMessage(c))}'`;
}

function escapeForMessage(c: string): string {
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  if (c === '\\' || c === "'") return `\\${c}`;
  return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** The command-line arguments as tokens (position = index). */
export function argumentTokens(args: readonly string[]): Token[] {
  return args.map((text, index) => ({ text, position: { kind: 'argument', index } }));
}

export interface TokenizeOptions {
  /** $VAR values */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Honour `# LINE "FILE"` markers at the start of a line (preprocessor output), so positions
   * point into the original file. They are comments to stone either way.
   */
  readonly lineMarkers?: boolean;
}

/** Splits the text of a -C file into tokens the way stone 2.4 does (see the header). */
export function tokenizeConfig(text: string, file: string, options: TokenizeOptions): Token[] {
  return new ConfigTokenizer(text, file, options).all();
}

const EOF = -1;

/** What cpp writes to say where the next line came from: `# 12 "stone.cfg" 2` */
export const LINE_MARKER = /^#\s*(\d+)\s+"((?:[^"\\]|\\.)*)"/;

function unterminatedQuote(quote: string, position: TokenPosition, value: string): StoneGrammarError {
  return new StoneGrammarError(position, value, `unterminated ${quote}...${quote} quote: expected a closing ${quote} before the end of the file`);
}

function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}

function isNameChar(c: string): boolean {
  return /^[A-Za-z0-9_]$/.test(c);
}

class ConfigTokenizer {
  private offset = 0;
  /** physical line of `offset` (1-based) and where it starts */
  private physicalLine = 1;
  private lineStart = 0;
  /** logical line = physical line + lineDelta (changed by line markers) */
  private lineDelta = 0;
  private file: string;

  constructor(
    private readonly text: string,
    file: string,
    private readonly options: TokenizeOptions,
  ) {
    this.file = file;
  }

  all(): Token[] {
    const tokens: Token[] = [];
    for (;;) {
      const token = this.nextToken();
      if (token === undefined) return tokens;
      tokens.push(token);
    }
  }

  private position(): TokenPosition {
    return { kind: 'file', file: this.file, line: this.physicalLine + this.lineDelta, column: this.offset - this.lineStart + 1 };
  }

  private peek(): string | typeof EOF {
    return this.offset < this.text.length ? (this.text[this.offset] as string) : EOF;
  }

  private get(): string | typeof EOF {
    const c = this.peek();
    if (c === EOF) return EOF;
    if (c === '\0') throw new StoneGrammarError(this.position(), undefined, 'a NUL character in the -C file; stone would cut the token there');
    this.offset++;
    if (c === '\n') {
      this.physicalLine++;
      this.lineStart = this.offset;
    }
    return c;
  }

  /** After a `#`: skip to the end of the line, then every line break that follows. */
  private skipComment(hashOffset: number): void {
    const atLineStart = hashOffset === 0 || this.text[hashOffset - 1] === '\n';
    const hashLine = this.physicalLine;
    let c = this.get();
    while (c !== EOF && c !== '\r' && c !== '\n') c = this.get();
    const commentText = this.text.slice(hashOffset, this.offset);
    while (this.peek() === '\r' || this.peek() === '\n') this.get();
    if (atLineStart && this.options.lineMarkers) this.applyLineMarker(commentText, hashLine + 1);
  }

  private applyLineMarker(comment: string, physicalLineAfter: number): void {
    const marker = LINE_MARKER.exec(comment);
    if (!marker) return;
    this.lineDelta = Number(marker[1]) - physicalLineAfter;
    this.file = (marker[2] as string).replace(/\\(.)/g, '$1');
  }

  private skipSpaceAndComments(): boolean {
    for (;;) {
      const c = this.peek();
      if (c === EOF) return false;
      if (c === '#') {
        const at = this.offset;
        this.get();
        this.skipComment(at);
        continue;
      }
      if (!isSpace(c)) return true;
      this.get();
    }
  }

  private nextToken(): Token | undefined {
    if (!this.skipSpaceAndComments()) return undefined;
    const position = this.position();
    let value = '';
    let quote: string | undefined;
    let quotePosition: TokenPosition = position;
    for (;;) {
      this.checkLength(value, position);
      let c = this.get();
      if (c === EOF) {
        if (quote !== undefined) throw unterminatedQuote(quote, quotePosition, value);
        if (value === '') return undefined;
        break;
      }
      if (quote !== "'") {
        if (c === '$') {
          value += this.variable();
          continue;
        }
        if (c === '\\') {
          const escaped = this.get();
          if (escaped === EOF) {
            if (quote !== undefined) throw unterminatedQuote(quote, quotePosition, value);
            break;
          }
          c = escaped === 'n' ? '\n' : escaped === 'r' ? '\r' : escaped === 't' ? '\t' : escaped;
        }
      }
      if (quote !== undefined) {
        if (c === quote) {
          quote = undefined;
          continue;
        }
      } else if (c === "'" || c === '"') {
        quote = c;
        quotePosition = this.positionBefore();
        continue;
      } else if (isSpace(c)) {
        const next = this.peek();
        if (next !== ':' && next !== '=') break;
        c = this.get() as string;
      } else if (c === '#') {
        this.skipComment(this.offset - 1);
        continue;
      }
      value += c;
    }
    this.checkLength(value, position);
    return { text: value, position };
  }

  private positionBefore(): TokenPosition {
    return { kind: 'file', file: this.file, line: this.physicalLine + this.lineDelta, column: this.offset - this.lineStart };
  }

  private checkLength(value: string, position: TokenPosition): void {
    if (value.length > MAX_TOKEN_BYTES / 4 && Buffer.byteLength(value) > MAX_TOKEN_BYTES) {
      throw new StoneGrammarError(position, value, `token longer than ${MAX_TOKEN_BYTES} bytes; stone would split it in two`);
    }
  }

  /** After `$`: `NAME` or `{NAME}`; the value from the environment ('' when unset). */
  private variable(): string {
    if (this.peek() === EOF) return '';
    let braced = false;
    if (this.peek() === '{') {
      this.get();
      braced = true;
    }
    let name = '';
    for (;;) {
      const c = this.peek();
      if (c === EOF) break;
      if (braced && c === '}') {
        this.get();
        break;
      }
      if (!isNameChar(c)) break;
      name += this.get();
    }
    if (name === '') return '';
    return this.options.env[name] ?? '';
  }
}
