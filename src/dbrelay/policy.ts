// The database relay's decision: may this identity log in as this database user? Pure apart from
// the known-users lookup it is given; no sockets, no logging, no audit (sessions do those).
//
// Rules (issue 4), in the order they are applied:
//  1. No identity (name undefined or empty) → deny, reason 'no-identity', strict or not: the
//     relay exists to tie a login to a person, and nobody is not a person.
//  2. No DB user (the first packet could not be parsed) → allow, reason 'unparsable', unless
//     strict (then deny): the parser may be behind the server's protocol. A name that was read
//     but could not be converted (input.lossyName set) is denied, strict or not.
//  3. The mapping allows the DB user → allow, reason 'match'. An identity listed in the mapping
//     may use exactly its list: the identity's own name is NOT implied (`deploy: [app]` may not
//     log in as `deploy`); list it when wanted (`alice: [alice, alice_ro]`). An identity absent
//     from the mapping may use only the DB user of the same name. Names compare exactly
//     (case, spaces and all), as MariaDB and PostgreSQL compare them; sessions hand over the
//     name as the server will read it (charset, truncation).
//  4. Otherwise ask the known-users lookup:
//     - false (the database has no such user) → allow, reason 'unknown-db-user', unless strict:
//       the database will refuse it anyway; but refused when the name needed a conversion that
//       could be lossy (input.lossyName: latin1 → utf8, invalid UTF-8): the database may read
//       those bytes as a user that does exist, so "unknown" proves nothing;
//     - true, or undefined (cannot tell), or a failed lookup → deny, reason 'mismatch'. Not
//       knowing whether a user exists must not turn a refusal into a login.
//  A match is decided before the lookup, so allowed logins cost no lookup.
//
// Messages are single sentences naming the identity, where it came from and the DB user. A
// refusal's message goes to the client (MySQL ERR, PostgreSQL ErrorResponse), so it starts with
// "warpstone dbrelay:" to say who refused. Names that could hide something (empty, leading or
// trailing spaces, control or invisible characters, quotes) are shown JSON-quoted with escapes.
// Owns: the decision and its wording. Must not: touch sockets, log, or write the audit trail.
import type { ClientIdentity, Decision, DecisionInput, IdentitySource } from './types.js';

export interface KnownUsersCheck {
  /** true/false once known; undefined when the relay cannot tell */
  has(user: string): Promise<boolean | undefined>;
}

export interface PolicyOptions {
  /** turn the two "log and allow" cases (unparsable, unknown DB user) into refusals */
  strict: boolean;
  /** identity → DB users it may use; an identity absent from the map may use its own name only */
  mapping: Map<string, string[]>;
  knownUsers: KnownUsersCheck;
}

export type DecideFn = (input: DecisionInput) => Promise<Decision>;

const REFUSED = 'warpstone dbrelay:';

const SOURCE_WORDS: Record<IdentitySource, string> = {
  certificate: 'client certificate',
  tunnel: 'warpstone tunnel',
  'unix-peer': 'UNIX peer credentials',
  'unix-socket-owner': 'per-user socket',
  ident: 'IDENT',
};

/** A simple name is shown in single quotes; anything that could mislead is JSON-quoted and escaped. */
export function visibleName(name: string): string {
  if (/^[^\s\p{C}\p{Z}'"\\]+$/u.test(name)) return `'${name}'`;
  // JSON.stringify escapes controls below U+0020, quotes and backslashes; escape what it leaves
  // invisible too (U+007F-U+009F, format characters such as U+202E, separators other than ' ').
  // Escaped per UTF-16 unit, so characters beyond U+FFFF become a JSON surrogate pair.
  return JSON.stringify(name).replace(/[\p{C}\p{Z}]/gu, (ch) => {
    if (ch === ' ') return ch;
    let out = '';
    for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`;
    return out;
  });
}

/** "client certificate", "IDENT, NO-USER": where the identity came from, with its detail. */
function sourceWords(identity: ClientIdentity): string {
  return identity.detail ? `${SOURCE_WORDS[identity.source]}, ${identity.detail}` : SOURCE_WORDS[identity.source];
}

/** "identity 'alice' (client certificate)", "identity 'bob' (IDENT, uid 1001)", "no identity (IDENT, NO-USER)". */
export function describeIdentity(identity: ClientIdentity): string {
  if (identity.name === undefined || identity.name === '') return `no identity (${sourceWords(identity)})`;
  return `identity ${visibleName(identity.name)} (${sourceWords(identity)})`;
}

function dbUserWords(dbUser: string): string {
  return `database user ${visibleName(dbUser)}`;
}

export function createPolicy(options: PolicyOptions): DecideFn {
  const allowed = new Map<string, ReadonlySet<string>>();
  for (const [identity, users] of options.mapping) allowed.set(identity, new Set(users));
  const strict = options.strict;
  const because = strict ? 'the listener is strict' : 'the listener is not strict';

  const mayUse = (identity: string, dbUser: string): boolean => {
    const list = allowed.get(identity);
    return list ? list.has(dbUser) : identity === dbUser;
  };

  const lookup = async (dbUser: string): Promise<boolean | undefined> => {
    try {
      return await options.knownUsers.has(dbUser);
    } catch {
      return undefined;
    }
  };

  return async (input: DecisionInput): Promise<Decision> => {
    const { identity, dbUser } = input;
    const who = describeIdentity(identity);
    if (identity.name === undefined || identity.name === '') {
      const target = dbUser === undefined ? 'any database user' : dbUserWords(dbUser);
      return {
        allow: false,
        reason: 'no-identity',
        message: `${REFUSED} could not tell who is connecting (${sourceWords(identity)}), so ${target} is refused`,
      };
    }
    if (dbUser === undefined) {
      const problem = input.parseProblem ? ` (${input.parseProblem})` : '';
      if (input.lossyName !== undefined) {
        return { allow: false, reason: 'unparsable', message: `${REFUSED} could not convert the database user in the first packet as the database would${problem}; ${who} is refused (an unconvertible name is never let through, strict or not)` };
      }
      return strict
        ? { allow: false, reason: 'unparsable', message: `${REFUSED} could not read the database user from the first packet${problem}; ${who} is refused because ${because}` }
        : { allow: true, reason: 'unparsable', message: `could not read the database user from the first packet${problem}; ${who} is let through because ${because}` };
    }
    const target = dbUserWords(dbUser);
    if (mayUse(identity.name, dbUser)) {
      return { allow: true, reason: 'match', message: `${who} may log in as ${target}` };
    }
    const known = await lookup(dbUser);
    if (known === false && input.lossyName !== undefined) {
      return {
        allow: false,
        reason: 'unknown-db-user',
        message: `${REFUSED} ${target} does not exist in the database, but the name was converted (${input.lossyName}) and the database may read it as another user; ${who} is refused (a converted name is never let through as unknown, strict or not)`,
      };
    }
    if (known === false) {
      return strict
        ? { allow: false, reason: 'unknown-db-user', message: `${REFUSED} ${target} does not exist in the database; ${who} is refused because ${because}` }
        : { allow: true, reason: 'unknown-db-user', message: `${target} does not exist in the database; ${who} is let through because ${because} (the database will refuse the login)` };
    }
    const unsure = known === undefined ? ' (the relay cannot tell whether that user exists, so the mapping applies)' : '';
    return { allow: false, reason: 'mismatch', message: `${REFUSED} ${who} may not log in as ${target}${unsure}` };
  };
}
