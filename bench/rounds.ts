// Repeated, interleaved measurements: every peer is measured once per round, peers in turn, so
// a burst of unrelated load on the machine hits all of them alike instead of one; each peer's
// best round is kept (the least disturbed one), all rounds go to results.json.
// Owns: round-robin scheduling and picking the best round. Must not: know the measurements.
import type { Peer } from './peer.ts';

export interface Attempt<T> {
  result: T | undefined;
  error?: string;
}

export async function attempt<T>(work: () => Promise<T>, onError: (message: string) => void): Promise<Attempt<T>> {
  try {
    return { result: await work() };
  } catch (err) {
    const message = (err as Error).message.split('\n')[0] ?? 'failed';
    onError(message);
    return { result: undefined, error: message };
  }
}

/**
 * Runs `measure` for each peer, `rounds` times round-robin; returns per peer the best result by
 * `score` (higher is better) plus every round's result.
 */
export async function bestOfRounds<P extends Peer, T>(
  peers: P[],
  rounds: number,
  measure: (peer: P) => Promise<Attempt<T>>,
  score: (t: T) => number,
): Promise<Array<{ peer: P; best: Attempt<T>; all: Array<Attempt<T>> }>> {
  const all = new Map<P, Array<Attempt<T>>>(peers.map((p) => [p, []]));
  for (let round = 0; round < rounds; round++) {
    for (const peer of peers) all.get(peer)?.push(await measure(peer));
  }
  return peers.map((peer) => {
    const tries = all.get(peer) ?? [];
    const ok = tries.filter((t): t is Attempt<T> & { result: T } => t.result !== undefined);
    const best = ok.length > 0 ? ok.reduce((a, b) => (score(b.result) > score(a.result) ? b : a)) : (tries[tries.length - 1] ?? { result: undefined, error: 'not run' });
    return { peer, best, all: tries };
  });
}
