// Live streams passing through the relay: who opened them, to which tunnel, bytes each way.
// `status` reads it; revocation and shutdown close entries from it; once a second the relay asks
// it for the bytes moved since the last ask, per tunnel and identity (the 'bytes' event), read
// from the splices' own counters, so the data path does no extra work per chunk.
// Owns: the live-stream table and the byte tallies. Must not: decide policy.
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

/** Bytes moved by one identity through one tunnel since the last tally. */
export interface ByteTally {
  tunnel: string;
  identity: string;
  /** client -> service */
  up: number;
  /** service -> client */
  down: number;
}

interface Entry extends LiveStream {
  /** counter values already handed out by tallyBytes */
  reportedUp: number;
  reportedDown: number;
}

export class LiveStreams {
  private nextId = 1;
  private readonly streams = new Map<number, Entry>();
  /** bytes of streams that closed since the last tally, not yet handed out */
  private readonly closedTallies = new Map<string, ByteTally>();

  add(entry: Omit<LiveStream, 'id'>): LiveStream {
    const stream: Entry = { ...entry, id: this.nextId++, reportedUp: 0, reportedDown: 0 };
    this.streams.set(stream.id, stream);
    void stream.handle.done.then((result) => {
      this.streams.delete(stream.id);
      addTally(this.closedTallies, stream, result.aToB - stream.reportedUp, result.bToA - stream.reportedDown);
    });
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

  /** Bytes moved since the previous call, per tunnel and identity; only pairs that moved any. */
  tallyBytes(): ByteTally[] {
    const out = new Map<string, ByteTally>(this.closedTallies);
    this.closedTallies.clear();
    for (const s of this.streams.values()) {
      const { aToB, bToA } = s.handle.counters;
      const up = aToB - s.reportedUp;
      const down = bToA - s.reportedDown;
      if (up === 0 && down === 0) continue;
      s.reportedUp = aToB;
      s.reportedDown = bToA;
      addTally(out, s, up, down);
    }
    return [...out.values()];
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

function addTally(into: Map<string, ByteTally>, s: LiveStream, up: number, down: number): void {
  if (up === 0 && down === 0) return;
  const key = `${s.tunnel}\u0000${s.user}`;
  const tally = into.get(key);
  if (tally) {
    tally.up += up;
    tally.down += down;
  } else {
    into.set(key, { tunnel: s.tunnel, identity: s.user, up, down });
  }
}
