// The parsed form of a `warpstone stone` command line: what stone 2.4's main/doopts/doargs build
// in global variables and Stone structs, as plain readonly data for the engine that runs it.
// One StoneDefinition per `<stone>` (pair), carrying every position-sensitive option that was in
// force when stone would have created it, so the engine never re-reads the command line.
// Behaviour learnt from stone.c 2.4 (doopts, dohyphen, doargs, getdist, mkstone, mkXhosts,
// sslopts, mkBackup, mkChat, lbsopts, mkPortXhosts) and checked against Debian's binary
// (test/repeater/grammar-differential.test.ts).
// Owns: the shapes only (types and the documented defaults below). Must not: parse, resolve
// names, read files or open sockets; hold logic (that is grammar.ts, xhost.ts, escapes.ts).

// ---------------------------------------------------------------------------------------------
// Tokens and where they came from

/**
 * Where a token was written. `argument`: index into the argument list given to
 * `warpstone stone` (0 = the first argument after `stone`; an index equal to the list's length
 * means "after the last argument"). `file`: a `-C` file, 1-based line and column (columns count
 * UTF-16 units). When the file went through a preprocessor, `# LINE "FILE"` markers in its
 * output are honoured, so positions point into the file the user wrote.
 */
export type TokenPosition =
  | { readonly kind: 'argument'; readonly index: number }
  | { readonly kind: 'file'; readonly file: string; readonly line: number; readonly column: number };

export interface Token {
  readonly text: string;
  readonly position: TokenPosition;
}

/** Something stone accepts silently but that is probably not what was meant (kept, not refused). */
export interface GrammarWarning {
  readonly token: string;
  readonly position: TokenPosition;
  readonly message: string;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/**
 * A port as written. stone hands the text to getaddrinfo(), so a service name (`http`,
 * `domain`) is valid; `number` is set when the text is decimal (0..65535) and undefined for a
 * service name, which the engine looks up (tcp or udp table per the side's transport).
 */
export interface PortSpec {
  readonly text: string;
  readonly number: number | undefined;
}

/** `host:port` of a destination; `host` is a name or an IP literal, never resolved here. */
export interface InetEndpoint {
  readonly kind: 'inet';
  readonly host: string;
  readonly port: PortSpec;
}

/** A destination or listener path starting with `/` or `./` (UNIX domain socket). */
export interface UnixEndpoint {
  readonly kind: 'unix';
  readonly path: string;
}

/**
 * `host[:port][/v6]` as used by `-I`, `-b` and `-B` (stone's hostPortExt(), which has its own
 * IPv6 heuristics: `fe80::1:80` is an address without port, `fe80::1:80/v6` is host fe80::1
 * port 80). `ipv6`: the `/v6` extension, the only one these options use.
 */
export interface HostPortExt {
  readonly text: string;
  readonly host: string;
  readonly port: PortSpec | undefined;
  readonly ipv6: boolean;
}

export interface IpAddress {
  readonly family: 4 | 6;
  /** 4 or 16 bytes, network order */
  readonly bytes: readonly number[];
}

// ---------------------------------------------------------------------------------------------
// Escaped strings (escapes.ts parses and expands them)

/** What `\a \A \d \D \u \g \U \G` stand for; the engine supplies the text per connection. */
export type TemplateValue =
  | 'peer-address' // \a  client address
  | 'peer-address-port' // \A  client address:port
  | 'original-destination' // \d  SO_ORIGINAL_DST address (transparent proxy)
  | 'original-destination-port' // \D  SO_ORIGINAL_DST address:port
  | 'user-id' // \u  uid of a UNIX-socket peer
  | 'group-id' // \g  gid of a UNIX-socket peer
  | 'user-name' // \U  ident (RFC 1413) user, else UNIX-socket peer's user name
  | 'group-name'; // \G  UNIX-socket peer's group name

export type TemplatePart =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'value'; readonly value: TemplateValue }
  /** `\0`..`\9`: match group N of the peer certificate's re<n>= rules (\0: its serial) */
  | { readonly kind: 'match'; readonly group: number }
  /** `\?N then \: else \/`: `then` when group N is non-empty, else `otherwise` */
  | {
      readonly kind: 'conditional';
      readonly group: number;
      readonly then: readonly TemplatePart[];
      readonly otherwise: readonly TemplatePart[];
    };

/** A `/http` request line or `/proxy` header: the text as written and its parsed parts. */
export interface EscapedTemplate {
  readonly text: string;
  readonly parts: readonly TemplatePart[];
}

/** A `-s` send string: as written and the bytes it stands for (`\n \r \t \xHH \0ooo`). */
export interface SendString {
  readonly text: string;
  /** must not be mutated */
  readonly bytes: Uint8Array;
}

/**
 * A POSIX extended regular expression (regcomp REG_EXTENDED) as written, with an equivalent
 * JavaScript source and flags (`s`, plus `i` for the case-insensitive `re<n>=` rules). Build the
 * matcher with escapes.ts toRegExp(). Known difference: JavaScript picks the leftmost-first
 * alternative, POSIX the leftmost-longest; group contents may differ for ambiguous patterns.
 */
export interface ExtendedRegex {
  readonly source: string;
  readonly javascript: string;
  readonly flags: string;
}

// ---------------------------------------------------------------------------------------------
// xhost access lists (xhost.ts parses, resolves and decides)

/** Address family an xhost name is resolved in (stone passes it to getaddrinfo). */
export type XhostFamily = 'ipv4' | 'ipv6' | 'any';

export type XhostEntry =
  /** `!`: switches the rules that follow between allow and deny */
  | { readonly kind: 'toggle'; readonly position: TokenPosition }
  | {
      readonly kind: 'host';
      readonly text: string;
      /** name or IP literal, without the `/...` extensions */
      readonly host: string;
      /** family used to resolve `host`; sticky from one entry to the next, as in stone */
      readonly family: XhostFamily;
      /** `/N`; undefined = the whole address (32 or 128 bits, by the resolved family) */
      readonly prefixLength: number | undefined;
      /** `p` or `pN`: dump level for connections this entry allows (`p` = 1); stone uses N & 15 */
      readonly dumpMode: number;
      readonly position: TokenPosition;
    };

export type ResolvedXhostEntry =
  | { readonly kind: 'toggle' }
  | {
      readonly kind: 'host';
      readonly address: IpAddress;
      readonly prefixLength: number;
      readonly dumpMode: number;
      /** the entry this came from (for messages) */
      readonly entry: XhostEntry;
    };

// ---------------------------------------------------------------------------------------------
// Position-sensitive option sets

/**
 * `-q` (client, role 'client') or `-z` (server) options as stone applies them, each `-q`/`-z`
 * token changing the current set; a stone takes a copy of the set in force when it is defined.
 * Defaults are those of stone's sslopts_default().
 */
export interface SslOptions {
  readonly role: 'server' | 'client';
  /** `verbose` count */
  readonly verbose: number;
  /** `shutdown=`; default 'accurate' */
  readonly shutdown: 'accurate' | 'nowait' | 'unclean';
  /**
   * `verify...`: 'none' (default); client `verify` = 'peer' (check the server's certificate);
   * server `verify` = 'require' (a client certificate is required), `verify,once` =
   * 'require-once', `verify,ifany` = 'if-any' (checked when sent).
   */
  readonly verify: 'none' | 'peer' | 'require' | 'require-once' | 'if-any';
  /** `depth=`; maximum chain depth, 0..9, default 9 */
  readonly depth: number;
  /**
   * `crl_check` = 'leaf', `crl_check_all` = 'chain' (stone 2.4 matches crl_check_all as
   * crl_check, a bug fixed here; the CRLs come from CAfile/CApath)
   */
  readonly crlCheck: 'none' | 'leaf' | 'chain';
  /**
   * `re<n>=` rules by chain depth (index 0 = peer certificate subject, 1 = its issuer, ...);
   * `re-<n>=` counts from the root and lands at index 10-n. Case-insensitive. Always 10 long.
   */
  readonly peerRegexes: readonly (ExtendedRegex | undefined)[];
  /** `uniq`: refuse a peer whose certificate serial differs from the previous session's */
  readonly uniqueSerial: boolean;
  /** `tls1`, `tls1.1`, `tls1.2`: pin one version; 'any' = negotiate (default) */
  readonly protocol: 'any' | 'tls1' | 'tls1.1' | 'tls1.2';
  /** `no_tls1`, `no_tls1.1`, `no_tls1.2` */
  readonly disabledProtocols: readonly ('tls1' | 'tls1.1' | 'tls1.2')[];
  /** `bugs` (SSL_OP_ALL); recorded, Node has no equivalent switch */
  readonly bugWorkarounds: boolean;
  /** `serverpref`: the server's cipher order wins */
  readonly serverPreference: boolean;
  /** `sid_ctx=` */
  readonly sessionIdContext: string | undefined;
  /** `sni`: serve the name from the ClientHello (server) / send SNI (client) */
  readonly sni: boolean;
  /**
   * `servername=`. Also selects between stones sharing one listener (stone's SNI callback).
   * A client with none sends the destination host name, as stone does.
   */
  readonly serverName: string | undefined;
  /** key and certificate for this stone, after `%n %s %t` pattern expansion (see *Pattern) */
  readonly keyFile: string | undefined;
  readonly certFile: string | undefined;
  /** PKCS#12 file for this stone (after expansion); when set, keyFile/certFile are unused */
  readonly pfxFile: string | undefined;
  /** file holding the key's password (first line), after expansion */
  readonly passFile: string | undefined;
  /**
   * `keypat=`, `certpat=`, `certkeypat=`, `pfxpat=`, `passfilepat=`: `%n` servername, `%s`
   * listening host, `%t` destination host, `%x` = x; expanded per stone into the fields above.
   */
  readonly keyFilePattern: string | undefined;
  readonly certFilePattern: string | undefined;
  readonly pfxFilePattern: string | undefined;
  readonly passFilePattern: string | undefined;
  /** `CAfile=`, `CApath=` */
  readonly caFile: string | undefined;
  readonly caPath: string | undefined;
  /** `ignore`: log certificate verification errors but accept the peer */
  readonly ignoreVerifyErrors: boolean;
  /** `cipher=`; default: $SSL_CIPHER when the set was (re)initialised, else OpenSSL's */
  readonly cipherList: string | undefined;
  /** `lb<n>=<m>`: choose the -B group member by (match group n of the re rules) mod m */
  readonly loadBalance: { readonly group: number; readonly modulus: number } | undefined;
}

/** One `-s <send> <expect>` step of a health-check chat. */
export interface ChatStep {
  readonly send: SendString;
  readonly expect: ExtendedRegex;
}

/**
 * `-b [host=H] [port=P] [ext=E] <n> <master>:<port> <backup>:<port>`: check the master (or the
 * host=/port=/ext= override) every n seconds with the chat in force; while it fails, new
 * connections whose destination is the master go to the backup. n <= 0: the master counts as
 * failed from the start and is never checked (stone's behaviour).
 */
export interface BackupRule {
  readonly intervalSeconds: number;
  readonly master: HostPortExt;
  readonly backup: HostPortExt;
  readonly check: HostPortExt;
  /** the `-s` script in force when -b was given; [] = a plain TCP connect */
  readonly chat: readonly ChatStep[];
  readonly position: TokenPosition;
}

/**
 * `-B <host>:<port> <host>:<port>... --`: a destination equal (after resolution) to the first
 * member is spread over all members (round robin, skipping members whose -b check fails).
 */
export interface BalanceGroup {
  readonly members: readonly HostPortExt[];
  readonly position: TokenPosition;
}

export interface PortRange {
  readonly from: PortSpec;
  readonly to: PortSpec;
}

/**
 * `-x <port>[,<port>][-<port>]... <xhost>... --`: which hosts a `proxy` stone may connect to on
 * those ports. A proxy checks its permits newest first: the first whose ports contain the
 * requested port decides by its xhost list (an empty list allows any host); no permit for the
 * port = refused; no permits at all = anything goes. `-x --` drops the earlier permits.
 */
export interface ProxyPermit {
  readonly ports: readonly PortRange[];
  readonly xhosts: readonly XhostEntry[];
  readonly position: TokenPosition;
}

/** `-I <host>[:<port>][/v6]`: local address of outgoing connections (`-I ''` resets). */
export type LocalBind = HostPortExt;

/** The options stone reads when it creates a stone, copied at that point. */
export interface StoneSettings {
  /** `-T`: idle timeout of a pair in seconds; <= 0 = none. Default 600. */
  readonly idleTimeoutSeconds: number;
  /** `-A`: listen backlog. Default 50. */
  readonly backlog: number;
  /** `-r` given before this stone: SO_REUSEADDR on its (TCP) listener */
  readonly reuseAddress: boolean;
  /** `-I` in force */
  readonly localBind: LocalBind | undefined;
  /** `-z` set in force; present only when the listener has `/ssl` */
  readonly sslServer: SslOptions | undefined;
  /** `-q` set in force; present when the destination has `/ssl`, and for `proxy` stones */
  readonly sslClient: SslOptions | undefined;
  /**
   * `-b` rules the engine matches against this stone's resolved destination(s), newest first.
   * Relay stones: the rules given before the stone (stone looks them up when it creates the
   * stone). Proxy stones: all rules of the command line (looked up per request). Empty for
   * health/identd stones and with `/nobackup`.
   */
  readonly backups: readonly BackupRule[];
  /** `-B` groups given before this stone, newest first (relay stones only; else empty) */
  readonly balanceGroups: readonly BalanceGroup[];
}

// ---------------------------------------------------------------------------------------------
// Stones

/**
 * Listener extensions as stone applies them. On a UDP listener stone keeps only udp, v6 and
 * v6only/v4only and drops the rest (a warning is recorded when that happens).
 */
export interface ListenerExtensions {
  readonly transport: 'tcp' | 'udp';
  /** `/ssl`: TLS server with the -z options */
  readonly ssl: boolean;
  /** `/v6`, `/v6only`: listen on IPv6 (without a host, `/v6` also accepts IPv4) */
  readonly ipv6: boolean;
  /** `/v6only` (IPV6_V6ONLY) or `/v4only`; only meaningful with ipv6 */
  readonly ipOnly: boolean;
  /** `/http`: the peer is a stone with a `/http` destination (HTTP-wrapped stream) */
  readonly http: boolean;
  /** `/base`: the stream is base64 (MIME) encoded on this side */
  readonly base64: boolean;
  /** `/block`: blocking sockets in stone; recorded, meaningless here */
  readonly blocking: boolean;
  /** `/ident`: ask the client's identd (RFC 1413) who it is, for logs and `\U` */
  readonly ident: boolean;
}

export type ListenerAddress =
  | {
      readonly kind: 'inet';
      /** undefined = all addresses of the family */
      readonly host: string | undefined;
      /** `host%eth0:port`: SO_BINDTODEVICE */
      readonly interface: string | undefined;
      readonly port: PortSpec;
    }
  | UnixEndpoint;

export interface Listener {
  readonly address: ListenerAddress;
  readonly extensions: ListenerExtensions;
  readonly position: TokenPosition;
}

/**
 * Destination extensions as stone applies them. A UDP destination keeps only udp, v6 and
 * v6only/v4only (and `/http`, `/proxy`, `/mproxy` do not apply to it).
 */
export interface DestinationExtensions {
  readonly transport: 'tcp' | 'udp';
  /** `/ssl`: TLS client with the -q options */
  readonly ssl: boolean;
  /** `/v6`: connect over IPv6 */
  readonly ipv6: boolean;
  /** `/v4only` or `/v6only`: for `proxy`, only connect to addresses of that family */
  readonly ipOnly: boolean;
  /** `/base`: base64-encode towards the destination */
  readonly base64: boolean;
  /** `/block`: recorded, meaningless here */
  readonly blocking: boolean;
  /** `/nobackup`: ignore -b rules for this destination */
  readonly noBackup: boolean;
}

export type Destination =
  /** `host:port` or a UNIX path: relay bytes */
  | {
      readonly kind: 'relay';
      readonly endpoint: InetEndpoint | UnixEndpoint;
      readonly extensions: DestinationExtensions;
    }
  /**
   * `host:port/http <request>`: send the expanded request line and an empty line, drop the
   * reply header, then relay raw bytes
   */
  | {
      readonly kind: 'http-request';
      readonly endpoint: InetEndpoint | UnixEndpoint;
      readonly extensions: DestinationExtensions;
      readonly request: EscapedTemplate;
    }
  /**
   * `host:port/proxy <header>` (first request only) or `/mproxy` (every request,
   * `everyRequest`): insert the expanded header line after each such request line
   */
  | {
      readonly kind: 'insert-header';
      readonly endpoint: InetEndpoint | UnixEndpoint;
      readonly extensions: DestinationExtensions;
      readonly header: EscapedTemplate;
      readonly everyRequest: boolean;
    }
  /** `proxy[/v4only|/v6only]`: HTTP proxy (CONNECT and absolute-URI requests) */
  | {
      readonly kind: 'proxy';
      readonly extensions: DestinationExtensions;
      /** -x permits in force, newest first */
      readonly permits: readonly ProxyPermit[];
    }
  /** `health`: stone's health-check line protocol */
  | { readonly kind: 'health'; readonly extensions: DestinationExtensions }
  /** `identd`: answers RFC 1413 queries about this stone's own connections */
  | { readonly kind: 'identd'; readonly extensions: DestinationExtensions };

export interface StoneDefinition {
  /** 0-based, in the order stone creates them: command-line stones, then -C file stones */
  readonly index: number;
  readonly origin: 'command-line' | 'config-file';
  /** position of the destination token */
  readonly position: TokenPosition;
  readonly destination: Destination;
  readonly listener: Listener;
  /**
   * Who may connect (xhost.ts decides; empty = everybody). Names are resolved in the family
   * stone uses: IPv4 for an IPv4 listener, IPv6 for an IPv6 listener with a host or v6only,
   * either for a dual-stack `/v6` listener; `/v4`, `/v6` and prefixes over 32 change it for
   * that entry and the ones after it.
   */
  readonly xhosts: readonly XhostEntry[];
  readonly settings: StoneSettings;
}

// ---------------------------------------------------------------------------------------------
// Global options and the whole program

/** `-L`/`-a` target: `-` is stdout. */
export type OutputFile = { readonly kind: 'stdout' } | { readonly kind: 'file'; readonly path: string };

/** `-o`/`-g`: a number, or a name the engine looks up (stone: getpwnam/getgrnam). */
export type AccountRef = { readonly kind: 'id'; readonly id: number } | { readonly kind: 'name'; readonly name: string };

/** The command a `-C` file is piped through (stone's CPP; `-P ''` turns it off). */
export interface Preprocessor {
  /** `-P`; default DEFAULT_PREPROCESSOR */
  readonly command: string;
  /** `-Q`: extra options, split at white space by the loader */
  readonly options: string | undefined;
}

/**
 * Debian's stone runs -C files through `/usr/bin/cpp -traditional -DHOST=<hostname>
 * -DHOST_<hostname with . as _> -DHOME=$HOME <file>` unless `-P ''` is given. Note that
 * `cpp -traditional` also predefines `unix` and `linux` as 1.
 */
export const DEFAULT_PREPROCESSOR = '/usr/bin/cpp -traditional';

/** stone's compiled-in defaults */
export const STONE_DEFAULTS = {
  udpSessionMax: 100,
  transferBufferBytes: 1000,
  idleTimeoutSeconds: 600,
  backlog: 50,
  sslDepth: 9,
  /** `${X509_get_default_cert_dir()}/stone.pem` on Debian: key and certificate of -z */
  serverCertificate: '/usr/lib/ssl/certs/stone.pem',
} as const;

/** Options that are global in stone: the last value given anywhere wins. */
export interface GlobalOptions {
  /** `-N`: check the configuration and exit */
  readonly dryRun: boolean;
  /** `-d` count */
  readonly debugLevel: number;
  /**
   * `-p` count mod 16: dump level of connections allowed because no xhost entry matched
   * (empty list, or a list that ends in deny mode). An entry that matches uses its own `pN`.
   */
  readonly defaultDumpMode: number;
  /** `-l` count (syslog; `-ll` daemontools): recorded, logs go where -L says */
  readonly syslog: number;
  /** `-n`: numeric addresses and ports in logs */
  readonly numericAddresses: boolean;
  /** `-u`: remembered UDP sources. Default 100. */
  readonly udpSessionMax: number;
  /** `-X`: stone's transfer buffer size; default 1000 (the engine must not let it throttle) */
  readonly transferBufferBytes: number;
  /** `-L` */
  readonly logFile: OutputFile | undefined;
  /** `-a` */
  readonly accountingFile: OutputFile | undefined;
  /** `-i` */
  readonly pidFile: string | undefined;
  /** `-t`: chroot directory */
  readonly chrootDirectory: string | undefined;
  /** `-c`: core dump directory; recorded, meaningless here */
  readonly coreDumpDirectory: string | undefined;
  /** `-f`: child processes; recorded, meaningless here (one Node process serves all) */
  readonly childProcesses: number;
  /** `-D`: become a daemon */
  readonly daemon: boolean;
  /** `-o`, `-g`: switch user/group after binding */
  readonly user: AccountRef | undefined;
  readonly group: AccountRef | undefined;
  /** `-P`/`-Q`; undefined after `-P ''` */
  readonly preprocessor: Preprocessor | undefined;
  /** `-C` (at most one; stone refuses a second) */
  readonly configFile: { readonly path: string; readonly position: TokenPosition } | undefined;
}

export interface StoneProgram {
  readonly globals: GlobalOptions;
  readonly stones: readonly StoneDefinition[];
  readonly warnings: readonly GrammarWarning[];
}

/**
 * The result of parsing: a program, or `-h [topic]` (stone prints help and exits 1 at that
 * point, ignoring what follows; topic is the token after -h, whatever it is).
 */
export type StoneCommandLine =
  | { readonly kind: 'program'; readonly program: StoneProgram }
  | { readonly kind: 'help'; readonly topic: string | undefined; readonly position: TokenPosition };
