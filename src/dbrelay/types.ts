// The contract between the database relay's parts: who the client is (identity), what the
// policy decided, what is audited, and what a protocol session needs from its listener.
// Listeners (listeners.ts) find the identity and open the upstream; sessions (mysql-session.ts,
// postgres-session.ts) read the DB user from the first client packet, ask the policy, and either
// refuse in the protocol's own words or become a byte pipe.
// Listeners may also learn the identity later, from the certificate a client sends inside the
// protocol's own TLS upgrade (`identifyFromPeer`, called by the session after that handshake).
// Owns: these shapes. Must not: hold behaviour.
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import type { Logger } from '../common/log.js';

export type DbProtocol = 'mysql' | 'postgres';

/** Where a listener learns who the client is. */
export type IdentitySource =
  /** CN of a client certificate verified by a TLS listener */
  | 'certificate'
  /** the warpstone user name a relay stream carries (listener of kind `tunnel`) */
  | 'tunnel'
  /** SO_PEERCRED uid of a UNIX-socket peer, mapped to a login name */
  | 'unix-peer'
  /** the owner a per-user UNIX socket is bound to */
  | 'unix-socket-owner'
  /** RFC 1413 answer from the client host's identd */
  | 'ident';

/**
 * Why a client certificate gave no identity, in words that map onto the relay's ban failure
 * reasons (`tls-<problem>`). Set only by certificate identities: an IDENT or UNIX source
 * without a name has no problem worth a ban (see bans.ts).
 */
export type CertificateProblem = 'no-certificate' | 'unknown-ca' | 'expired' | 'not-yet-valid' | 'revoked' | 'unknown-certificate';

export interface ClientIdentity {
  /** the name the identity source vouches for; undefined when it gave none */
  name: string | undefined;
  source: IdentitySource;
  /** why there is no name, or what stands behind it (e.g. "uid 1001", "ident: NO-USER") */
  detail?: string;
  /** certificate sources without a name: what was wrong with the certificate (undefined: our own failure, e.g. the store) */
  problem?: CertificateProblem;
}

/** OpenSSL's verdict on a client certificate, read once the TLS handshake is complete. */
export interface PeerVerification {
  authorized: boolean;
  /** OpenSSL's error code when not authorized ("SELF_SIGNED_CERT_IN_CHAIN", "CERT_HAS_EXPIRED", ...) */
  error: string | undefined;
}

/** Why the policy allowed or refused; stable words for logs, audit and tests. */
export type DecisionReason =
  /** the DB user is the identity itself or listed for it in the mapping */
  | 'match'
  /** the DB user is known and the identity may not use it */
  | 'mismatch'
  /** the first packet could not be parsed into a DB user */
  | 'unparsable'
  /** the DB user does not exist in the database */
  | 'unknown-db-user'
  /** the listener could not establish who the client is */
  | 'no-identity'
  /** a protocol step the listener's configuration refuses (e.g. TLS requested, tls: refuse) */
  | 'refused-by-config'
  /** a pass-through request with no user (PostgreSQL CancelRequest) */
  | 'pass-through'
  /** the source address is banned (bans.ts): refused at accept, before anything was read */
  | 'banned';

export interface Decision {
  allow: boolean;
  reason: DecisionReason;
  /** one sentence for the log line and, when refused, for the client's error message */
  message: string;
}

export interface DecisionInput {
  identity: ClientIdentity;
  /** undefined when the first packet could not be parsed */
  dbUser: string | undefined;
  /** when dbUser is undefined: what the parser said */
  parseProblem?: string;
  /**
   * Set when reading the DB user needed a conversion the server may not make the same way
   * (non-ASCII bytes in a non-UTF-8 client charset, bytes that are not valid UTF-8): says which.
   * The relay's name may then differ from the one the server logs in, so "that user does not
   * exist" proves nothing and is refused even when the listener is not strict.
   */
  lossyName?: string;
}

export interface DbAuditEvent {
  time: Date;
  listener: string;
  protocol: DbProtocol;
  /** client address ("127.0.0.1:53422", "unix:/run/db.sock") */
  source: string;
  identity: string | undefined;
  identitySource: IdentitySource;
  identityDetail?: string;
  dbUser: string | undefined;
  decision: 'allow' | 'deny';
  reason: DecisionReason;
  message: string;
}

export interface DbAuditSink {
  record(event: DbAuditEvent): void;
}

/** What the listener hands to a protocol session for one accepted client. */
export interface DbSessionContext {
  listener: string;
  client: Duplex;
  /** client address for logs and audit */
  source: string;
  /** who the client is, as known at accept (see identifyFromPeer for identities that come later) */
  identity: ClientIdentity;
  /** opens a new connection to the database; rejects with a message fit for the client */
  connectUpstream(): Promise<Duplex>;
  decide(input: DecisionInput): Promise<Decision>;
  /**
   * What to do when the client asks for TLS (MySQL SSLRequest, PostgreSQL SSLRequest):
   * `terminate` with this context and read the user inside, or `refuse`: MySQL gets an ERR
   * packet saying so; PostgreSQL gets 'N' (the client then goes on in clear text or, with
   * sslmode=require, stops with its own message) and the refusal is logged.
   * `requestClientCert`: ask the client for its certificate during that handshake (the context
   * then holds the CA it is verified against); set exactly when `identifyFromPeer` is.
   */
  tls: { mode: 'terminate'; secureContext: tls.SecureContext; requestClientCert: boolean } | { mode: 'refuse' };
  /**
   * Listeners whose identity is the certificate the client sends inside the protocol's TLS
   * (`kind: tcp, identity: certificate`): called by the session right after the TLS handshake
   * it accepted, before the decision. From then on the session uses the returned identity in
   * place of `identity` (which, before TLS, says that no certificate was sent). Never rejects.
   */
  identifyFromPeer?(peer: { socket: tls.TLSSocket; verification: PeerVerification }): Promise<ClientIdentity>;
  audit: DbAuditSink;
  log: Logger;
  /** bounds: handshake must complete within this, idle pipes close after that (ms, 0 = never) */
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
}

/** A protocol session: resolves when both sides are closed; never throws for client bytes. */
export type DbSessionHandler = (context: DbSessionContext) => Promise<void>;
