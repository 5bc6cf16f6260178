// Refusals explained to the admin in words they can act on: a name with stray whitespace shown
// JSON-quoted, a certificate that expired on a date (and how long ago), one not yet valid (and
// whether the relay's clock may be the one that is off), one from another CA (its issuer against
// ours), a revoked one (since when), a tunnel name that differs from a known one only by case.
// These sentences go to the relay's log; what the peer itself is told stays in the relay's
// refusal (it must not learn, say, the names of tunnels it may not use).
// Owns: the wording of explanations. Must not: decide anything or read clocks (callers pass now).
import { formatDuration } from './duration.js';

/** A skew within this much of now is more likely a clock that is off than a certificate issued for later. */
export const CLOCK_SKEW_SUSPECT_MS = 15 * 60_000;

/** A name as it should appear in a log line: plain when plain, JSON-quoted when it has anything odd. */
export function quoteName(name: string): string {
  return /^[A-Za-z0-9._@-]+$/.test(name) ? `'${name}'` : JSON.stringify(name);
}

/** What is odd about a name (stray whitespace, control characters), or undefined. */
export function nameOddity(name: string): string | undefined {
  const leading = /^\s/u.test(name);
  const trailing = /\s$/u.test(name);
  if (leading || trailing) {
    const where = leading && trailing ? 'leading and trailing' : leading ? 'leading' : 'trailing';
    return `the name ${JSON.stringify(name)} has ${where} whitespace (${JSON.stringify(name.trim())} without it)`;
  }
  if (/\s/u.test(name)) return `the name ${JSON.stringify(name)} contains whitespace`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return `the name ${JSON.stringify(name)} contains control characters`;
  return undefined;
}

/** "2024-05-01 12:00:00 UTC" */
export function formatWhen(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** "3 days ago" / "in 2 min" */
export function relative(date: Date, now: Date): string {
  const delta = date.getTime() - now.getTime();
  return delta <= 0 ? `${formatDuration(-delta)} ago` : `in ${formatDuration(delta)}`;
}

export function explainExpired(who: string, notAfter: Date, now: Date): string {
  return `the certificate of ${who} expired on ${formatWhen(notAfter)}, ${relative(notAfter, now)}; issue a new one with 'warpstone issue'`;
}

export function explainNotYetValid(who: string, notBefore: Date, now: Date): string {
  const ahead = notBefore.getTime() - now.getTime();
  const base = `the certificate of ${who} is not valid before ${formatWhen(notBefore)} (${relative(notBefore, now)})`;
  if (ahead <= CLOCK_SKEW_SUSPECT_MS) {
    return `${base}; that is only ${formatDuration(ahead)} from the relay's clock (${formatWhen(now)}): the relay's clock, or the clock of the host that issued it, may be off (check NTP)`;
  }
  return base;
}

export function explainForeignCa(who: string, issuer: string | undefined, ourCa: string | undefined): string {
  const theirs = issuer ? quoteName(issuer) : 'an unnamed issuer';
  const ours = ourCa ? quoteName(ourCa) : "this relay's CA";
  return `the certificate of ${who} was issued by ${theirs}, not by this relay's CA ${ours}: it belongs to another warpstone installation or another PKI`;
}

export function explainRevoked(who: string, revokedAt: Date | null, now: Date): string {
  return revokedAt
    ? `the certificate of ${who} was revoked on ${formatWhen(revokedAt)}, ${relative(revokedAt, now)}`
    : `the certificate of ${who} is revoked`;
}

export function explainUnknownCertificate(who: string, serial: string): string {
  return `the certificate of ${who} (serial ${serial}) carries this relay's CA signature but is not in its store: it was issued with a copy of the CA key, or the store was replaced`;
}

export function explainNoCertificate(): string {
  return 'the client presented no certificate: it was run without an identity file (warpstone --identity, stone/openssl -cert, curl --cert), or it is not a warpstone client at all';
}

/**
 * Why a tunnel name is unknown, with a hint when a known name matches it once whitespace is
 * trimmed or case ignored. For the admin's log only: `known` must not reach the peer.
 */
export function explainUnknownTunnel(name: string, known: Iterable<string>): string {
  const oddity = nameOddity(name);
  const folded = name.trim().toLowerCase();
  let close: string | undefined;
  for (const k of known) {
    if (k !== name && k.toLowerCase() === folded) {
      close = k;
      break;
    }
  }
  let out = `no tunnel is named ${quoteName(name)}`;
  if (oddity) out += `; ${oddity}`;
  if (close) out += `; a tunnel ${quoteName(close)} exists`;
  return out;
}
