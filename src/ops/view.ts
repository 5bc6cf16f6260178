// What the operations side (metrics, admin HTTP, dashboard) may see of a running relay: a
// read-only view the relay implements. The ops parts read through it and the event bus; they
// never reach into the relay's objects, and nothing here can change policy or close streams.
// Owns: the OpsView contract and its small record shapes. Must not: hold behaviour.
import type { RelayStatus } from '../relay/admin.js';
import type { LimitScope, OpsStore } from '../store/ops-store.js';
import { StateError } from '../common/errors.js';

export type { RelayStatus };

/**
 * One token bucket as the shaper sees it right now. `state` says which rate applies:
 * `burst` while credits last (up to the maximum rate), `baseline` once they ran out.
 */
export interface ShapingSnapshot {
  scope: LimitScope;
  name: string;
  /** credits left, in bytes */
  credits: number;
  creditCap: number;
  /** the rate actually used over the last second */
  rateBytesPerSecond: number;
  state: 'burst' | 'baseline';
}

export interface OpsView {
  /** Agents, tunnels and live streams, the same shape `warpstone status` prints. */
  status(): Promise<RelayStatus>;
  /** Bans, audit, target health, sightings, limits and admin tokens. */
  readonly store: OpsStore;
  /** The shaper's buckets, when shaping runs; absent or [] otherwise. */
  shaping?(): ShapingSnapshot[];
  /** True once every relay listener is bound (and until shutdown begins). */
  listening(): boolean;
  /** Resolves when the store answers a trivial query; rejects otherwise. Defaults to
   * `store.listLimits()` when absent. */
  storeReachable?(): Promise<void>;
}

const OPS_STORE_METHODS = ['listBans', 'queryAudit', 'listTargetHealth', 'listSightings', 'listLimits', 'addAdminToken', 'useAdminToken', 'listAdminTokens', 'removeAdminToken'] as const;

/**
 * The relay's store as an OpsStore, or a clear error when this build's store does not keep the
 * operations tables yet (so `warpstone admin token` says why instead of failing on a missing
 * method).
 */
export function requireOpsStore(store: object): OpsStore {
  const missing = OPS_STORE_METHODS.filter((m) => typeof (store as Record<string, unknown>)[m] !== 'function');
  if (missing.length > 0) {
    throw new StateError(`this store does not keep admin tokens, bans or audit records (missing ${missing.join(', ')})`, 'WS_NO_OPS_STORE');
  }
  return store as OpsStore;
}
