// The engine's optional guard hook (`warpstone stone --ban-home`): one synchronous question at
// accept (is this source banned?) and two things the engine tells it (a client refused by a
// stone's xhost list, a connection or datagram dropped as banned). Without a hook the engine
// behaves exactly as before (stone compatibility: no store, no extra lines).
// Owns: the hook's shape. Must not: know how bans are counted or stored (stone-bans.ts does).

/** What the engine asks and tells; every method must answer from memory, at once. */
export interface StoneAdmission {
  /** asked before any work for a new client or datagram (no ident, no TLS, no destination) */
  isBanned(remoteAddress: string | undefined): boolean;
  /** a TCP client refused by the stone's access list (xhost) */
  xhostDenied(remoteAddress: string, remotePort: number, detail: string): void;
  /** a connection or datagram was dropped because its source is banned */
  dropped(remoteAddress: string, remotePort: number): void;
  /** called once, after every listener closed */
  close(): Promise<void>;
}
