// stone 2.4's command-line grammar: `[options] <stone> [-- [options] <stone>]...` plus one `-C`
// file, parsed into a StoneProgram (types.ts) the way stone's main() reads it:
//   1. the options before the first stone on the command line (doopts: also -N, -h, -C, and
//      `--` or a `-` inside an option cluster ends them);
//   2. the -C file, if any: read (through the preprocessor, see DEFAULT_PREPROCESSOR) and
//      tokenized (tokens.ts), then ITS leading options;
//   3. the stones of the command line (only if the -C file has stones, and only if there are
//      any), then the stones of the -C file. Between stones, after `--`, the position-sensitive
//      options (-T -A -r -I -q -z -x -s -b -B and the globals) may appear again.
// Option letters cluster (`-dp`, `-Ld FILE`): each letter that takes an argument takes the next
// unused token. State carries over from the command line into the -C file stones.
// Stricter than stone on purpose (each refusal names the token, its position and what was
// expected; test/repeater/grammar-differential.test.ts lists every case where stone accepts):
// numbers must be numbers (stone's atoi() turns `-T abc` into 0), ports must be 0..65535
// (stone wraps 70000 to 4464), a destination needs a host and a port, an IP literal must match
// the `/v6` extension, bad -b/-B members are errors (stone drops or garbles them), a
// -C file must be readable, at least one stone must be given, escapes and regular expressions
// are checked where they are written, and the inputs that crash stone (`-x` or `-C` without
// argument, `-B --`, `:80` as destination) get errors. Names (hosts, services without a
// lookupService, users, groups) and files (keys, CAs) are the engine's to check.
// Accepted with a warning where stone silently ignores text: trailing garbage after an extension
// (`18080/sslx` is `/ssl`), `crl_checkX`, `ignoreX`, `shutdown=X`, `verify,X` on -z, dropped
// extensions on UDP sides, dotted netmasks 0.0.0.0 and 255.255.255.255.
// Options recorded though meaningless here (no effect in a Node process): -l, -c, -f, /block,
// `bugs`; -P/-Q only matter to the -C loader.
// Owns: the grammar and the option state machine. Must not: resolve names, open sockets, read
// files or the environment except through the GrammarEnvironment handed in.
import { errorMessage } from '../common/errors.js';
import { NotationError, parseExtendedRegex, parseSendString, parseTemplate } from './escapes.js';
import { StoneGrammarError, argumentTokens, quoteToken, tokenizeConfig } from './tokens.js';
import {
  DEFAULT_PREPROCESSOR,
  STONE_DEFAULTS,
  type AccountRef,
  type BackupRule,
  type BalanceGroup,
  type ChatStep,
  type Destination,
  type DestinationExtensions,
  type EscapedTemplate,
  type ExtendedRegex,
  type GrammarWarning,
  type HostPortExt,
  type InetEndpoint,
  type Listener,
  type ListenerAddress,
  type ListenerExtensions,
  type LocalBind,
  type OutputFile,
  type PortRange,
  type PortSpec,
  type Preprocessor,
  type ProxyPermit,
  type SslOptions,
  type StoneCommandLine,
  type StoneDefinition,
  type StoneProgram,
  type Token,
  type TokenPosition,
  type UnixEndpoint,
  type XhostFamily,
} from './types.js';
import { parseIpAddress, parseXhostList } from './xhost.js';

// ---------------------------------------------------------------------------------------------
// Public interface

export interface ConfigFileRequest {
  readonly path: string;
  /** undefined after `-P ''` (read the file as is) */
  readonly preprocessor: Preprocessor | undefined;
  readonly position: TokenPosition;
}

/** Everything the grammar needs from outside, injected so parsing stays pure. */
export interface GrammarEnvironment {
  /** for `$VAR` in -C files and SSL_CIPHER (stone's default cipher list) */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** the text of a -C file (after the preprocessor); throw when it cannot be read */
  readConfigFile(request: ConfigFileRequest): string;
  /**
   * stone stat()s the part of a UNIX socket path before its last `/`: when that is a directory
   * the whole token is the path, otherwise the last part is a list of extensions.
   */
  isDirectory(path: string): boolean;
  /** port number of a service name (/etc/services); when absent, names are left to the engine */
  lookupService?(name: string, protocol: 'tcp' | 'udp'): number | undefined;
}

/** Parses `warpstone stone` arguments (everything after `stone`). */
export function parseStoneArguments(args: readonly string[], environment: GrammarEnvironment): StoneCommandLine {
  return parseStoneTokens(argumentTokens(args), environment);
}

/**
 * Parses command-line tokens (with their positions). `end` is the position reported when a
 * token is missing at the end; default: the argument after the last.
 */
export function parseStoneTokens(tokens: readonly Token[], environment: GrammarEnvironment, end?: TokenPosition): StoneCommandLine {
  const source: Source = { tokens, end: end ?? { kind: 'argument', index: tokens.length }, origin: 'command-line' };
  return new StoneGrammar(environment).parse(source);
}

// ---------------------------------------------------------------------------------------------
// Internals

interface Source {
  readonly tokens: readonly Token[];
  readonly end: TokenPosition;
  readonly origin: 'command-line' | 'config-file';
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type SslState = Mutable<SslOptions>;

type LeadingResult = { readonly kind: 'next'; readonly index: number } | { readonly kind: 'help'; readonly topic: string | undefined; readonly position: TokenPosition };

/** An option letter's handler: returns the index of the last token it used. */
type OptionHandler = (grammar: StoneGrammar, source: Source, index: number, option: Token) => number;

const USAGE = '<host>:<port> <sport> [<xhost>...], proxy <sport>, health <sport>, identd <sport>, <host>:<port>/http <sport> <request>, or <host>:<port>/proxy <sport> <header>';

class StoneGrammar {
  // global options (last value wins)
  dryRun = false;
  debugLevel = 0;
  dumpMode = 0;
  syslog = 0;
  numericAddresses = false;
  udpSessionMax: number = STONE_DEFAULTS.udpSessionMax;
  transferBufferBytes: number = STONE_DEFAULTS.transferBufferBytes;
  logFile: OutputFile | undefined;
  accountingFile: OutputFile | undefined;
  pidFile: string | undefined;
  chrootDirectory: string | undefined;
  coreDumpDirectory: string | undefined;
  childProcesses = 0;
  daemon = false;
  user: AccountRef | undefined;
  group: AccountRef | undefined;
  preprocessorCommand: string = DEFAULT_PREPROCESSOR;
  preprocessorOptions: string | undefined;
  configFile: { path: string; position: TokenPosition } | undefined;
  configRead = false;

  // position-sensitive state
  idleTimeoutSeconds: number = STONE_DEFAULTS.idleTimeoutSeconds;
  backlog: number = STONE_DEFAULTS.backlog;
  reuseAddress = false;
  localBind: LocalBind | undefined;
  sslServer: SslState;
  sslClient: SslState;
  chat: ChatStep[] = [];
  backups: BackupRule[] = [];
  balanceGroups: BalanceGroup[] = [];
  permits: ProxyPermit[] = [];

  readonly warnings: GrammarWarning[] = [];
  readonly stones: StoneDefinition[] = [];

  constructor(readonly environment: GrammarEnvironment) {
    this.sslServer = defaultSsl('server', environment.env);
    this.sslClient = defaultSsl('client', environment.env);
  }

  warn(token: Token, message: string): void {
    this.warnings.push({ token: token.text, position: token.position, message });
  }

  parse(commandLine: Source): StoneCommandLine {
    const leading = this.leadingOptions(commandLine);
    if (leading.kind === 'help') return leading;
    let configStones: { source: Source; start: number } | undefined;
    if (this.configFile) {
      const config = this.readConfig(this.configFile.path, this.configFile.position);
      const configLeading = this.leadingOptions(config);
      if (configLeading.kind === 'help') return configLeading;
      if (configLeading.index < config.tokens.length) configStones = { source: config, start: configLeading.index };
    }
    let lastSource = commandLine;
    if (configStones) {
      if (leading.index < commandLine.tokens.length) this.stoneList(commandLine, leading.index);
      this.stoneList(configStones.source, configStones.start);
      lastSource = configStones.source;
    } else {
      if (leading.index >= commandLine.tokens.length) {
        throw new StoneGrammarError(commandLine.end, undefined, `expected a <stone>: ${USAGE}`);
      }
      this.stoneList(commandLine, leading.index);
    }
    if (this.stones.length === 0) {
      throw new StoneGrammarError(lastSource.end, undefined, `no <stone> given (only options): expected ${USAGE}`);
    }
    return { kind: 'program', program: this.program() };
  }

  private program(): StoneProgram {
    const stones = this.stones.map((stone) => this.finalStone(stone));
    return {
      globals: {
        dryRun: this.dryRun,
        debugLevel: this.debugLevel,
        defaultDumpMode: this.dumpMode,
        syslog: this.syslog,
        numericAddresses: this.numericAddresses,
        udpSessionMax: this.udpSessionMax,
        transferBufferBytes: this.transferBufferBytes,
        logFile: this.logFile,
        accountingFile: this.accountingFile,
        pidFile: this.pidFile,
        chrootDirectory: this.chrootDirectory,
        coreDumpDirectory: this.coreDumpDirectory,
        childProcesses: this.childProcesses,
        daemon: this.daemon,
        user: this.user,
        group: this.group,
        preprocessor: this.preprocessor(),
        configFile: this.configFile,
      },
      stones,
      warnings: this.warnings,
    };
  }

  /** Proxy stones look their -b rules up per request, so they see every rule. */
  private finalStone(stone: StoneDefinition): StoneDefinition {
    if (stone.destination.kind !== 'proxy' || stone.destination.extensions.noBackup) return stone;
    return { ...stone, settings: { ...stone.settings, backups: [...this.backups] } };
  }

  preprocessor(): Preprocessor | undefined {
    return this.preprocessorCommand === '' ? undefined : { command: this.preprocessorCommand, options: this.preprocessorOptions };
  }

  private readConfig(path: string, position: TokenPosition): Source {
    let text: string;
    const preprocessor = this.preprocessor();
    try {
      text = this.environment.readConfigFile({ path, preprocessor, position });
    } catch (err) {
      throw new StoneGrammarError(position, path, `cannot read the -C file: ${errorMessage(err)}`, { cause: err });
    }
    this.configRead = true;
    const tokens = tokenizeConfig(text, path, { env: this.environment.env, lineMarkers: preprocessor !== undefined });
    return { tokens, end: endOfText(text, path), origin: 'config-file' };
  }

  // ------------------------------------------------------------------------------- options

  /** stone's doopts(): options before the first stone. */
  private leadingOptions(source: Source): LeadingResult {
    let index = 0;
    while (index < source.tokens.length) {
      const token = source.tokens[index] as Token;
      if (!token.text.startsWith('-')) break;
      const result = this.optionCluster(source, index, true);
      if (result.kind === 'help') return result;
      index = result.index;
      if (result.endOfOptions) break;
    }
    return { kind: 'next', index };
  }

  /**
   * One `-abc` token. Returns the index of the next unused token. `leading`: before the first
   * stone, where -N, -h, -C and `--` are also understood.
   */
  private optionCluster(source: Source, start: number, leading: boolean): { kind: 'next'; index: number; endOfOptions: boolean } | Extract<LeadingResult, { kind: 'help' }> {
    const token = source.tokens[start] as Token;
    if (token.text === '-') this.warn(token, "a lone '-' is ignored (stone does the same)");
    let index = start;
    const letters = [...token.text.slice(1)];
    for (const [at, letter] of letters.entries()) {
      const handler = Object.hasOwn(OPTIONS, letter) ? OPTIONS[letter] : undefined;
      if (handler) {
        index = handler(this, source, index, token);
        continue;
      }
      if (leading && letter === '-') {
        const ignored = letters.slice(at + 1).join('');
        if (ignored !== '') this.warn(token, `'-' ends the options; stone ignores '${ignored}' after it`);
        return { kind: 'next', index: index + 1, endOfOptions: true };
      }
      if (leading && letter === 'h') {
        return { kind: 'help', topic: source.tokens[index + 1]?.text, position: token.position };
      }
      if (leading && letter === 'N') {
        this.dryRun = true;
        continue;
      }
      if (leading && letter === 'C') {
        index = this.configOption(source, index, token);
        continue;
      }
      throw unknownOption(token, letter, leading);
    }
    return { kind: 'next', index: index + 1, endOfOptions: false };
  }

  private configOption(source: Source, index: number, option: Token): number {
    if (this.configFile || this.configRead || source.origin === 'config-file') {
      throw new StoneGrammarError(option.position, option.text, '-C may be given only once, on the command line (stone 2.4 refuses a second -C)');
    }
    const file = this.argument(source, index, option, 'C', 'a configuration file');
    if (file.text === '') throw new StoneGrammarError(file.position, file.text, 'expected a configuration file name after -C');
    this.configFile = { path: file.text, position: file.position };
    return index + 1;
  }

  /** The token after `index`, which option `letter` needs. */
  argument(source: Source, index: number, option: Token, letter: string, what: string): Token {
    const next = source.tokens[index + 1];
    if (next === undefined) throw new StoneGrammarError(option.position, option.text, `expected ${what} after -${letter}`);
    return next;
  }

  // ------------------------------------------------------------------------------- stones

  /** stone's doargs(): stones separated by `--`, with options between them. */
  private stoneList(source: Source, start: number): void {
    let index = start;
    while (index < source.tokens.length) {
      const token = source.tokens[index] as Token;
      if (token.text.startsWith('-')) {
        const result = this.optionCluster(source, index, false);
        if (result.kind === 'help') throw new StoneGrammarError(token.position, token.text, '-h is only understood before the first stone');
        index = result.index;
        continue;
      }
      index = this.stone(source, index);
    }
  }

  /** One `<stone>`: returns the index after its closing `--` (or the end). */
  private stone(source: Source, start: number): number {
    const destinationToken = source.tokens[start] as Token;
    const destinationSpec = parseDistSpec(destinationToken, this.environment, 'destination', this);
    if (destinationSpec.form === 'port-only') {
      throw new StoneGrammarError(
        destinationToken.position,
        destinationToken.text,
        `expected the destination first: <host>:<port>, proxy, health, identd or a UNIX socket path (a <stone> is ${USAGE})`,
      );
    }
    const listenerToken = source.tokens[start + 1];
    if (listenerToken === undefined) {
      throw new StoneGrammarError(destinationToken.position, destinationToken.text, 'expected <sport>, the port to listen on, after the destination');
    }
    let close = start + 2;
    while (close < source.tokens.length && (source.tokens[close] as Token).text !== '--') close++;
    const extra = source.tokens.slice(start + 2, close);
    const listener = this.listener(listenerToken);
    const built = this.destination(destinationToken, destinationSpec, listenerToken, extra);
    const xhostTokens = built.usedExtra ? extra.slice(1) : extra;
    const xhosts = parseXhostList(xhostTokens, xhostFamily(listener));
    this.warnings.push(...xhosts.warnings);
    this.stones.push({
      index: this.stones.length,
      origin: source.origin,
      position: destinationToken.position,
      destination: built.destination,
      listener,
      xhosts: xhosts.entries,
      settings: this.settingsFor(listener, built.destination, destinationToken),
    });
    return close < source.tokens.length ? close + 1 : close;
  }

  private settingsFor(listener: Listener, destination: Destination, destinationToken: Token): StoneDefinition['settings'] {
    const listenHost = listener.address.kind === 'unix' ? listener.address.path : listener.address.host;
    const destinationHost = destinationHostText(destination, destinationToken);
    const relayLike = destination.kind === 'relay' || destination.kind === 'http-request' || destination.kind === 'insert-header';
    const inetRelay = relayLike && 'endpoint' in destination && destination.endpoint.kind === 'inet';
    return {
      idleTimeoutSeconds: this.idleTimeoutSeconds,
      backlog: this.backlog,
      reuseAddress: this.reuseAddress,
      localBind: this.localBind,
      sslServer: listener.extensions.ssl ? snapshotSsl(this.sslServer, listenHost, destinationHost) : undefined,
      sslClient:
        destination.extensions.ssl || destination.kind === 'proxy' ? snapshotSsl(this.sslClient, listenHost, destinationHost) : undefined,
      backups: inetRelay && !destination.extensions.noBackup ? [...this.backups] : [],
      balanceGroups: inetRelay ? [...this.balanceGroups] : [],
    };
  }

  private listener(token: Token): Listener {
    if (token.text.startsWith('-')) {
      throw new StoneGrammarError(token.position, token.text, 'expected <sport> (e.g. 8080, 127.0.0.1:8080, 8080/ssl), got an option; options go before a stone or after --');
    }
    const spec = parseDistSpec(token, this.environment, 'listener', this);
    const extensions = listenerExtensions(token, spec, this);
    return { address: listenerAddress(token, spec, extensions, this.environment), extensions, position: token.position };
  }

  private destination(token: Token, spec: DistSpec, listenerToken: Token, extra: readonly Token[]): { destination: Destination; usedExtra: boolean } {
    const flags = spec.flags;
    if (flags.udp) return { destination: this.udpDestination(token, spec), usedExtra: false };
    const extensions: DestinationExtensions = {
      transport: 'tcp',
      ssl: flags.ssl,
      ipv6: flags.v6,
      ipOnly: flags.ipOnly,
      base64: flags.base,
      blocking: flags.block,
      noBackup: flags.nobackup,
    };
    if (flags.ident) this.warn(token, '/ident has no effect on a destination (it belongs on the listener)');
    const command = flags.command;
    if (command === 'proxy') return { destination: { kind: 'proxy', extensions, permits: [...this.permits] }, usedExtra: false };
    if (flags.http || command === 'ihead' || command === 'iheads') {
      const what = flags.http ? 'the HTTP request line (e.g. "POST http://outer:8023 HTTP/1.0")' : 'the header line to insert (e.g. "Proxy-Authorization: Basic ...")';
      const text = extra[0];
      if (text === undefined) throw new StoneGrammarError(listenerToken.position, listenerToken.text, `expected ${what} after <sport>`);
      const template = parseTemplateToken(text);
      const endpoint = this.endpoint(token, spec, extensions);
      if (flags.http) return { destination: { kind: 'http-request', endpoint, extensions, request: template }, usedExtra: true };
      return { destination: { kind: 'insert-header', endpoint, extensions, header: template, everyRequest: command === 'iheads' }, usedExtra: true };
    }
    if (command === 'health') return { destination: { kind: 'health', extensions }, usedExtra: false };
    if (command === 'identd') return { destination: { kind: 'identd', extensions }, usedExtra: false };
    return { destination: { kind: 'relay', endpoint: this.endpoint(token, spec, extensions), extensions }, usedExtra: false };
  }

  private udpDestination(token: Token, spec: DistSpec): Destination {
    const flags = spec.flags;
    if (spec.unix) throw new StoneGrammarError(token.position, token.text, 'a UNIX socket destination cannot be /udp in stone 2.4');
    if (spec.form !== 'host-port') throw new StoneGrammarError(token.position, token.text, `'${spec.host}' cannot be /udp: expected <host>:<port>/udp`);
    const dropped = droppedOnUdp(flags, true);
    if (dropped.length > 0) this.warn(token, `stone ignores ${dropped.join(', ')} on a UDP destination`);
    const extensions: DestinationExtensions = {
      transport: 'udp',
      ssl: false,
      ipv6: flags.v6,
      ipOnly: flags.ipOnly,
      base64: false,
      blocking: false,
      noBackup: false,
    };
    return { kind: 'relay', endpoint: inetEndpoint(token, spec, extensions, this.environment), extensions };
  }

  private endpoint(token: Token, spec: DistSpec, extensions: DestinationExtensions): InetEndpoint | UnixEndpoint {
    if (spec.unix) return { kind: 'unix', path: spec.host };
    if (spec.form !== 'host-port') {
      throw new StoneGrammarError(token.position, token.text, `expected <host>:<port> before the extensions, e.g. localhost:80/http`);
    }
    return inetEndpoint(token, spec, extensions, this.environment);
  }
}

// ---------------------------------------------------------------------------------------------
// Option letters (stone's dohyphen)

function unknownOption(token: Token, letter: string, leading: boolean): StoneGrammarError {
  if (!leading && (letter === 'N' || letter === 'h' || letter === 'C')) {
    return new StoneGrammarError(token.position, token.text, `-${letter} is only understood before the first stone`);
  }
  if (!leading && letter === '-') {
    return new StoneGrammarError(token.position, token.text, "expected a stone or options after '--', got another '--'");
  }
  return new StoneGrammarError(
    token.position,
    token.text,
    `unknown option -${letter}: expected one of -C -N -d -p -n -u -f -l -L -a -i -X -T -A -r -x -s -b -B -I -o -g -t -D -c -q -z -P -Q (see stone -h opt)`,
  );
}

function integer(token: Token, what: string, min?: number): number {
  if (!/^[+-]?\d+$/.test(token.text)) throw new StoneGrammarError(token.position, token.text, `expected ${what} (an integer)`);
  const value = Number(token.text);
  if (!Number.isSafeInteger(value) || Math.abs(value) > 0x7fffffff) throw new StoneGrammarError(token.position, token.text, `${what} is out of range`);
  if (min !== undefined && value < min) throw new StoneGrammarError(token.position, token.text, `expected ${what} of at least ${min}`);
  return value;
}

function nonEmpty(token: Token, what: string): string {
  if (token.text === '') throw new StoneGrammarError(token.position, token.text, `expected ${what}, got an empty argument`);
  return token.text;
}

function outputFile(token: Token, what: string): OutputFile {
  const path = nonEmpty(token, what);
  return path === '-' ? { kind: 'stdout' } : { kind: 'file', path };
}

function account(token: Token, what: string): AccountRef {
  const text = nonEmpty(token, what);
  return /^\d+$/.test(text) ? { kind: 'id', id: integer(token, what, 0) } : { kind: 'name', name: text };
}

/** An option that takes one argument: `apply` stores it. */
function withArgument(letter: string, what: string, apply: (grammar: StoneGrammar, value: Token, source: Source) => void): OptionHandler {
  return (grammar, source, index, option) => {
    const value = grammar.argument(source, index, option, letter, what);
    apply(grammar, value, source);
    return index + 1;
  };
}

function flag(apply: (grammar: StoneGrammar) => void): OptionHandler {
  return (grammar, _source, index) => {
    apply(grammar);
    return index;
  };
}

const OPTIONS: Readonly<Record<string, OptionHandler>> = {
  d: flag((g) => (g.debugLevel += 1)),
  p: flag((g) => (g.dumpMode = (g.dumpMode + 1) & 0xf)),
  l: flag((g) => (g.syslog += 1)),
  n: flag((g) => (g.numericAddresses = true)),
  D: flag((g) => (g.daemon = true)),
  r: flag((g) => (g.reuseAddress = true)),
  L: withArgument('L', 'a log file (or - for stdout)', (g, v) => (g.logFile = outputFile(v, 'a log file'))),
  a: withArgument('a', 'an accounting file (or - for stdout)', (g, v) => (g.accountingFile = outputFile(v, 'an accounting file'))),
  i: withArgument('i', 'a pid file', (g, v) => (g.pidFile = nonEmpty(v, 'a pid file'))),
  t: withArgument('t', 'a directory to chroot to', (g, v) => (g.chrootDirectory = nonEmpty(v, 'a directory'))),
  c: withArgument('c', 'a core dump directory', (g, v) => (g.coreDumpDirectory = nonEmpty(v, 'a directory'))),
  u: withArgument('u', 'the number of UDP sessions', (g, v) => (g.udpSessionMax = integer(v, 'the number of UDP sessions', 0))),
  X: withArgument('X', 'the transfer buffer size in bytes', (g, v) => (g.transferBufferBytes = integer(v, 'the transfer buffer size', 1))),
  T: withArgument('T', 'the idle timeout in seconds', (g, v) => (g.idleTimeoutSeconds = integer(v, 'the idle timeout in seconds'))),
  A: withArgument('A', 'the listen backlog length', (g, v) => (g.backlog = integer(v, 'the listen backlog length', 0))),
  f: withArgument('f', 'the number of child processes', (g, v) => (g.childProcesses = integer(v, 'the number of child processes', 0))),
  o: withArgument('o', 'a user name or uid', (g, v) => (g.user = account(v, 'a user name or uid'))),
  g: withArgument('g', 'a group name or gid', (g, v) => (g.group = account(v, 'a group name or gid'))),
  P: withArgument('P', "a preprocessor command (or '' for none)", (g, v, source) => {
    if (source.origin === 'config-file' || g.configRead) g.warn(v, '-P has no effect here: the -C file has already been read');
    g.preprocessorCommand = v.text;
  }),
  Q: withArgument('Q', 'options for the preprocessor', (g, v, source) => {
    if (source.origin === 'config-file' || g.configRead) g.warn(v, '-Q has no effect here: the -C file has already been read');
    g.preprocessorOptions = v.text;
  }),
  I: withArgument('I', "the local address of outgoing connections, <host>[:<port>] (or '' to reset)", (g, v) => {
    g.localBind = v.text === '' ? undefined : localBind(v, g.environment);
  }),
  q: withArgument('q', 'an SSL client option (see stone -h ssl)', (g, v) => applySslOption(g.sslClient, v, g)),
  z: withArgument('z', 'an SSL server option (see stone -h ssl)', (g, v) => applySslOption(g.sslServer, v, g)),
  x: proxyPermitOption,
  s: chatOption,
  b: backupOption,
  B: balanceOption,
};

/** `-x <port>[,<port>][-<port>]... <xhost>... --` or `-x --` */
function proxyPermitOption(grammar: StoneGrammar, source: Source, index: number, option: Token): number {
  const portsToken = grammar.argument(source, index, option, 'x', "a port list (e.g. 80,443,8000-8080) or '--'");
  if (portsToken.text === '--') {
    grammar.permits = [];
    return index + 1;
  }
  const ports = portList(portsToken, grammar.environment);
  let close = index + 2;
  while (close < source.tokens.length && (source.tokens[close] as Token).text !== '--') close++;
  const xhosts = parseXhostList(source.tokens.slice(index + 2, close), 'any');
  grammar.warnings.push(...xhosts.warnings);
  grammar.permits = [{ ports, xhosts: xhosts.entries, position: option.position }, ...grammar.permits];
  return close;
}

function portList(token: Token, environment: GrammarEnvironment): PortRange[] {
  const ranges: PortRange[] = [];
  for (const item of token.text.split(',')) {
    const ends = item.split('-');
    if (ends.length > 2 || ends.some((e) => e === '')) {
      throw new StoneGrammarError(token.position, token.text, `expected a port list such as 80,443,8000-8080 (ports or service names; one '-' per range), got '${item}'`);
    }
    const from = portSpec(token, ends[0] as string, 'tcp', environment, 'port in the -x list');
    const to = ends.length === 2 ? portSpec(token, ends[1] as string, 'tcp', environment, 'port in the -x list') : from;
    if (from.number !== undefined && to.number !== undefined && to.number < from.number) {
      throw new StoneGrammarError(token.position, token.text, `port range ${item} is backwards`);
    }
    ranges.push({ from, to });
  }
  return ranges;
}

/** `-s <send> <expect>... --`: the health-check chat used by the -b options after it. */
function chatOption(grammar: StoneGrammar, source: Source, index: number, option: Token): number {
  const steps: ChatStep[] = [];
  let at = index + 1;
  for (;;) {
    const send = source.tokens[at];
    if (send === undefined) {
      throw new StoneGrammarError(source.end, undefined, `the -s chat at ${quoteToken(option.text)} is not closed: expected <send> <expect> pairs and then '--'`);
    }
    if (send.text.startsWith('--')) break;
    const expect = source.tokens[at + 1];
    if (expect === undefined) {
      throw new StoneGrammarError(send.position, send.text, "expected the <expect> regular expression after this <send> string, and '--' after the last pair");
    }
    steps.push({ send: notation(send, () => parseSendString(send.text)), expect: regexToken(expect, false) });
    at += 2;
  }
  grammar.chat = steps;
  return at;
}

/** `-b [host=H] [port=P] [ext=E] <n> <master>:<port> <backup>:<port>` */
function backupOption(grammar: StoneGrammar, source: Source, index: number, option: Token): number {
  const overrides: { host?: Token; port?: Token; ext?: Token } = {};
  let at = index + 1;
  for (;;) {
    const token = source.tokens[at];
    const key = token === undefined ? undefined : /^(host|port|ext)=/.exec(token.text)?.[1];
    if (token === undefined || key === undefined) break;
    overrides[key as 'host' | 'port' | 'ext'] = token;
    at++;
  }
  const [intervalToken, masterToken, backupToken] = [source.tokens[at], source.tokens[at + 1], source.tokens[at + 2]];
  if (intervalToken === undefined || masterToken === undefined || backupToken === undefined) {
    throw new StoneGrammarError(option.position, option.text, 'expected -b [host=<host>] [port=<port>] [ext=<ext>] <seconds> <master>:<port> <backup>:<port>');
  }
  const intervalSeconds = integer(intervalToken, 'the check interval in seconds');
  const master = hostPortExtOption(masterToken, 'the master <host>:<port>', grammar, true);
  const backup = hostPortExtOption(backupToken, 'the backup <host>:<port>', grammar, true);
  const check = backupCheck(overrides, master, grammar.environment);
  if (intervalSeconds <= 0) grammar.warn(intervalToken, `interval ${intervalSeconds}: the master is treated as failed from the start and never checked (stone's behaviour)`);
  grammar.backups = [{ intervalSeconds, master, backup, check, chat: grammar.chat, position: option.position }, ...grammar.backups];
  return at + 2;
}

/** `host=`, `port=`, `ext=` before the interval replace the master's parts for the check. */
function backupCheck(overrides: { host?: Token; port?: Token; ext?: Token }, master: HostPortExt, environment: GrammarEnvironment): HostPortExt {
  if (!overrides.host && !overrides.port && !overrides.ext) return master;
  const host = overrides.host ? checkedHost(overrides.host, overrides.host.text.slice(5), 'a host after host=') : master.host;
  const port = overrides.port ? portSpec(overrides.port, overrides.port.text.slice(5), 'tcp', environment, 'port after port=') : master.port;
  const ipv6 = overrides.ext ? overrides.ext.text.slice(4) === 'v6' : master.ipv6;
  return { text: `${host}:${port?.text ?? ''}${ipv6 ? '/v6' : ''}`, host, port, ipv6 };
}

/** stone's LB_MAX */
const BALANCE_MAX = 100;

/** `-B <host>:<port> <host>:<port>... --` */
function balanceOption(grammar: StoneGrammar, source: Source, index: number, option: Token): number {
  const members: HostPortExt[] = [];
  let at = index + 1;
  for (; at < source.tokens.length; at++) {
    const token = source.tokens[at] as Token;
    if (token.text.startsWith('--')) break;
    if (members.length >= BALANCE_MAX) throw new StoneGrammarError(token.position, token.text, `too many -B members (stone allows ${BALANCE_MAX})`);
    members.push(hostPortExtOption(token, 'a <host>:<port> member of the -B group', grammar, true));
  }
  if (members.length === 0) {
    throw new StoneGrammarError(option.position, option.text, "expected -B <host>:<port> <host>:<port>... -- (at least one member; stone 2.4 crashes on an empty group)");
  }
  grammar.balanceGroups = [{ members, position: option.position }, ...grammar.balanceGroups];
  return at;
}

function localBind(token: Token, environment: GrammarEnvironment): LocalBind {
  const split = splitHostPortExt(token.text);
  if (split === undefined) return { text: token.text, host: checkedHost(token, token.text, 'the -I host'), port: undefined, ipv6: false };
  return {
    text: token.text,
    host: checkedHost(token, split.host, 'the -I host'),
    port: split.port === '' ? undefined : portSpec(token, split.port, 'tcp', environment, '-I port'),
    ipv6: split.ext === 'v6',
  };
}

function hostPortExtOption(token: Token, what: string, grammar: StoneGrammar, portRequired: boolean): HostPortExt {
  const split = splitHostPortExt(token.text);
  if (split === undefined || (portRequired && split.port === '')) {
    const hint = token.text.includes('::') ? ' (an IPv6 address with a port is written like fe80::1:80/v6)' : '';
    throw new StoneGrammarError(token.position, token.text, `expected ${what}${hint}`);
  }
  if (split.ext !== undefined && split.ext !== 'v6') grammar.warn(token, `stone only uses /v6 here; '/${split.ext}' is ignored`);
  return {
    text: token.text,
    host: checkedHost(token, split.host, what),
    port: split.port === '' ? undefined : portSpec(token, split.port, 'tcp', grammar.environment, what),
    ipv6: split.ext === 'v6',
  };
}

/**
 * stone's hostPortExt(): `host:port[/ext]`, with its heuristics for IPv6 (a run of hex groups
 * without `/` is an address without port unless it has exactly 1 or 8 colons). undefined when
 * stone calls the format illegal (no port, or `::` at the start).
 */
export function splitHostPortExt(text: string): { host: string; port: string; ext: string | undefined } | undefined {
  let portAt = -1;
  let extAt = 0;
  let ipv6 = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (c === ':') {
      portAt = i + 1;
      if ((ipv6 & 0xff) === 0) {
        if (ipv6 & 0xf000) return undefined;
        ipv6 = 0x1000;
        portAt = -1;
      } else if (ipv6 > 0 && (ipv6 & 0xff) <= 4) {
        ipv6 = (ipv6 & 0xff00) + 0x100;
      }
    } else if (ipv6 >= 0) {
      ipv6 = /^[0-9A-Fa-f]$/.test(c) ? ipv6 + 1 : -1;
    }
    if (c === '/') {
      extAt = i + 1;
      ipv6 = -1;
    }
  }
  if (ipv6 >= 0 && (ipv6 & 0xff00) !== 0x100 && (ipv6 & 0xff00) !== 0x800) return { host: text, port: '', ext: undefined };
  if (portAt < 1 || (extAt > 0 && portAt > extAt)) return undefined;
  return {
    host: text.slice(0, portAt - 1),
    port: extAt > 0 ? text.slice(portAt, extAt - 1) : text.slice(portAt),
    ext: extAt > 0 ? text.slice(extAt) : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// SSL options (stone's sslopts)

function defaultSsl(role: 'server' | 'client', env: Readonly<Record<string, string | undefined>>): SslState {
  const certificate = role === 'server' ? STONE_DEFAULTS.serverCertificate : undefined;
  return {
    role,
    verbose: 0,
    shutdown: 'accurate',
    verify: 'none',
    depth: STONE_DEFAULTS.sslDepth,
    crlCheck: 'none',
    peerRegexes: new Array<ExtendedRegex | undefined>(10).fill(undefined),
    uniqueSerial: false,
    protocol: 'any',
    disabledProtocols: [],
    bugWorkarounds: false,
    serverPreference: false,
    sessionIdContext: undefined,
    sni: false,
    serverName: undefined,
    keyFile: certificate,
    certFile: certificate,
    pfxFile: undefined,
    passFile: undefined,
    keyFilePattern: undefined,
    certFilePattern: undefined,
    pfxFilePattern: undefined,
    passFilePattern: undefined,
    caFile: undefined,
    caPath: undefined,
    ignoreVerifyErrors: false,
    cipherList: env.SSL_CIPHER,
    loadBalance: undefined,
  };
}

const SSL_HELP =
  'expected one of default verbose verify verify,once verify,ifany verify,none crl_check crl_check_all uniq re<n>= re-<n>= depth= tls1 tls1.1 tls1.2 no_tls1 no_tls1.1 no_tls1.2 sni servername= bugs serverpref shutdown= sid_ctx= passfile= passfilepat= key= keypat= cert= certpat= certkey= certkeypat= CAfile= CApath= pfx= pfxpat= cipher= lb<n>=<m> (see stone -h ssl)';

type FileField = 'keyFile' | 'certFile' | 'pfxFile' | 'passFile' | 'keyFilePattern' | 'certFilePattern' | 'pfxFilePattern' | 'passFilePattern' | 'caFile' | 'caPath';

/** `name=` options that set files, with what else they clear (as stone's sslopts does). */
const SSL_FILE_OPTIONS: readonly { prefix: string; set: readonly FileField[]; clear: readonly FileField[] }[] = [
  { prefix: 'key=', set: ['keyFile'], clear: ['keyFilePattern', 'pfxFile'] },
  { prefix: 'keypat=', set: ['keyFilePattern'], clear: ['pfxFile'] },
  { prefix: 'cert=', set: ['certFile'], clear: ['certFilePattern', 'pfxFile'] },
  { prefix: 'certpat=', set: ['certFilePattern'], clear: ['pfxFile'] },
  { prefix: 'certkey=', set: ['keyFile', 'certFile'], clear: ['keyFilePattern', 'certFilePattern', 'pfxFile'] },
  { prefix: 'certkeypat=', set: ['keyFilePattern', 'certFilePattern'], clear: ['pfxFile'] },
  { prefix: 'CAfile=', set: ['caFile'], clear: [] },
  { prefix: 'CApath=', set: ['caPath'], clear: [] },
  { prefix: 'pfx=', set: ['pfxFile'], clear: ['pfxFilePattern', 'keyFile', 'certFile', 'keyFilePattern', 'certFilePattern'] },
  { prefix: 'pfxpat=', set: ['pfxFilePattern'], clear: ['keyFile', 'certFile', 'keyFilePattern', 'certFilePattern'] },
  { prefix: 'passfile=', set: ['passFile'], clear: ['passFilePattern'] },
  { prefix: 'passfilepat=', set: ['passFilePattern'], clear: ['passFile'] },
];

const SSL_WORDS: Readonly<Record<string, (state: SslState) => void>> = {
  bugs: (s) => (s.bugWorkarounds = true),
  tls1: (s) => (s.protocol = 'tls1'),
  'tls1.1': (s) => (s.protocol = 'tls1.1'),
  'tls1.2': (s) => (s.protocol = 'tls1.2'),
  no_tls1: (s) => addDisabled(s, 'tls1'),
  'no_tls1.1': (s) => addDisabled(s, 'tls1.1'),
  'no_tls1.2': (s) => addDisabled(s, 'tls1.2'),
  serverpref: (s) => (s.serverPreference = true),
  uniq: (s) => (s.uniqueSerial = true),
  sni: (s) => (s.sni = true),
};

function addDisabled(state: SslState, version: 'tls1' | 'tls1.1' | 'tls1.2'): void {
  if (!state.disabledProtocols.includes(version)) state.disabledProtocols = [...state.disabledProtocols, version];
}

/** Applies one -q/-z token to the current option set, in stone's order of checks. */
function applySslOption(state: SslState, token: Token, grammar: StoneGrammar): void {
  const text = token.text;
  const env = grammar.environment.env;
  if (text === 'default') {
    Object.assign(state, defaultSsl(state.role, env));
    return;
  }
  if (text === 'verbose') {
    state.verbose++;
    return;
  }
  if (text.startsWith('shutdown=')) {
    const mode = text.slice(9);
    if (mode === 'nowait' || mode === 'accurate' || mode === 'unclean') state.shutdown = mode;
    else grammar.warn(token, `stone ignores shutdown=${mode}: expected accurate, nowait or unclean`);
    return;
  }
  if (text.startsWith('verify') && (text.length === 6 || text[6] === ',')) {
    applyVerify(state, token, grammar);
    return;
  }
  if (text.startsWith('crl_check')) {
    const chain = text === 'crl_check_all';
    if (!chain && text !== 'crl_check') grammar.warn(token, `stone reads '${text}' as crl_check`);
    state.crlCheck = chain || state.crlCheck === 'chain' ? 'chain' : 'leaf';
    return;
  }
  const rule = /^re(-?)(\d)=/.exec(text);
  if (rule) {
    const n = Number(rule[2]);
    if (rule[1] === '-' && n === 0) throw new StoneGrammarError(token.position, text, 're-<n>= counts from the root CA: n is 1..9');
    const regexes = [...state.peerRegexes];
    regexes[rule[1] === '-' ? 10 - n : n] = regexToken(token, true, rule[0].length);
    state.peerRegexes = regexes;
    return;
  }
  if (text.startsWith('depth=')) {
    const depth = integer({ text: text.slice(6), position: token.position }, 'a depth after depth=');
    state.depth = Math.min(Math.max(depth, 0), 9);
    if (state.depth !== depth) grammar.warn(token, `depth is limited to 0..9; using ${state.depth}`);
    return;
  }
  // own keys only: an option word such as "valueOf" or "constructor" is not an SSL word
  const word = Object.hasOwn(SSL_WORDS, text) ? SSL_WORDS[text] : undefined;
  if (word) {
    word(state);
    return;
  }
  if (text.startsWith('sid_ctx=')) {
    state.sessionIdContext = text.slice(8);
    return;
  }
  if (text.startsWith('servername=')) {
    state.serverName = text.slice(11);
    return;
  }
  const fileOption = SSL_FILE_OPTIONS.find((o) => text.startsWith(o.prefix));
  if (fileOption) {
    const value = text.slice(fileOption.prefix.length);
    if (value === '') throw new StoneGrammarError(token.position, text, `expected a file name after ${fileOption.prefix}`);
    for (const field of fileOption.clear) state[field] = undefined;
    for (const field of fileOption.set) state[field] = value;
    return;
  }
  if (text.startsWith('ignore')) {
    if (text !== 'ignore') grammar.warn(token, `stone reads '${text}' as ignore`);
    state.ignoreVerifyErrors = true;
    return;
  }
  if (text.startsWith('cipher=')) {
    state.cipherList = text.slice(7);
    return;
  }
  const balance = /^lb(\d)=/.exec(text);
  if (balance) {
    const modulus = integer({ text: text.slice(4), position: token.position }, 'a modulus after lb<n>=', 0);
    state.loadBalance = modulus === 0 ? undefined : { group: Number(balance[1]), modulus };
    return;
  }
  throw new StoneGrammarError(token.position, text, `unknown SSL option for -${state.role === 'server' ? 'z' : 'q'}: ${SSL_HELP}`);
}

function applyVerify(state: SslState, token: Token, grammar: StoneGrammar): void {
  const suffix = token.text.slice(6);
  if (suffix === ',none') {
    state.verify = 'none';
    return;
  }
  if (state.role === 'client') {
    if (suffix !== '') {
      throw new StoneGrammarError(token.position, token.text, "-q (SSL client) accepts 'verify' and 'verify,none'; once and ifany are -z (server) options");
    }
    state.verify = 'peer';
    return;
  }
  if (suffix === ',ifany') state.verify = 'if-any';
  else if (suffix === ',once') state.verify = 'require-once';
  else {
    state.verify = 'require';
    if (suffix !== '') grammar.warn(token, `stone ignores '${suffix.slice(1)}' and reads this as verify (expected verify,once, verify,ifany or verify,none)`);
  }
}

/**
 * The option set a stone takes: a copy, with the `*pat=` patterns expanded for this stone
 * (stone's exPatOpts, which also writes the expansion back into the current set).
 */
function snapshotSsl(state: SslState, listenHost: string | undefined, destinationHost: string): SslOptions {
  const expand = (pattern: string): string => expandFilePattern(pattern, state.serverName, listenHost ?? '', destinationHost);
  if (state.pfxFilePattern !== undefined) {
    state.pfxFile = expand(state.pfxFilePattern);
  } else {
    if (state.certFilePattern !== undefined) state.certFile = expand(state.certFilePattern);
    if (state.keyFilePattern !== undefined) state.keyFile = expand(state.keyFilePattern);
  }
  if (state.passFilePattern !== undefined) state.passFile = expand(state.passFilePattern);
  return { ...state, peerRegexes: [...state.peerRegexes], disabledProtocols: [...state.disabledProtocols] };
}

/** `%n` server name, `%s` listening host, `%t` destination host, `%x` = x (stone's exPatFile). */
export function expandFilePattern(pattern: string, serverName: string | undefined, source: string, target: string): string {
  return pattern.replace(/%([\s\S]?)/g, (_all, c: string) => {
    if (c === 'n') return serverName ?? '';
    if (c === 's') return source;
    if (c === 't') return target;
    return c;
  });
}

// ---------------------------------------------------------------------------------------------
// <host>:<port>/<ext> of stones (stone's getdist)

interface DistFlags {
  udp: boolean;
  http: boolean;
  base: boolean;
  ident: boolean;
  nobackup: boolean;
  ssl: boolean;
  v6: boolean;
  ipOnly: boolean;
  block: boolean;
  command: 'ihead' | 'iheads' | 'proxy' | 'health' | 'identd' | undefined;
}

interface DistSpec {
  /** 'host-port': `host:port`; 'host-only': a UNIX path or proxy/health/identd; 'port-only' */
  readonly form: 'host-port' | 'host-only' | 'port-only';
  /** host (host-port), path or name (host-only), port text (port-only) */
  readonly host: string;
  readonly port: string | undefined;
  readonly unix: boolean;
  readonly flags: DistFlags;
}

/** Extension keywords, in the order stone tries them (the first that is a prefix wins). */
const EXTENSIONS: readonly { word: string; apply: (flags: DistFlags, rest: string) => number }[] = [
  { word: 'tcp', apply: (f) => ((f.udp = false), 3) },
  { word: 'udp', apply: (f) => ((f.udp = true), 3) },
  { word: 'http', apply: (f) => ((f.http = true), 4) },
  { word: 'base', apply: (f) => ((f.base = true), 4) },
  { word: 'ident', apply: (f) => ((f.ident = true), 5) },
  { word: 'proxy', apply: (f) => ((f.command = 'ihead'), 5) },
  { word: 'mproxy', apply: (f) => ((f.command = 'iheads'), 6) },
  { word: 'nobackup', apply: (f) => ((f.nobackup = true), 8) },
  { word: 'ssl', apply: (f) => ((f.ssl = true), 3) },
  {
    word: 'v6',
    apply: (f, rest) => {
      f.v6 = true;
      if (!rest.startsWith('v6only')) return 2;
      f.ipOnly = true;
      return 6;
    },
  },
  { word: 'v4only', apply: (f) => ((f.ipOnly = true), 6) },
  { word: 'block', apply: (f) => ((f.block = true), 5) },
];

function extensionHelp(side: 'destination' | 'listener'): string {
  return side === 'destination'
    ? 'expected tcp, udp, ssl, v6, v4only, v6only, base, block, nobackup, http, proxy or mproxy, separated by commas'
    : 'expected tcp, udp, ssl, v6, v6only, http, base, block or ident, separated by commas';
}

function parseDistSpec(token: Token, environment: GrammarEnvironment, side: 'destination' | 'listener', grammar: StoneGrammar): DistSpec {
  const text = token.text;
  const flags: DistFlags = { udp: false, http: false, base: false, ident: false, nobackup: false, ssl: false, v6: false, ipOnly: false, block: false, command: undefined };
  if (text.startsWith('/') || text.startsWith('.')) return unixDistSpec(token, environment, side, flags, grammar);
  let portAt = -1;
  let extAt = -1;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ':') portAt = i + 1;
    else if (text[i] === '/') extAt = i + 1;
  }
  if (extAt >= 0 && portAt > extAt) {
    throw new StoneGrammarError(token.position, text, `':' after the '/' of the extensions: expected <host>:<port>/<ext>[,<ext>]...`);
  }
  const main = extAt >= 0 ? text.slice(0, extAt - 1) : text;
  if (main.includes('/')) {
    const firstSlash = text.indexOf('/');
    throw new StoneGrammarError(
      token.position,
      text,
      `extensions are separated by commas, not '/': write ${text.slice(0, firstSlash)}/${text.slice(firstSlash + 1).split('/').join(',')}`,
    );
  }
  if (extAt >= 0) parseDistExtensions(token, text.slice(extAt), main, flags, side, grammar);
  if (portAt >= 0) return { form: 'host-port', host: main.slice(0, portAt - 1), port: main.slice(portAt), unix: false, flags };
  if (main === 'proxy' || main === 'health' || main === 'identd') {
    flags.command = main;
    return { form: 'host-only', host: main, port: undefined, unix: false, flags };
  }
  return { form: 'port-only', host: main, port: undefined, unix: false, flags };
}

/** A path starting with `/` or `./`: the part after the last `/` is extensions unless what comes before it is a directory. */
function unixDistSpec(token: Token, environment: GrammarEnvironment, side: 'destination' | 'listener', flags: DistFlags, grammar: StoneGrammar): DistSpec {
  const text = token.text;
  const lastSlash = text.lastIndexOf('/');
  let path = text;
  if (lastSlash >= 1) {
    const directory = text.slice(0, lastSlash);
    if (!environment.isDirectory(directory)) {
      path = directory;
      try {
        parseDistExtensions(token, text.slice(lastSlash + 1), directory, flags, side, grammar);
      } catch (err) {
        if (!(err instanceof StoneGrammarError)) throw err;
        throw new StoneGrammarError(
          token.position,
          text,
          `'${directory}' is not an existing directory, so stone reads '${text.slice(lastSlash + 1)}' as extensions: ${err.expected}`,
        );
      }
    }
  }
  return { form: 'host-only', host: path, port: undefined, unix: true, flags };
}

function parseDistExtensions(token: Token, ext: string, main: string, flags: DistFlags, side: 'destination' | 'listener', grammar: StoneGrammar): void {
  let at = 0;
  for (;;) {
    const rest = ext.slice(at);
    const known = EXTENSIONS.find((e) => rest.startsWith(e.word));
    if (!known) {
      const what = rest === '' ? `an empty extension in '${main}/${ext}'` : `unknown extension '${rest.split(',')[0] ?? ''}' in '${main}/${ext}'`;
      throw new StoneGrammarError(token.position, token.text, `${what}: ${extensionHelp(side)}`);
    }
    at += known.apply(flags, rest);
    if (at === ext.length) return;
    if (ext[at] !== ',') {
      grammar.warn(token, `stone 2.4 reads '${ext.slice(0, at)}' and silently ignores '${ext.slice(at)}' after it`);
      return;
    }
    at++;
  }
}

function droppedOnUdp(flags: DistFlags, destination: boolean): string[] {
  const dropped: string[] = [];
  if (flags.ssl) dropped.push('/ssl');
  if (flags.http) dropped.push('/http');
  if (flags.base) dropped.push('/base');
  if (flags.block) dropped.push('/block');
  if (destination && flags.nobackup) dropped.push('/nobackup');
  if (destination && (flags.command === 'ihead' || flags.command === 'iheads')) dropped.push(`/${flags.command === 'ihead' ? 'proxy' : 'mproxy'}`);
  if (!destination && flags.ident) dropped.push('/ident');
  return dropped;
}

function listenerExtensions(token: Token, spec: DistSpec, grammar: StoneGrammar): ListenerExtensions {
  const flags = spec.flags;
  const ignored: string[] = [];
  if (flags.nobackup) ignored.push('/nobackup');
  if (flags.command === 'ihead' || flags.command === 'iheads') ignored.push(`/${flags.command === 'ihead' ? 'proxy' : 'mproxy'}`);
  if (ignored.length > 0) grammar.warn(token, `${ignored.join(', ')} has no effect on a listener`);
  if (flags.udp) {
    if (spec.unix) throw new StoneGrammarError(token.position, token.text, 'a UNIX socket listener cannot be /udp in stone 2.4');
    const dropped = droppedOnUdp(flags, false);
    if (dropped.length > 0) grammar.warn(token, `stone ignores ${dropped.join(', ')} on a UDP listener`);
    return { transport: 'udp', ssl: false, ipv6: flags.v6, ipOnly: flags.ipOnly, http: false, base64: false, blocking: false, ident: false };
  }
  return {
    transport: 'tcp',
    ssl: flags.ssl,
    ipv6: flags.v6,
    ipOnly: flags.ipOnly,
    http: flags.http,
    base64: flags.base,
    blocking: flags.block,
    ident: flags.ident,
  };
}

function listenerAddress(token: Token, spec: DistSpec, extensions: ListenerExtensions, environment: GrammarEnvironment): ListenerAddress {
  if (spec.unix) {
    if (spec.host.includes('%')) {
      throw new StoneGrammarError(token.position, token.text, "'%' in a UNIX socket path: stone 2.4 reads what follows as a network interface");
    }
    return { kind: 'unix', path: spec.host };
  }
  if (spec.form === 'host-only') {
    throw new StoneGrammarError(token.position, token.text, `cannot listen on '${spec.host}': expected <sport> = [<host>[%<interface>]:]<port>[/<ext>,...] or a UNIX socket path`);
  }
  const protocol = extensions.transport;
  if (spec.form === 'port-only') {
    return { kind: 'inet', host: undefined, interface: undefined, port: portSpec(token, spec.host, protocol, environment, 'listening port') };
  }
  checkNotBareIpv6(token, spec);
  const percent = spec.host.indexOf('%');
  const hostText = percent < 0 ? spec.host : spec.host.slice(0, percent);
  const interfaceName = percent < 0 ? undefined : spec.host.slice(percent + 1);
  if (spec.host === '') {
    throw new StoneGrammarError(token.position, token.text, `stone 2.4 cannot listen on ':${spec.port ?? ''}' (it loses the port); write ${spec.port ?? '<port>'} for all addresses, or <host>:${spec.port ?? '<port>'}`);
  }
  if (interfaceName === '') throw new StoneGrammarError(token.position, token.text, "expected a network interface name after '%'");
  const host = hostText === '' ? undefined : checkedHost(token, hostText, 'the listening host', extensions.ipv6);
  return { kind: 'inet', host, interface: interfaceName, port: portSpec(token, spec.port ?? '', protocol, environment, 'listening port') };
}

/** `::1` as a destination splits into host `:` and port `1`: say how stone writes IPv6. */
function checkNotBareIpv6(token: Token, spec: DistSpec): void {
  const whole = `${spec.host}:${spec.port ?? ''}`;
  if (parseIpAddress(whole)?.family === 6 && parseIpAddress(spec.host) === undefined) {
    throw new StoneGrammarError(token.position, token.text, `an IPv6 address needs a port: stone writes ${whole}:<port>/v6`);
  }
}

function inetEndpoint(token: Token, spec: DistSpec, extensions: DestinationExtensions, environment: GrammarEnvironment): InetEndpoint {
  checkNotBareIpv6(token, spec);
  if (spec.host === '') {
    throw new StoneGrammarError(token.position, token.text, 'expected <host>:<port>: the destination host is missing (stone 2.4 crashes on this)');
  }
  const host = checkedHost(token, spec.host, 'the destination host', extensions.ipv6);
  return { kind: 'inet', host, port: portSpec(token, spec.port ?? '', extensions.transport, environment, 'destination port') };
}

/**
 * A host name or IP literal. With `ipv6` given, a literal must be of that family (stone
 * resolves the side's host as IPv6 with /v6 and as IPv4 without).
 */
function checkedHost(token: Token, host: string, what: string, ipv6?: boolean): string {
  if (host === '') throw new StoneGrammarError(token.position, token.text, `expected ${what}, it is empty`);
  const literal = parseIpAddress(host);
  if (literal) {
    if (ipv6 === false && literal.family === 6) {
      throw new StoneGrammarError(token.position, token.text, `${host} is an IPv6 address: add the /v6 extension (e.g. ${host}:<port>/v6)`);
    }
    if (ipv6 === true && literal.family === 4) {
      throw new StoneGrammarError(token.position, token.text, `${host} is an IPv4 address but /v6 asks for IPv6`);
    }
    return host;
  }
  if (/^\[.*\]$/.test(host)) {
    throw new StoneGrammarError(token.position, token.text, `stone writes IPv6 addresses without brackets: ${host.slice(1, -1)}:<port>/v6`);
  }
  if (!/^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)$/.test(host)) {
    throw new StoneGrammarError(token.position, token.text, `expected ${what} (a host name or IP address), got '${host}'`);
  }
  return host;
}

/** A port: decimal 0..65535, or a service name (looked up if the environment can). */
function portSpec(token: Token, text: string, protocol: 'tcp' | 'udp', environment: GrammarEnvironment, what: string): PortSpec {
  if (text === '') throw new StoneGrammarError(token.position, token.text, `expected a ${what}, it is empty`);
  if (/^\d+$/.test(text)) {
    const number = Number(text);
    if (number > 65535) throw new StoneGrammarError(token.position, token.text, `${what} ${text} is out of range (0-65535)`);
    return { text, number };
  }
  if (!/^[A-Za-z][A-Za-z0-9_+.-]*$/.test(text)) {
    throw new StoneGrammarError(token.position, token.text, `expected a ${what} (a number or a service name such as http), got '${text}'`);
  }
  if (!environment.lookupService) return { text, number: undefined };
  const number = environment.lookupService(text, protocol);
  if (number === undefined) throw new StoneGrammarError(token.position, token.text, `unknown ${protocol} service '${text}' (${what})`);
  return { text, number };
}

function xhostFamily(listener: Listener): XhostFamily {
  const address = listener.address;
  if (!listener.extensions.ipv6 || address.kind === 'unix') return 'ipv4';
  return address.host === undefined && !listener.extensions.ipOnly ? 'any' : 'ipv6';
}

function destinationHostText(destination: Destination, token: Token): string {
  if ('endpoint' in destination) return destination.endpoint.kind === 'unix' ? destination.endpoint.path : destination.endpoint.host;
  return token.text.split('/')[0] ?? token.text;
}

// ---------------------------------------------------------------------------------------------
// Token-level notations

/** Runs a notation parser on (part of) a token; `skip` = characters of the token before that part. */
function notation<T>(token: Token, parse: () => T, skip = 0): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof NotationError) {
      throw new StoneGrammarError(token.position, token.text, `${err.message} (at character ${skip + err.offset + 1})`, { cause: err });
    }
    throw err;
  }
}

function parseTemplateToken(token: Token): EscapedTemplate {
  return notation(token, () => parseTemplate(token.text));
}

function regexToken(token: Token, ignoreCase: boolean, skip = 0): ExtendedRegex {
  return notation(token, () => parseExtendedRegex(token.text.slice(skip), ignoreCase), skip);
}

/** Position just after the last character of a -C file. */
function endOfText(text: string, file: string): TokenPosition {
  const lines = text.split('\n');
  const last = lines[lines.length - 1] ?? '';
  return { kind: 'file', file, line: lines.length, column: last.length + 1 };
}
