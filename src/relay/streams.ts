// Live streams passing through the relay: who opened them, to which tunnel, bytes each way.
// `status` reads it; revocation and shutdown close entries from it.
// Owns: the live-stream table. Must not: decide policy.
import type { SpliceHandle } from '../common/splice.js';

export interface LiveStream {
  id: number;
  user: string;
  userSerial: string;
  agent: string;
  agentSerial: string;
  tunnel: string;
  source: string;
  via: 'h2' | 'connect';
  openedAt: Date;
  handle: SpliceHandle;
}

export interface LiveStreamView {
  id: number;
  user: string;
  agent: string;
  tunnel: string;
  source: string;
  via: string;
  openedAt: string;
  bytesIn: number;
  bytesOut: number;
}

export class LiveStreams {
  private nextId = 1;
  private readonly streams = new Map<number, LiveStream>();

  add(entry: Omit<LiveStream, 'id'>): LiveStream {
    const stream = { ...entry, id: this.nextId++ };
    this.streams.set(stream.id, stream);
    void stream.handle.done.then(() => this.streams.delete(stream.id));
    return stream;
  }

  get size(): number {
    return this.streams.size;
  }

  /** Closes every stream matching `predicate`; returns how many. */
  closeWhere(predicate: (s: LiveStream) => boolean, reason: string): number {
    let count = 0;
    for (const stream of this.streams.values()) {
      if (predicate(stream)) {
        stream.handle.destroy(new Error(reason));
        count += 1;
      }
    }
    return count;
  }

  view(): LiveStreamView[] {
    return [...this.streams.values()].map((s) => ({
      id: s.id,
      user: s.user,
      agent: s.agent,
      tunnel: s.tunnel,
      source: s.source,
      via: s.via,
      openedAt: s.openedAt.toISOString(),
      // "in" = from the client towards the service; "out" = back to the client
      bytesIn: s.handle.counters.aToB,
      bytesOut: s.handle.counters.bToA,
    }));
  }
}
