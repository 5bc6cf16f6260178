// The database relay's configuration file (`warpstone dbrelay --config dbrelay.yaml`): YAML read
// with line numbers, checked by zod, then resolved into one typed object per listener (addresses
// parsed, durations in ms, certificate and identity files read and checked, accounts looked up).
// Every problem is a ConfigError naming the file, the line and the field, so `dbrelay check`
// and the relay itself fail the same way before anything is bound. The optional `bans:` section
// becomes the guard's BanSettings (same defaults and bounds as the relay's --ban-* flags) and the
// warpstone home whose store keeps the bans.
// Owns: the file format and its meaning. Must not: open sockets, query databases or decide policy.
import { existsSync, lstatSync, readFileSync, realpathSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { isAbsolute, resolve as resolvePath, dirname, join as joinPath } from 'node:path';
import { parseDocument, LineCounter, isMap, isSeq, isScalar, type Document } from 'yaml';
import { z } from 'zod';
import { parseHostPort, type HostPort } from '../common/hostport.js';
import { ConfigError, errorMessage } from '../common/errors.js';
import { homePaths, type HomePaths } from '../common/home.js';
import { lookupAccount, type Account } from '../common/privileges.js';
import { nameProblem } from '../pki/names.js';
import { readIdentityFile, splitPem, subjectField, type Identity } from '../pki/pem.js';
import { IDENT_PORT, IDENT_TIMEOUT_MS } from '../identity/ident.js';
import { defaultBanSettings, type BanSettings } from '../guard/ban-settings.js';
import { parseDuration as parseBanDuration } from '../guard/duration.js';
import { CidrList, parseCidr, type Cidr } from '../guard/prefix.js';
import type { DbProtocol } from './types.js';

export const DBRELAY_DEFAULTS = {
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 2 * 60 * 60_000,
  connectTimeoutMs: 10_000,
  knownUsersEveryMs: 60_000,
  maxConnections: 512,
  unixMode: 0o660,
  /** IDENT answers are believed only from these client addresses unless ident_from says otherwise */
  identFrom: ['127.0.0.0/8', '::1'],
} as const;

export type ListenerKind = 'tcp' | 'tls' | 'unix' | 'per-user' | 'tunnel';

export type Upstream =
  | { protocol: DbProtocol; transport: 'tcp'; address: HostPort; url: string }
  | { protocol: DbProtocol; transport: 'unix'; path: string; url: string };

export type KnownUsersSource =
  /** nothing configured: every DB user counts as existing, so only mapped users get through */
  | { kind: 'none' }
  | { kind: 'list'; users: string[] }
  | {
      kind: 'query';
      protocol: DbProtocol;
      address: HostPort;
      user: string;
      password: string | undefined;
      database: string | undefined;
      everyMs: number;
      /** the URL without its password, for logs and `check` */
      display: string;
    };

export type ClientTls = { mode: 'refuse' } | { mode: 'terminate'; cert: string; key: string; certFile: string };

export interface ListenerPolicy {
  strict: boolean;
  /** identity → DB users it may use (as written; the policy decides what an absent entry means) */
  mapping: Map<string, string[]>;
  knownUsers: KnownUsersSource;
  clientTls: ClientTls;
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  maxConnections: number;
  /** JSON-lines audit file, if any */
  audit: string | undefined;
}

interface ListenerCommon {
  name: string;
  /** line of the listener in the file, for messages */
  line: number | undefined;
  upstream: Upstream;
  policy: ListenerPolicy;
}

/** How client certificates are verified (a `tls` listener, or `tcp` with `identity: certificate`). */
export interface ClientCertificateConfig {
  /** PEM text of the CA certificate(s), read at load time */
  ca: string;
  caFile: string;
  /** the certificate's OU must be this (warpstone CA: 'user'), or any when undefined */
  requiredOu: string | undefined;
  /**
   * The warpstone home's store, when the home's CA is used and the store is there: each
   * certificate must be recorded in it and not revoked (`warpstone revoke` takes effect here too).
   */
  revocationStore: string | undefined;
}

interface TcpListenerBase extends ListenerCommon {
  kind: 'tcp';
  listen: HostPort;
}

/** `kind: tcp` (identity: ident, the default): the client host's identd says who it is. */
export interface TcpIdentListenerConfig extends TcpListenerBase {
  identity: 'ident';
  ident: { port: number; timeoutMs: number };
  /**
   * Client addresses whose identd is believed (`ident_from`; default loopback only). Anyone can
   * run an identd that names any user, so a client from elsewhere gets no identity.
   */
  identFrom: CidrList;
}

/**
 * `kind: tcp` with `identity: certificate`: the database protocol starts in clear, the client
 * asks for TLS inside it (MySQL SSLRequest, PostgreSQL SSLRequest or direct TLS), the relay
 * terminates that TLS (policy.clientTls is always 'terminate'), asks for the client's
 * certificate, and its CN is the identity.
 */
export interface TcpCertificateListenerConfig extends TcpListenerBase {
  identity: 'certificate';
  clientCert: ClientCertificateConfig;
}

export type TcpListenerConfig = TcpIdentListenerConfig | TcpCertificateListenerConfig;

export interface TlsListenerConfig extends ListenerCommon {
  kind: 'tls';
  listen: HostPort;
  /** PEM texts, read at load time so nothing is read after privileges are dropped */
  key: string;
  cert: string;
  ca: string;
  /** where they came from, for `check` */
  files: { cert: string; key: string; ca: string };
  /** the certificate's OU must be this (warpstone CA: 'user'), or any when undefined */
  requiredOu: string | undefined;
  /**
   * The warpstone home's store, when the home's CA is used and the store is there: each
   * certificate must be recorded in it and not revoked (`warpstone revoke` takes effect here too).
   */
  revocationStore: string | undefined;
}

export interface UnixListenerConfig extends ListenerCommon {
  kind: 'unix';
  path: string;
  mode: number;
  /** the socket's group (so mode 0660 lets that group in); undefined = the relay's own */
  group: { name: string; gid: number } | undefined;
}

export interface PerUserListenerConfig extends ListenerCommon {
  kind: 'per-user';
  sockets: Array<{ user: string; uid: number; gid: number; path: string }>;
}

export interface TunnelListenerConfig extends ListenerCommon {
  kind: 'tunnel';
  identity: Identity;
  identityFile: string;
  relay: HostPort;
  tunnel: string;
}

export type ListenerConfig = TcpListenerConfig | TlsListenerConfig | UnixListenerConfig | PerUserListenerConfig | TunnelListenerConfig;

/** The `bans:` section: automatic bans of TCP and TLS listeners' sources, kept in a warpstone store. */
export interface DbBanConfig {
  /** the warpstone home whose store keeps the bans (shared with its relay and `warpstone ban`) */
  home: string;
  store: string;
  settings: BanSettings;
}

export interface DbRelayConfig {
  file: string;
  /** drop to this account after binding, when started as root */
  user: Account | undefined;
  listeners: ListenerConfig[];
  /** undefined: no bans (no `bans:` section) */
  bans: DbBanConfig | undefined;
}

// ---------------------------------------------------------------------------------------------
// Schemas. Keys are snake_case as written in the file; every object is strict so a typo is an
// error on its own line instead of a silently ignored setting.

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;
const Duration = z.union([z.number().nonnegative(), z.string().regex(DURATION, 'expected a duration like 500ms, 10s, 5m or 2h')]);
const DbUser = z
  .string()
  .min(1, 'a DB user name cannot be empty')
  .max(256)
  .regex(/^[^\x00-\x1f\x7f]+$/, 'a DB user name cannot contain control characters');

const PolicyFields = {
  strict: z.boolean().optional(),
  mapping: z.record(z.string().min(1), z.union([DbUser, z.array(DbUser).min(1)])).optional(),
  known_users: z.array(DbUser).optional(),
  known_users_query: z
    .object({ url: z.string().min(1), every: Duration.optional(), password_file: z.string().min(1).optional() })
    .strict()
    .optional(),
  client_tls: z.enum(['terminate', 'refuse']).optional(),
  client_tls_cert: z.string().min(1).optional(),
  client_tls_key: z.string().min(1).optional(),
  timeouts: z.object({ handshake: Duration.optional(), idle: Duration.optional(), connect: Duration.optional() }).strict().optional(),
  max_connections: z.number().int().min(1).max(100_000).optional(),
  allow_unix_upstream: z.boolean().optional(),
  audit: z.string().min(1).optional(),
};

/** A ban duration: the relay's syntax (30s, 10m, 1h, 1d, 1w, 1h30m) or a number of seconds. */
const BanDuration = z.union([z.number().min(1, 'at least 1 (second)').max(100 * 365 * 86_400, 'at most 100 years'), z.string().min(1)]);
const BansSchema = z
  .object({
    home: z.string().min(1).optional(),
    maxretry: z.number().int().min(1).max(10_000).optional(),
    findtime: BanDuration.optional(),
    bantime: BanDuration.optional(),
    increment: z.number().min(1).max(100).optional(),
    maxtime: BanDuration.optional(),
    ignore: z.array(z.string().min(1)).optional(),
    prefix_v4: z.number().int().min(8).max(32).optional(),
    prefix_v6: z.number().int().min(16).max(128).optional(),
  })
  .strict();

const TopSchema = z
  .object({
    user: z.string().min(1).optional(),
    home: z.string().min(1).optional(),
    bans: BansSchema.optional(),
    ...PolicyFields,
    listeners: z.array(z.unknown()).min(1, 'at least one listener is needed'),
  })
  .strict();

const KINDS = ['tcp', 'tls', 'unix', 'per-user', 'tunnel'] as const;
const ListenerHead = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a listener name is 1-63 letters, digits, ".", "_" or "-"'),
  kind: z.enum(KINDS),
});

const listenerBase = {
  name: z.string(),
  upstream: z.string().min(1),
  ...PolicyFields,
};

const ListenerSchemas = {
  tcp: z
    .object({
      ...listenerBase,
      kind: z.literal('tcp'),
      listen: z.string().min(1),
      identity: z.enum(['ident', 'certificate']).optional(),
      ident: z.object({ port: z.number().int().min(1).max(65535).optional(), timeout: Duration.optional() }).strict().optional(),
      ident_from: z.array(z.string().min(1)).min(1).optional(),
      client_ca: z.string().min(1).optional(),
      client_ou: z.string().min(1).optional(),
      home: z.string().min(1).optional(),
    })
    .strict(),
  tls: z
    .object({
      ...listenerBase,
      kind: z.literal('tls'),
      listen: z.string().min(1),
      cert: z.string().min(1).optional(),
      key: z.string().min(1).optional(),
      client_ca: z.string().min(1).optional(),
      client_ou: z.string().min(1).optional(),
      home: z.string().min(1).optional(),
    })
    .strict(),
  unix: z
    .object({
      ...listenerBase,
      kind: z.literal('unix'),
      path: z.string().min(1),
      mode: z.union([z.string().regex(/^0?[0-7]{3}$/, 'expected an octal mode like "0660"'), z.number().int().min(0).max(0o777)]).optional(),
      group: z.string().min(1).optional(),
    })
    .strict(),
  'per-user': z
    .object({
      ...listenerBase,
      kind: z.literal('per-user'),
      sockets: z.array(z.object({ user: z.string().min(1), path: z.string().min(1) }).strict()).min(1).optional(),
      pattern: z.string().min(1).optional(),
      users: z.array(z.string().min(1)).min(1).optional(),
    })
    .strict(),
  tunnel: z
    .object({
      ...listenerBase,
      kind: z.literal('tunnel'),
      identity: z.string().min(1),
      relay: z.string().min(1),
      tunnel: z.string().min(1),
    })
    .strict(),
} as const;

type PolicyInput = { [K in keyof typeof PolicyFields]?: z.infer<(typeof PolicyFields)[K]> };

// ---------------------------------------------------------------------------------------------
// Line numbers.

type FieldPath = Array<string | number>;

class Located {
  constructor(
    readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /**
   * The line of a field: for a map entry, the line of its key (so an unknown key points at
   * itself); for a list item, the line of the item; for a missing field, the nearest parent.
   */
  lineOf(path: FieldPath): number | undefined {
    for (let depth = path.length; depth > 0; depth--) {
      const parent = depth === 1 ? this.doc.contents : this.doc.getIn(path.slice(0, depth - 1), true);
      const last = path[depth - 1];
      if (isMap(parent)) {
        const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === last);
        const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
        if (range) return this.lines.linePos(range[0]).line;
      } else if (isSeq(parent) && typeof last === 'number') {
        const item = parent.items[last] as { range?: [number, number, number] } | undefined;
        if (item?.range) return this.lines.linePos(item.range[0]).line;
      }
    }
    return undefined;
  }

  error(path: FieldPath, problem: string): ConfigError {
    return new ConfigError(this.file, this.lineOf(path), path.length > 0 ? path.join('.') : undefined, problem);
  }

  /** A relative file name in the config means relative to the config file's directory. */
  pathOf(value: string): string {
    return isAbsolute(value) ? value : resolvePath(dirname(this.file), value);
  }

  parse<T>(schema: z.ZodType<T>, value: unknown, at: FieldPath): T {
    const parsed = schema.safeParse(value);
    if (parsed.success) return parsed.data;
    // A misspelt key also leaves the real one missing: name the misspelling, it is the fix.
    const issue = parsed.error.issues.find((i) => i.code === 'unrecognized_keys') ?? parsed.error.issues[0];
    const issuePath = (issue?.path ?? []).map((p) => (typeof p === 'symbol' ? String(p) : p));
    const keys = issue && 'keys' in issue && Array.isArray(issue.keys) ? (issue.keys as string[]) : [];
    const fieldPath = [...at, ...issuePath];
    const field = [...fieldPath, ...keys].join('.') || undefined;
    const line = keys.length > 0 ? (this.lineOf([...fieldPath, keys[0] as string]) ?? this.lineOf(fieldPath)) : this.lineOf(fieldPath);
    const missing = issue?.code === 'invalid_type' && /received undefined$/.test(issue.message);
    const message =
      keys.length > 0
        ? `unknown setting${keys.length > 1 ? 's' : ''} ${keys.map((k) => `'${k}'`).join(', ')}`
        : missing
          ? `missing: this setting is required (${issue.message.replace(/^Invalid input: /, '').replace(/, received undefined$/, '')})`
          : (issue?.message ?? 'invalid');
    throw new ConfigError(this.file, line, field, message);
  }
}

// ---------------------------------------------------------------------------------------------
// Value parsers (each throws a ConfigError at the field it reads).

export function parseDuration(value: number | string): number {
  if (typeof value === 'number') return Math.round(value * 1000);
  const m = DURATION.exec(value.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000;
  return Math.round(n * factor);
}

const DEFAULT_PORT: Record<DbProtocol, number> = { mysql: 3306, postgres: 5432 };

function protocolOfScheme(scheme: string): { protocol: DbProtocol; unix: boolean } | undefined {
  switch (scheme) {
    case 'mysql:':
    case 'mariadb:':
      return { protocol: 'mysql', unix: false };
    case 'postgres:':
    case 'postgresql:':
      return { protocol: 'postgres', unix: false };
    case 'mysql+unix:':
    case 'mariadb+unix:':
      return { protocol: 'mysql', unix: true };
    case 'postgres+unix:':
    case 'postgresql+unix:':
      return { protocol: 'postgres', unix: true };
    default:
      return undefined;
  }
}

function hostOf(url: URL): string {
  const host = url.hostname;
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

const UNIX_UPSTREAM_DANGER =
  'a UNIX-socket upstream is refused unless allow_unix_upstream: true is set: database servers that trust ' +
  "socket peers (MariaDB's unix_socket plugin, PostgreSQL's peer authentication) would log every client in as " +
  'the account the relay runs as (root when it starts as root). Use mysql://HOST:PORT or postgres://HOST:PORT, or set ' +
  'allow_unix_upstream: true once the database does not authenticate socket peers by their uid';

function parseUpstream(text: string, allowUnix: boolean, at: Located, path: FieldPath): Upstream {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw at.error(path, `'${text}' is not a URL; expected mysql://HOST:PORT, postgres://HOST:PORT, mysql+unix:///PATH or postgres+unix:///PATH`);
  }
  const kind = protocolOfScheme(url.protocol);
  if (!kind) throw at.error(path, `unknown scheme '${url.protocol}'; expected mysql://, postgres://, mysql+unix:// or postgres+unix://`);
  if (url.username || url.password) throw at.error(path, 'the upstream is an address only: no user or password (clients log in themselves)');
  if (url.search || url.hash) throw at.error(path, 'the upstream takes no query string or fragment');
  if (kind.unix) {
    if (url.host !== '') throw at.error(path, `write a UNIX upstream with three slashes: ${url.protocol}///path/to/socket`);
    const socketPath = decodeURIComponent(url.pathname);
    if (!socketPath.startsWith('/') || socketPath.length < 2) throw at.error(path, 'a UNIX upstream needs an absolute socket path');
    if (!allowUnix) throw at.error(path, UNIX_UPSTREAM_DANGER);
    return { protocol: kind.protocol, transport: 'unix', path: socketPath, url: `${url.protocol}//${socketPath}` };
  }
  if (url.pathname !== '' && url.pathname !== '/') throw at.error(path, 'the upstream is HOST:PORT only (the client names its database)');
  const host = hostOf(url);
  if (!host) throw at.error(path, `'${text}' has no host`);
  const port = url.port === '' ? DEFAULT_PORT[kind.protocol] : Number(url.port);
  const address = { host, port };
  const shown = host.includes(':') ? `[${host}]` : host;
  return { protocol: kind.protocol, transport: 'tcp', address, url: `${kind.protocol}://${shown}:${port}` };
}

function parseQueryUrl(query: NonNullable<PolicyInput['known_users_query']>, at: Located, path: FieldPath): KnownUsersSource {
  let url: URL;
  try {
    url = new URL(query.url);
  } catch {
    throw at.error([...path, 'url'], 'not a URL; expected mysql://USER@HOST:PORT or postgres://USER@HOST:PORT/DATABASE');
  }
  const kind = protocolOfScheme(url.protocol);
  if (!kind || kind.unix) throw at.error([...path, 'url'], `unknown scheme '${url.protocol}'; expected mysql:// or postgres://`);
  const host = hostOf(url);
  if (!host) throw at.error([...path, 'url'], 'the URL has no host');
  if (!url.username) throw at.error([...path, 'url'], "the URL names no user (the relay's own account, e.g. mysql://root@127.0.0.1:3306)");
  let password = url.password ? decodeURIComponent(url.password) : undefined;
  if (query.password_file) {
    if (password !== undefined) throw at.error([...path, 'password_file'], 'give the password in the URL or in password_file, not both');
    const file = at.pathOf(query.password_file);
    try {
      password = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw at.error([...path, 'password_file'], `${file} cannot be read: ${errorMessage(err)}`);
    }
  }
  const everyMs = query.every === undefined ? DBRELAY_DEFAULTS.knownUsersEveryMs : parseDuration(query.every);
  if (everyMs < 1000) throw at.error([...path, 'every'], 'query at most once a second (every: 1s or more)');
  const port = url.port === '' ? DEFAULT_PORT[kind.protocol] : Number(url.port);
  const database = url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : undefined;
  const user = decodeURIComponent(url.username);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    kind: 'query',
    protocol: kind.protocol,
    address: { host, port },
    user,
    password,
    database,
    everyMs,
    display: `${kind.protocol}://${user}@${shownHost}:${port}${database ? `/${database}` : ''}`,
  };
}

function readPem(file: string, at: Located, path: FieldPath): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw at.error(path, `${file} cannot be read: ${errorMessage(err)}`);
  }
}

/** The first private key and the first certificate of PEM text (a file may hold both). */
function pemParts(text: string): { key: string | undefined; cert: string | undefined } {
  const blocks = splitPem(text);
  return { key: blocks.find((b) => b.label.endsWith('PRIVATE KEY'))?.text, cert: blocks.find((b) => b.label === 'CERTIFICATE')?.text };
}

function checkServerPair(key: string, cert: string, at: Located, path: FieldPath): void {
  try {
    tls.createSecureContext({ key, cert });
  } catch (err) {
    throw at.error(path, `the key and certificate cannot be used together: ${errorMessage(err)}`);
  }
}

function parseMode(value: string | number): number {
  return typeof value === 'number' ? value : parseInt(value, 8);
}

interface PolicyOptions {
  /**
   * The listener takes its identity from a certificate sent inside TLS (`identity: certificate`):
   * client_tls must be (and by default is) terminate, and without client_tls_cert the home's
   * relay.pem is the server certificate.
   */
  certificateIdentity?: { defaultCertFile: string };
}

function resolvePolicy(top: PolicyInput, own: PolicyInput, at: Located, path: FieldPath, options: PolicyOptions = {}): ListenerPolicy {
  // A listener's setting replaces the top-level one as a whole (mappings are not merged).
  const pick = <K extends keyof PolicyInput>(key: K): { value: PolicyInput[K]; where: FieldPath } =>
    own[key] !== undefined ? { value: own[key], where: [...path, key] } : { value: top[key], where: [key] };

  const mapping = new Map<string, string[]>();
  for (const [identity, users] of Object.entries(pick('mapping').value ?? {})) mapping.set(identity, typeof users === 'string' ? [users] : users);

  const list = pick('known_users');
  const query = pick('known_users_query');
  // Both may come from different levels; the listener's own wins over the top level's.
  let knownUsers: KnownUsersSource = { kind: 'none' };
  const ownList = own.known_users !== undefined;
  const ownQuery = own.known_users_query !== undefined;
  if (ownList && ownQuery) throw at.error([...path, 'known_users_query'], 'give known_users or known_users_query, not both');
  if (!ownList && !ownQuery && top.known_users !== undefined && top.known_users_query !== undefined) {
    throw at.error(['known_users_query'], 'give known_users or known_users_query, not both');
  }
  if (ownList || (!ownQuery && list.value !== undefined)) knownUsers = { kind: 'list', users: [...new Set(list.value ?? [])] };
  else if (query.value !== undefined) knownUsers = parseQueryUrl(query.value, at, query.where);

  const tlsMode = pick('client_tls');
  const certificateIdentity = options.certificateIdentity;
  if (certificateIdentity && tlsMode.value === 'refuse') {
    throw at.error(
      own.client_tls !== undefined ? tlsMode.where : [...path, 'identity'],
      'identity: certificate reads the certificate the client sends inside TLS, so client_tls must be terminate for this listener (leave it out: that is the default here)',
    );
  }
  let clientTls: ClientTls = { mode: 'refuse' };
  if (tlsMode.value === 'terminate' || certificateIdentity) {
    const certField = pick('client_tls_cert');
    const keyField = pick('client_tls_key');
    if (!certField.value && !certificateIdentity) throw at.error(tlsMode.where, 'client_tls: terminate needs client_tls_cert (and client_tls_key unless the key is in the same file)');
    // identity: certificate without client_tls_cert: the warpstone home's relay.pem (key, leaf, CA)
    const certFile = certField.value ? at.pathOf(certField.value) : (certificateIdentity as { defaultCertFile: string }).defaultCertFile;
    const certWhere: FieldPath = certField.value ? certField.where : [...path, 'identity'];
    const certText = readPem(certFile, at, certWhere);
    const keyText = keyField.value ? readPem(at.pathOf(keyField.value), at, keyField.where) : certText;
    const { cert } = pemParts(certText);
    const { key } = pemParts(keyText);
    if (!cert) throw at.error(certWhere, `${certFile} holds no certificate`);
    if (!key) throw at.error(keyField.value ? keyField.where : certWhere, 'no private key found (set client_tls_key)');
    // the whole chain after the leaf is sent too; relay.pem ends with the CA, so only its leaf
    const certificates = splitPem(certText).filter((b) => b.label === 'CERTIFICATE');
    const chain = (certField.value ? certificates : certificates.slice(0, 1)).map((b) => b.text).join('');
    checkServerPair(key, chain, at, certWhere);
    clientTls = { mode: 'terminate', cert: chain, key, certFile };
  } else if (own.client_tls_cert !== undefined || own.client_tls_key !== undefined) {
    throw at.error([...path, own.client_tls_cert !== undefined ? 'client_tls_cert' : 'client_tls_key'], 'only used with client_tls: terminate');
  }

  const timeouts = { ...(top.timeouts ?? {}), ...(own.timeouts ?? {}) };
  const timeoutPath = (k: string): FieldPath => (own.timeouts && k in own.timeouts ? [...path, 'timeouts', k] : ['timeouts', k]);
  const handshakeTimeoutMs = timeouts.handshake === undefined ? DBRELAY_DEFAULTS.handshakeTimeoutMs : parseDuration(timeouts.handshake);
  const idleTimeoutMs = timeouts.idle === undefined ? DBRELAY_DEFAULTS.idleTimeoutMs : parseDuration(timeouts.idle);
  const connectTimeoutMs = timeouts.connect === undefined ? DBRELAY_DEFAULTS.connectTimeoutMs : parseDuration(timeouts.connect);
  if (handshakeTimeoutMs < 100) throw at.error(timeoutPath('handshake'), 'the handshake needs a timeout of at least 100ms (clients must not hold a slot forever)');
  if (connectTimeoutMs < 100) throw at.error(timeoutPath('connect'), 'the upstream connection needs a timeout of at least 100ms');

  const audit = pick('audit');
  return {
    strict: pick('strict').value ?? false,
    mapping,
    knownUsers,
    clientTls,
    handshakeTimeoutMs,
    idleTimeoutMs,
    connectTimeoutMs,
    maxConnections: pick('max_connections').value ?? DBRELAY_DEFAULTS.maxConnections,
    audit: audit.value === undefined ? undefined : at.pathOf(audit.value),
  };
}

function listenAddress(text: string, at: Located, path: FieldPath): HostPort {
  try {
    return parseHostPort(text, 'listen', undefined, true);
  } catch (err) {
    throw at.error(path, errorMessage(err));
  }
}

function account(user: string, at: Located, path: FieldPath): Account {
  try {
    return lookupAccount(user);
  } catch {
    throw at.error(path, `no such user '${user}' on this host`);
  }
}

function lookupGroup(name: string, at: Located, path: FieldPath): { name: string; gid: number } {
  let entry = '';
  try {
    entry = execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? '';
  } catch {
    entry = '';
  }
  const gid = Number(entry.split(':')[2]);
  if (!entry || !Number.isInteger(gid)) throw at.error(path, `no such group '${name}' on this host`);
  return { name, gid };
}

/** `ident_from`: CIDR blocks (a bare address is that host only), each error at its own line. */
function identSources(texts: string[], at: Located, path: FieldPath): CidrList {
  return new CidrList(
    texts.map((text, i) => {
      try {
        return parseCidr(text, 'ident_from', { v4: 32, v6: 128 });
      } catch (err) {
        throw at.error([...path, i], `${errorMessage(err).replace(/^ident_from: /, '')} (ident_from lists the client networks whose identd is believed, e.g. [127.0.0.0/8, "::1", 10.1.2.0/24])`);
      }
    }),
  );
}

/** Where per-user sockets belong: root's, created 0755 by the relay when missing (listeners.ts). */
export const PER_USER_SOCKET_DIR = '/run/warpstone';

/** The directories from `dir` up to `/`, deepest first. */
function ancestors(dir: string): string[] {
  const out: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    out.push(d);
    if (d === dirname(d)) return out;
  }
}

/** Why a directory on a per-user socket's path is unsafe (not root's, or open to others without the sticky bit); undefined when safe or absent. */
function unsafeDirectory(dir: string): string | undefined {
  let st;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // only its owner (checked above it) can create it
    return `${dir} cannot be inspected: ${errorMessage(err)}`;
  }
  if (st.isSymbolicLink()) return st.uid === 0 ? undefined : `${dir} is a symlink owned by uid ${st.uid}, not root`;
  if (!st.isDirectory()) return `${dir} is not a directory`;
  if (st.uid !== 0) return `${dir} is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) return `${dir} is writable by ${(st.mode & 0o020) !== 0 ? 'its group' : 'others'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}) without the sticky bit`;
  return undefined;
}

/**
 * A per-user socket is bound by root and then given to its user (lchown). If a user controls
 * any directory above it (/home/{user}/db.sock), they can swap a path component for a symlink
 * between the bind and the chown and have root chown a file of their choosing. So every
 * directory from the socket's parent up to / (and up the real path, when symlinks are on the
 * way) must be root's and not writable by group or others, unless sticky (/tmp).
 */
export function perUserSocketDirectoryProblem(socket: string): string | undefined {
  const dirs = ancestors(dirname(socket));
  for (const d of dirs) {
    const problem = unsafeDirectory(d);
    if (problem) return problem;
  }
  const existing = dirs.find((d) => existsSync(d));
  if (existing === undefined) return undefined;
  let real: string;
  try {
    real = realpathSync(existing);
  } catch (err) {
    return `${existing} cannot be resolved: ${errorMessage(err)}`;
  }
  if (real === existing) return undefined;
  for (const d of ancestors(real)) {
    const problem = unsafeDirectory(d);
    if (problem) return `${problem} (on the real path of ${existing})`;
  }
  return undefined;
}

function socketPath(value: string, at: Located, path: FieldPath): string {
  if (!isAbsolute(value)) throw at.error(path, `'${value}' must be an absolute path`);
  // sockaddr_un holds 108 bytes including the final NUL
  if (Buffer.byteLength(value) > 107) throw at.error(path, `'${value}' is longer than a UNIX socket path may be (107 bytes)`);
  return value;
}

/**
 * Where client certificates are verified: `client_ca` (then any OU, no store), or the warpstone
 * home's CA, whose user certificates carry OU=user and whose store records and revokes them.
 */
function resolveClientCertificates(
  input: { client_ca?: string | undefined; client_ou?: string | undefined },
  home: HomePaths,
  at: Located,
  path: FieldPath,
  defaultWhere: FieldPath,
): ClientCertificateConfig {
  const caFile = input.client_ca ? at.pathOf(input.client_ca) : home.caCert;
  const caWhere: FieldPath = input.client_ca ? [...path, 'client_ca'] : defaultWhere;
  const ca = readPem(caFile, at, caWhere);
  const caCerts = splitPem(ca).filter((b) => b.label === 'CERTIFICATE');
  if (caCerts.length === 0) throw at.error(caWhere, `${caFile} holds no CA certificate`);
  let requiredOu = input.client_ou;
  // Only the home's own CA has a store that knows its certificates and revocations.
  const revocationStore = !input.client_ca && existsSync(home.store) ? home.store : undefined;
  if (requiredOu === undefined && !input.client_ca) {
    // the warpstone CA also signs agent and relay certificates: only users are people
    const issuer = new X509Certificate((caCerts[0] as { text: string }).text);
    if (subjectField(issuer.subject, 'O') === 'warpstone' || /warpstone/i.test(issuer.subject)) requiredOu = 'user';
  }
  return { ca, caFile, requiredOu, revocationStore };
}

function resolveListener(raw: unknown, index: number, top: z.infer<typeof TopSchema>, at: Located): ListenerConfig {
  const path: FieldPath = ['listeners', index];
  const head = at.parse(ListenerHead.loose(), raw, path);
  const common = (input: z.infer<(typeof ListenerSchemas)[ListenerKind]>, options: PolicyOptions = {}): ListenerCommon => {
    const allowUnix = input.allow_unix_upstream ?? top.allow_unix_upstream ?? false;
    return {
      name: head.name,
      line: at.lineOf(path),
      upstream: parseUpstream(input.upstream, allowUnix, at, [...path, 'upstream']),
      policy: resolvePolicy(top, input, at, path, options),
    };
  };
  switch (head.kind) {
    case 'tcp': {
      const input = at.parse(ListenerSchemas.tcp, raw, path);
      const listen = listenAddress(input.listen, at, [...path, 'listen']);
      if ((input.identity ?? 'ident') === 'ident') {
        for (const key of ['client_ca', 'client_ou', 'home'] as const) {
          if (input[key] !== undefined) throw at.error([...path, key], 'only used with identity: certificate (this listener asks IDENT)');
        }
        const timeoutMs = input.ident?.timeout === undefined ? IDENT_TIMEOUT_MS : parseDuration(input.ident.timeout);
        if (timeoutMs < 100) throw at.error([...path, 'ident', 'timeout'], 'at least 100ms');
        const identFrom = input.ident_from === undefined ? CidrList.parse(DBRELAY_DEFAULTS.identFrom, 'ident_from') : identSources(input.ident_from, at, [...path, 'ident_from']);
        return { ...common(input), kind: 'tcp', listen, identity: 'ident', ident: { port: input.ident?.port ?? IDENT_PORT, timeoutMs }, identFrom };
      }
      if (input.ident !== undefined) throw at.error([...path, 'ident'], 'only used with identity: ident (this listener takes the identity from a client certificate)');
      if (input.ident_from !== undefined) throw at.error([...path, 'ident_from'], 'only used with identity: ident (this listener takes the identity from a client certificate)');
      const home = homePaths(input.home ?? top.home);
      const clientCert = resolveClientCertificates(input, home, at, path, [...path, 'identity']);
      return { ...common(input, { certificateIdentity: { defaultCertFile: home.relayIdentity } }), kind: 'tcp', listen, identity: 'certificate', clientCert };
    }
    case 'tls': {
      const input = at.parse(ListenerSchemas.tls, raw, path);
      const home = homePaths(input.home ?? top.home);
      // Without cert/key the relay's own certificate (relay.pem: key, certificate, CA) is used;
      // without client_ca the home's CA, whose user certificates carry OU=user.
      const certFile = input.cert ? at.pathOf(input.cert) : home.relayIdentity;
      const certWhere: FieldPath = input.cert ? [...path, 'cert'] : [...path, 'kind'];
      const certText = readPem(certFile, at, certWhere);
      const keyText = input.key ? readPem(at.pathOf(input.key), at, [...path, 'key']) : certText;
      const keyFile = input.key ? at.pathOf(input.key) : certFile;
      const cert = splitPem(certText).filter((b) => b.label === 'CERTIFICATE');
      const key = pemParts(keyText).key;
      if (cert.length === 0) throw at.error(certWhere, `${certFile} holds no certificate`);
      if (!key) throw at.error(input.key ? [...path, 'key'] : certWhere, `${keyFile} holds no private key`);
      // relay.pem ends with the CA certificate; send only the leaf and any intermediates
      const chain = input.cert ? cert.map((b) => b.text).join('') : (cert[0] as { text: string }).text;
      checkServerPair(key, chain, at, certWhere);
      const { ca, caFile, requiredOu, revocationStore } = resolveClientCertificates(input, home, at, path, [...path, 'kind']);
      return {
        ...common(input),
        kind: 'tls',
        listen: listenAddress(input.listen, at, [...path, 'listen']),
        key,
        cert: chain,
        ca,
        files: { cert: certFile, key: keyFile, ca: caFile },
        requiredOu,
        revocationStore,
      };
    }
    case 'unix': {
      const input = at.parse(ListenerSchemas.unix, raw, path);
      return {
        ...common(input),
        kind: 'unix',
        path: socketPath(input.path, at, [...path, 'path']),
        mode: input.mode === undefined ? DBRELAY_DEFAULTS.unixMode : parseMode(input.mode),
        group: input.group === undefined ? undefined : lookupGroup(input.group, at, [...path, 'group']),
      };
    }
    case 'per-user': {
      const input = at.parse(ListenerSchemas['per-user'], raw, path);
      const entries: Array<{ user: string; path: string; where: FieldPath }> = [];
      if (input.sockets && (input.pattern || input.users)) throw at.error([...path, 'pattern'], 'give sockets, or pattern with users, not both');
      if (input.sockets) {
        input.sockets.forEach((s, i) => entries.push({ user: s.user, path: s.path, where: [...path, 'sockets', i] }));
      } else {
        if (!input.pattern) throw at.error(path, 'a per-user listener needs sockets: [{user, path}] or pattern: /run/warpstone/{user}.sock with users: [...]');
        if (!input.pattern.includes('{user}')) throw at.error([...path, 'pattern'], "the pattern must contain '{user}'");
        if (!input.users) throw at.error([...path, 'pattern'], 'a pattern needs users: [...]');
        const pattern = input.pattern;
        input.users.forEach((user, i) => entries.push({ user, path: pattern.split('{user}').join(user), where: [...path, 'users', i] }));
      }
      const seen = new Set<string>();
      const sockets = entries.map((e) => {
        const acct = account(e.user, at, e.where);
        const p = socketPath(e.path, at, e.where);
        if (seen.has(p)) throw at.error(e.where, `socket path ${p} is listed twice`);
        seen.add(p);
        const unsafe = perUserSocketDirectoryProblem(p);
        if (unsafe) {
          throw at.error(
            input.sockets ? [...e.where, 'path'] : [...path, 'pattern'],
            `per-user socket ${p}: ${unsafe}. The relay binds the socket as root and then gives it to ${acct.name}; whoever can change a directory on that path could swap in a symlink between the two and have root hand over another file. Use a directory only root can write, e.g. pattern: ${joinPath(PER_USER_SOCKET_DIR, '{user}.sock')} (the relay creates ${PER_USER_SOCKET_DIR}, 0755 root, if missing)`,
          );
        }
        return { user: acct.name, uid: acct.uid, gid: acct.gid, path: p };
      });
      return { ...common(input), kind: 'per-user', sockets };
    }
    case 'tunnel': {
      const input = at.parse(ListenerSchemas.tunnel, raw, path);
      const problem = nameProblem(input.tunnel, 'tunnel');
      if (problem) throw at.error([...path, 'tunnel'], problem);
      const identityFile = at.pathOf(input.identity);
      let identity: Identity;
      try {
        identity = readIdentityFile(identityFile);
      } catch (err) {
        throw at.error([...path, 'identity'], errorMessage(err));
      }
      if (identity.role !== 'agent') {
        throw at.error([...path, 'identity'], `${identityFile} holds a ${identity.role} certificate; a tunnel listener dials the relay as an agent ('warpstone issue agent NAME')`);
      }
      let relay: HostPort;
      try {
        relay = parseHostPort(input.relay, 'relay');
      } catch (err) {
        throw at.error([...path, 'relay'], errorMessage(err));
      }
      return { ...common(input), kind: 'tunnel', identity, identityFile, relay, tunnel: input.tunnel };
    }
  }
}

/** A ban duration in ms: the relay's syntax, or a number of seconds. */
function banDuration(value: number | string, at: Located, path: FieldPath): number {
  if (typeof value === 'number') return Math.round(value * 1000);
  try {
    return parseBanDuration(value, 'duration');
  } catch (err) {
    throw at.error(path, errorMessage(err).replace(/^duration: /, ''));
  }
}

/**
 * The `bans:` section as the guard's settings. Defaults, bounds and meaning are the relay's
 * (--ban-maxretry, --ban-findtime, --ban-time, --ban-increment, --ban-maxtime, --ban-ignore,
 * --ban-prefix-v4/-v6); the home must hold a store (`warpstone init`).
 */
function resolveBans(input: z.infer<typeof BansSchema>, topHome: string | undefined, at: Located): DbBanConfig {
  const home = homePaths(input.home ?? topHome);
  const homeWhere: FieldPath = input.home !== undefined ? ['bans', 'home'] : ['bans'];
  if (!existsSync(home.store)) {
    throw at.error(homeWhere, `${home.store} does not exist: bans are kept in a warpstone store; point bans.home at the relay's home (or run 'warpstone init --home ${home.dir}')`);
  }
  const settings = defaultBanSettings();
  if (input.maxretry !== undefined) settings.maxRetry = input.maxretry;
  if (input.findtime !== undefined) settings.findTimeMs = banDuration(input.findtime, at, ['bans', 'findtime']);
  if (input.bantime !== undefined) settings.banTimeMs = banDuration(input.bantime, at, ['bans', 'bantime']);
  if (input.maxtime !== undefined) settings.maxBanTimeMs = banDuration(input.maxtime, at, ['bans', 'maxtime']);
  if (input.increment !== undefined) settings.increment = input.increment;
  if (input.prefix_v4 !== undefined) settings.prefixLengths.v4 = input.prefix_v4;
  if (input.prefix_v6 !== undefined) settings.prefixLengths.v6 = input.prefix_v6;
  if (input.ignore !== undefined) {
    const blocks: Cidr[] = input.ignore.map((text, i) => {
      try {
        // a bare address means that host only, as with --ban-ignore
        return parseCidr(text, 'ignore', { v4: 32, v6: 128 });
      } catch (err) {
        throw at.error(['bans', 'ignore', i], errorMessage(err).replace(/^ignore: /, ''));
      }
    });
    settings.ignore = new CidrList(blocks);
  }
  if (settings.maxBanTimeMs < settings.banTimeMs) {
    throw at.error(input.maxtime !== undefined ? ['bans', 'maxtime'] : ['bans', 'bantime'], 'maxtime is shorter than bantime; the cap must be at least the first ban');
  }
  return { home: home.dir, store: home.store, settings };
}

function place(listener: ListenerConfig): string | undefined {
  switch (listener.kind) {
    case 'tcp':
    case 'tls':
      return listener.listen.port === 0 ? undefined : `${listener.listen.host}:${listener.listen.port}`;
    case 'unix':
      return listener.path;
    case 'per-user':
      return undefined;
    case 'tunnel':
      return `tunnel ${listener.tunnel} at ${listener.relay.host}:${listener.relay.port}`;
  }
}

/** Parses YAML text as if read from `file` (tests pass text directly). */
export function parseDbRelayConfig(text: string, file: string): DbRelayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.pos ? lines.linePos(yamlError.pos[0]).line : undefined;
    throw new ConfigError(file, line, undefined, `not valid YAML: ${yamlError.message.split('\n')[0]}`);
  }
  const at = new Located(file, doc, lines);
  const top = at.parse(TopSchema, doc.toJS() ?? {}, []);
  const listeners = top.listeners.map((raw, i) => resolveListener(raw, i, top, at));

  const names = new Map<string, number>();
  const places = new Map<string, string>();
  listeners.forEach((l, i) => {
    if (names.has(l.name)) throw at.error(['listeners', i, 'name'], `listener name '${l.name}' is used twice`);
    names.set(l.name, i);
    const where = place(l);
    const paths = l.kind === 'per-user' ? l.sockets.map((s) => s.path) : where ? [where] : [];
    for (const p of paths) {
      const other = places.get(p);
      if (other) throw at.error(['listeners', i], `listener '${l.name}' uses ${p}, as listener '${other}' does`);
      places.set(p, l.name);
    }
  });
  const user = top.user === undefined ? undefined : account(top.user, at, ['user']);
  const bans = top.bans === undefined ? undefined : resolveBans(top.bans, top.home, at);
  return { file, user, listeners, bans };
}

/** Reads and checks a dbrelay YAML file; errors name the file, the line and the field. */
export function loadDbRelayConfig(file: string): DbRelayConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, undefined, undefined, `cannot be read: ${errorMessage(err)}`);
  }
  return parseDbRelayConfig(text, file);
}
