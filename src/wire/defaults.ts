// Every tunable of the relay<->agent<->client data path, in one place, with the reason for its
// value. Other parts import these rather than hard-coding a window, a limit or a timeout.
// Owns: default numbers. Must not: import anything.

export const DEFAULTS = {
  /** TCP/TLS port of the relay: agents and clients share it. */
  relayPort: 7443,
  /**
   * HTTP/2 stream flow-control window. Node's default (64 KiB) caps one stream at
   * window/RTT; 4 MiB lets a single stream fill a fast link while still bounding what a slow
   * reader can make the relay hold for it.
   */
  streamWindow: 4 * 1024 * 1024,
  /**
   * HTTP/2 connection window: bytes in flight per TLS connection over all streams. Node credits
   * it on receipt, so it is not a memory cap; what a slow reader can make us hold is bounded per
   * stream (streamWindow each way) times the open streams (maxConcurrentStreams).
   */
  connectionWindow: 16 * 1024 * 1024,
  /** Largest HTTP/2 frame we accept (the protocol minimum is 16 KiB, max 16 MiB). */
  maxFrameSize: 64 * 1024,
  /** Concurrent streams one client or agent connection may hold. */
  maxConcurrentStreams: 10_000,
  /** Bytes of HTTP/2 header block we accept: tunnel names are short. */
  maxHeaderListSize: 16 * 1024,
  /** A TLS handshake that has not finished by then is dropped. */
  handshakeTimeoutMs: 10_000,
  /** A VPN-Warp `CONNECT` request head must arrive within this time ... */
  connectHeadTimeoutMs: 10_000,
  /** ... and within this many bytes. */
  connectHeadMaxBytes: 8 * 1024,
  /** The agent's connect() to an exposed target gives up after this long. */
  targetConnectTimeoutMs: 10_000,
  /** Opening a stream through the relay (policy + agent round trip) gives up after this long. */
  streamOpenTimeoutMs: 15_000,
  /** A stream with no bytes either way for this long is closed (0 = never). */
  streamIdleTimeoutMs: 2 * 60 * 60 * 1000,
  /** Relay and agent ping each other this often; a missed answer drops the connection. */
  pingIntervalMs: 15_000,
  pingTimeoutMs: 10_000,
  /** How often the relay re-reads revocations and grants from the store. */
  policyPollMs: 1_000,
  /** Agent reconnect backoff: first delay, cap, and the jitter fraction. */
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
  backoffJitter: 0.5,
  /** After this long connected, the agent's backoff starts again from the first delay. */
  backoffResetAfterMs: 60_000,
  /** How long a stopping agent waits for the relay to acknowledge its close. */
  shutdownGraceMs: 2_000,
  /** nghttp2's memory cap per HTTP/2 session, in MB (Node's default is 10). */
  maxSessionMemoryMb: 64,
  /** Largest hello or registration body exchanged on an agent link. */
  controlBodyMaxBytes: 64 * 1024,
  /** TCP keep-alive on the agent's link, so NAT boxes keep the mapping. */
  tcpKeepAliveMs: 30_000,
  /** After a refusal answer, the connection is closed at the latest after this long. */
  refusalLingerMs: 2_000,
} as const;

export type Defaults = typeof DEFAULTS;

/** Settings sent on every HTTP/2 session we create (client or server side). */
export function h2Settings(): {
  initialWindowSize: number;
  maxFrameSize: number;
  maxConcurrentStreams: number;
  maxHeaderListSize: number;
  enablePush: boolean;
} {
  return {
    initialWindowSize: DEFAULTS.streamWindow,
    maxFrameSize: DEFAULTS.maxFrameSize,
    maxConcurrentStreams: DEFAULTS.maxConcurrentStreams,
    maxHeaderListSize: DEFAULTS.maxHeaderListSize,
    enablePush: false,
  };
}
