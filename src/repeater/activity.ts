// Process-wide clocks stone keeps for its health port (`LIMIT ESTABLISHED`, `LIMIT READWRITE`,
// `CLOCK`): when a connection to a destination last completed and when bytes last moved.
// stone starts both at 0 (the epoch), so before any traffic they read as "decades ago".
// Owns: these two numbers per engine. Must not: log or touch sockets.
export class Activity {
  /** seconds since the epoch */
  lastEstablished = 0;
  lastReadWrite = 0;

  established(): void {
    this.lastEstablished = Math.floor(Date.now() / 1000);
  }

  readWrite(): void {
    this.lastReadWrite = Math.floor(Date.now() / 1000);
  }
}
