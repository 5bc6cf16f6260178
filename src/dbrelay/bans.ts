// Bans in the database relay, with the relay's own guard: a BanGuard (guard/bans.ts, fail2ban
// semantics) on a RelayEvents bus of the database relay's own, backed by the store of a warpstone
// home (`bans: { home: ... }` in dbrelay.yaml). One store, one list: bans the relay issues hold
// here, bans issued here hold at the relay, and `warpstone ban list|add|remove --home` see and
// change both (each process reloads within about a second).
//
// What counts as a failure of a source (TCP and TLS listeners only: UNIX sockets have no source
// address, and a tunnel's users are the relay's to ban):
//  - a refusal because the identity may not use the DB user (reason 'mismatch') → 'db-mismatch';
//  - a refusal of a DB user the database does not have (strict listeners) → 'db-unknown-user';
//    (not strict, that login is let through and the database refuses it: not counted);
//  - no identity because of the client's certificate (none sent, another CA, expired, not yet
//    valid, revoked, not recorded, wrong role) → the relay's 'tls-*' reasons, as the relay counts
//    the same certificates at its own door;
//  - a failed TLS handshake on a TLS-first listener → 'tls-handshake', as at the relay.
// Not counted: no identity from IDENT (NO-USER, HIDDEN-USER, no identd, timeouts). A host whose
// identd does not know a connection (NAT, containers, no identd installed) is far more often
// misconfigured than hostile, and one such host would ban every user behind its address; an
// attacker there gains nothing by retrying, since without a name every login is refused.
// Nor: unreadable first packets (the parser may be behind the protocol), refusals by
// configuration (TLS refused, COM_CHANGE_USER), a TLS upgrade inside the protocol that fails (a
// client that does not trust the relay's certificate) and the relay's own failures (store,
// policy).
//
// A banned source is refused at accept, before IDENT is asked, before any TLS work and without
// connecting to the database: MySQL clients get an ERR packet in place of the greeting
// (sequence 0, no SQLSTATE marker, 1129 ER_HOST_IS_BLOCKED, as mysqld sends its host errors);
// PostgreSQL clients an ErrorResponse (FATAL, 28000 as pg_hba's refusal of a host) before
// anything is read; TLS-first listeners drop the connection, as the relay does.
// Owns: which outcomes count and as what, the banned client's reply, the store the bans live in.
// Must not: touch sockets (listeners reply and close), decide policy or write the audit file.
import type { Logger } from '../common/log.js';
import { unmapAddress } from '../identity/ident.js';
import { BanGuard } from '../guard/bans.js';
import { RelayEvents, type FailureReason } from '../ops/events.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { DbBanConfig } from './config.js';
import { buildErrPacket } from './mysql.js';
import { buildErrorResponse } from './postgres.js';
import type { CertificateProblem, ClientIdentity, DbProtocol, Decision } from './types.js';

/** mysqld's ER_HOST_IS_BLOCKED ("Host '%s' is blocked because of many connection errors"). */
export const ER_HOST_IS_BLOCKED = 1129;
/** invalid_authorization_specification: what pg_hba sends for a host it does not let in. */
export const PG_BANNED_SQLSTATE = '28000';

export const DB_BAN_DEFAULTS = {
  /** a banned client has this long to read its refusal and close */
  lingerMs: 500,
  /** refusals waiting for their client at once per listener; beyond that the socket is closed at once */
  maxLingering: 32,
} as const;

const CERTIFICATE_FAILURES: Record<CertificateProblem, FailureReason> = {
  'no-certificate': 'tls-no-certificate',
  'unknown-ca': 'tls-unknown-ca',
  expired: 'tls-expired',
  'not-yet-valid': 'tls-not-yet-valid',
  revoked: 'tls-revoked',
  'unknown-certificate': 'tls-unknown-certificate',
};

/** The failure a decision counts as, or undefined when it does not count (see the header). */
export function failureOf(identity: ClientIdentity, decision: Decision): FailureReason | undefined {
  if (decision.allow) return undefined;
  switch (decision.reason) {
    case 'mismatch':
      return 'db-mismatch';
    case 'unknown-db-user':
      return 'db-unknown-user';
    case 'no-identity':
      return identity.source === 'certificate' && identity.problem !== undefined ? CERTIFICATE_FAILURES[identity.problem] : undefined;
    default:
      return undefined;
  }
}

/** The message a banned client reads (it names the address it connected from, as mysqld does). */
export function bannedMessage(remoteAddress: string | undefined): string {
  const host = remoteAddress === undefined ? 'this host' : `host '${unmapAddress(remoteAddress)}'`;
  return `warpstone dbrelay: ${host} is blocked (banned after repeated refused logins, or by an admin); see 'warpstone ban list'`;
}

/** The refusal a banned client gets in place of anything else, in its protocol's words. */
export function bannedReply(protocol: DbProtocol, remoteAddress: string | undefined): Buffer {
  const message = bannedMessage(remoteAddress);
  if (protocol === 'mysql') {
    // In place of the greeting nothing is negotiated yet: sequence 0 and no '#SQLSTATE' marker.
    return buildErrPacket({ sequence: 0, code: ER_HOST_IS_BLOCKED, protocol41: false, message });
  }
  return buildErrorResponse(message, { code: PG_BANNED_SQLSTATE });
}

/** The guard, its event bus and its store, for one database relay. */
export class DbBans {
  private readonly events = new RelayEvents();
  private readonly guard: BanGuard;

  private constructor(
    private readonly store: Store,
    readonly config: DbBanConfig,
    log: Logger,
  ) {
    this.guard = new BanGuard(store, this.events, log, config.settings);
  }

  /** Opens the home's store (call while still root: it is the relay's, mode 0600). */
  static async open(config: DbBanConfig, log: Logger): Promise<DbBans> {
    const store = await openStore(config.store);
    return new DbBans(store, config, log);
  }

  /** Loads the active bans and starts counting and polling. */
  async start(): Promise<void> {
    try {
      await this.guard.start();
    } catch (err) {
      await this.store.close();
      throw err;
    }
  }

  async stop(): Promise<void> {
    await this.guard.stop();
    await this.store.close();
  }

  /** At accept: is this peer address banned? Synchronous, in memory. */
  isBanned(remoteAddress: string | undefined): boolean {
    return this.guard.isBanned(remoteAddress);
  }

  /** A banned source was refused (the guard logs it, at most every 10 s per prefix). */
  refused(source: string): void {
    this.events.emit('banned-drop', { time: new Date(), source });
  }

  /** Counts a decision against its source when it is a failure. */
  decided(source: string, identity: ClientIdentity, decision: Decision): void {
    const reason = failureOf(identity, decision);
    if (reason === undefined) return;
    this.events.emit('failure', { time: new Date(), source, reason, detail: decision.message, ...(identity.name ? { identity: identity.name } : {}) });
  }

  /** A TLS-first listener's handshake failed (counted as at the relay's door). */
  handshakeFailed(source: string, detail: string): void {
    this.events.emit('failure', { time: new Date(), source, reason: 'tls-handshake', detail });
  }
}
