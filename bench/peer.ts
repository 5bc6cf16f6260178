// What every compared path ("peer") looks like to the measurements: the local ports that lead
// to the iperf3 and echo services, the commands that built it (quoted in docs/BENCHMARKS.md),
// the processes on the path (for CPU shares) and the middle hop whose memory is compared.
// Owns: the Peer shape. Must not: start anything.
import type { Watched } from './procfs.ts';

export type PeerKey = 'direct' | 'warpstone' | 'ssh' | 'stone' | 'stone16k';

export interface Peer {
  key: PeerKey;
  label: string;
  /** local port that reaches the iperf3 server through this peer */
  iperfPort: number;
  /** local port that reaches the echo server through this peer (absent: not measured) */
  echoPort?: number;
  /** shell commands, with symbolic ports, as a user would type them */
  commands: string[];
  /** processes on the data path to each service, for CPU shares */
  watched: { iperf: Watched[]; echo: Watched[] };
  /** the middle hop (relay, sshd) whose RSS per idle stream is compared */
  middle?: Watched;
}
