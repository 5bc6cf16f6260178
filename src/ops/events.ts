// The relay's event bus: what happened, in one typed vocabulary, so the guard (bans, audit),
// metrics, alerts and the dashboard each subscribe instead of being called from the data path.
// Emitting is synchronous and cheap; subscribers must not throw and must not block (queue work
// and return). Like fastify's hooks: the relay knows it emits, never who listens.
// Owns: event names and payload shapes. Must not: hold behaviour beyond delivery.
import { EventEmitter } from 'node:events';

/** Why a connection or stream was refused; stable words used as metric labels (bounded set). */
export type FailureReason =
  | 'tls-no-certificate'
  | 'tls-unknown-ca'
  | 'tls-expired'
  | 'tls-not-yet-valid'
  | 'tls-revoked'
  | 'tls-unknown-certificate'
  | 'tls-handshake'
  | 'unknown-tunnel'
  | 'not-granted'
  | 'tunnel-offline'
  | 'target-refused'
  | 'bad-request'
  | 'db-mismatch'
  | 'db-unknown-user'
  | 'xhost-denied';

export interface RelayEventMap {
  /** a source failed in a way that counts towards a ban */
  failure: { time: Date; source: string; reason: FailureReason; identity?: string; tunnel?: string; detail: string };
  /** a connection was dropped at accept because its source is banned (no TLS work done) */
  'banned-drop': { time: Date; source: string };
  'ban-issued': { time: Date; address: string; until: Date; failures: number; offence: number; reason: string };
  'ban-lifted': { time: Date; address: string; by: 'expiry' | 'admin' };
  'handshake-ok': { time: Date; source: string; identity: string; role: string; resumed: boolean };
  'stream-open': { time: Date; id: number; identity: string; source: string; tunnel: string; agent: string; target?: string };
  'stream-refused': { time: Date; identity: string; source: string; tunnel: string; status: number; reason: FailureReason; message: string };
  'stream-close': {
    time: Date;
    id: number;
    identity: string;
    source: string;
    tunnel: string;
    agent: string;
    bytesIn: number;
    bytesOut: number;
    durationMs: number;
    reason: string;
  };
  /** bytes moved since the last tick, per tunnel and direction (for I/O graphs and metrics) */
  'bytes': { tunnel: string; identity: string; up: number; down: number };
  'agent-connected': { time: Date; agent: string; address: string; previousAddress?: string };
  'agent-lost': { time: Date; agent: string; address: string; reason: string };
  'address-changed': { time: Date; agent: string; from: string; to: string };
  'target-health': { time: Date; agent: string; tunnel: string; state: 'up' | 'down'; detail: string };
  'credits-exhausted': { time: Date; scope: 'tunnel' | 'user'; name: string; baselineBytesPerSecond: number };
  'credits-restored': { time: Date; scope: 'tunnel' | 'user'; name: string };
}

export type RelayEventName = keyof RelayEventMap;

export class RelayEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    // many independent subscribers (metrics, audit, bans, alerts, dashboard) are normal
    this.emitter.setMaxListeners(50);
  }

  emit<K extends RelayEventName>(name: K, payload: RelayEventMap[K]): void {
    this.emitter.emit(name, payload);
  }

  on<K extends RelayEventName>(name: K, listener: (payload: RelayEventMap[K]) => void): () => void {
    const wrapped = (payload: RelayEventMap[K]): void => {
      try {
        listener(payload);
      } catch {
        // a broken subscriber must never break the data path; subscribers log their own errors
      }
    };
    this.emitter.on(name, wrapped);
    return () => this.emitter.off(name, wrapped);
  }
}
