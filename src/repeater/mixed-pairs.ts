// What the two mixed stones (tcp-to-udp.ts, udp-to-stream.ts) share: stone's flag words for
// their `established` lines, byte counters, and the bound on what may wait for a stream.
// Owns: these constants. Must not: touch sockets.
import { PROTO } from './logline.js';

/** bytes allowed to wait in a stream's write buffer before datagrams for it are dropped */
export const STREAM_BACKLOG_BYTES = 256 * 1024;

/** stone's flag words in the `established` line of the two mixed pairs */
export const ESTABLISHED = {
  /** TCP client, UDP destination: 00035f00 00038000 */
  tcpToUdp: {
    source: PROTO.commandSource | PROTO.connect | PROTO.dirty | PROTO.firstRead | PROTO.firstWrite,
    dest: PROTO.dgram | PROTO.firstRead | PROTO.firstWrite,
  },
  /** UDP client, TCP destination with the first datagram queued: 0000df00 000b1000 */
  udpToTcp: {
    source: PROTO.commandSource | PROTO.connect | PROTO.dirty | PROTO.dgram,
    dest: PROTO.selectWrite | PROTO.firstRead | PROTO.firstWrite | PROTO.dirty,
  },
} as const;

export interface Counts {
  rx: number;
  tx: number;
  loops: number;
}
