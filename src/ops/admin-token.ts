// Admin tokens for the admin HTTP listener: minting (shown once, stored only as a SHA-256 hash),
// checking a presented token in constant time against the stored hashes, and the short-lived
// browser sessions a login with a token opens (cookie value -> token hash, in memory only).
// A session dies with its token: every request re-checks that the token's hash is still stored,
// so `warpstone admin token revoke ID` ends the sessions it opened at their next request.
// Owns: token format, hashing, comparison and sessions. Must not: log tokens or session ids.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AdminTokenRecord, OpsStore } from '../store/ops-store.js';
import { UsageError } from '../common/errors.js';

export const TOKEN_PREFIX = 'wsa_';
/** 32 random bytes, base64url: 43 characters after the prefix */
const TOKEN_PATTERN = /^wsa_[A-Za-z0-9_-]{43}$/;
const LABEL_MAX = 100;

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function looksLikeToken(text: string): boolean {
  return TOKEN_PATTERN.test(text);
}

export function checkLabel(label: string): string {
  const trimmed = label.trim();
  if (trimmed.length === 0) throw new UsageError('--label: give a few words that say where the token is used (e.g. "phone")');
  if (trimmed.length > LABEL_MAX) throw new UsageError(`--label: at most ${LABEL_MAX} characters`);
  if (/[\u0000-\u001f\u007f]/.test(trimmed)) throw new UsageError('--label: control characters are not allowed');
  return trimmed;
}

/** Creates a token, stores its hash, and returns the token (the only time it exists in clear). */
export async function mintAdminToken(store: OpsStore, label: string, now = new Date()): Promise<{ id: number; token: string; label: string }> {
  const clean = checkLabel(label);
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const id = await store.addAdminToken({ hash: hashToken(token), label: clean, createdAt: now });
  return { id, token, label: clean };
}

/** Compares two SHA-256 hex strings without an early exit. */
function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

export class AdminTokens {
  /** token id -> when its lastUsedAt was last written (writes at most once a minute per token) */
  private readonly touched = new Map<number, number>();

  constructor(
    private readonly store: OpsStore,
    private readonly touchEveryMs = 60_000,
  ) {}

  /** The stored token matching `hash`, compared against every stored hash in constant time. */
  async findByHash(hash: string, now = new Date()): Promise<AdminTokenRecord | undefined> {
    const tokens = await this.store.listAdminTokens();
    let match: AdminTokenRecord | undefined;
    // No early exit: the time taken does not depend on which stored hash (if any) matched.
    for (const t of tokens) if (sameHash(t.hash, hash) && !match) match = t;
    if (match) {
      const last = this.touched.get(match.id) ?? 0;
      if (now.getTime() - last >= this.touchEveryMs) {
        this.touched.set(match.id, now.getTime());
        await this.store.useAdminToken(match.hash, now);
      }
    }
    return match;
  }

  /** The stored token for a presented token text, if valid. */
  async verify(token: string, now = new Date()): Promise<AdminTokenRecord | undefined> {
    if (!looksLikeToken(token)) return undefined;
    return this.findByHash(hashToken(token), now);
  }
}

interface Session {
  tokenHash: string;
  expiresAt: number;
}

/** Browser sessions opened by logging in with a token. Bounded; the oldest goes first. */
export class AdminSessions {
  private readonly sessions = new Map<string, Session>();

  constructor(
    readonly ttlMs = 12 * 3_600_000,
    private readonly max = 1_000,
  ) {}

  open(tokenHash: string, now = Date.now()): string {
    this.sweep(now);
    while (this.sessions.size >= this.max) {
      const oldest = this.sessions.keys().next().value;
      if (oldest === undefined) break;
      this.sessions.delete(oldest);
    }
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, { tokenHash, expiresAt: now + this.ttlMs });
    return id;
  }

  /** The token hash behind a live session id. The id is a random 256-bit key: a map lookup
   * leaks nothing an attacker could use. */
  tokenHashOf(id: string, now = Date.now()): string | undefined {
    const session = this.sessions.get(id);
    if (!session) return undefined;
    if (session.expiresAt <= now) {
      this.sessions.delete(id);
      return undefined;
    }
    return session.tokenHash;
  }

  close(id: string): void {
    this.sessions.delete(id);
  }

  private sweep(now: number): void {
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
  }

  get size(): number {
    return this.sessions.size;
  }
}
