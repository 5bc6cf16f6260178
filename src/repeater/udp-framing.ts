// stone's framing of datagrams on the TCP side of a TCP<->UDP pair: each datagram travels as a
// 2-byte big-endian length followed by that many bytes (stone's UDP_HEAD_LEN). Pure: no sockets.
// Owns: frame() and the incremental Deframer. Must not: touch sockets or log.
import { WarpstoneError } from '../common/errors.js';

/** stone's UDP_HEAD_LEN */
export const FRAME_HEAD_BYTES = 2;
/** the largest payload a 2-byte length can carry */
export const MAX_FRAME_PAYLOAD = 0xffff;

export class FrameTooLargeError extends WarpstoneError {
  constructor(length: number) {
    super('WS_STONE_DATAGRAM_SIZE', `a datagram of ${length} bytes cannot be framed (at most ${MAX_FRAME_PAYLOAD})`);
  }
}

/** The TCP bytes of one datagram: its length (2 bytes, big endian), then the payload. */
export function frame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new FrameTooLargeError(payload.length);
  const out = Buffer.allocUnsafe(FRAME_HEAD_BYTES + payload.length);
  out.writeUInt16BE(payload.length, 0);
  out.set(payload, FRAME_HEAD_BYTES);
  return out;
}

/**
 * Cuts a TCP byte stream into datagrams. Holds at most one incomplete frame (<= 65537 bytes), so
 * its memory is bounded whatever the peer sends.
 */
export class Deframer {
  private held: Buffer = Buffer.alloc(0);

  /** The datagrams completed by `chunk`, in order (each a copy-free view where possible). */
  push(chunk: Buffer): Buffer[] {
    let data = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const out: Buffer[] = [];
    while (data.length >= FRAME_HEAD_BYTES) {
      const length = data.readUInt16BE(0);
      if (data.length < FRAME_HEAD_BYTES + length) break;
      out.push(data.subarray(FRAME_HEAD_BYTES, FRAME_HEAD_BYTES + length));
      data = data.subarray(FRAME_HEAD_BYTES + length);
    }
    // copy the remainder so a small tail does not pin a large chunk
    this.held = data.length === 0 ? Buffer.alloc(0) : Buffer.from(data);
    return out;
  }

  /** bytes of an incomplete frame waiting for the rest */
  get pending(): number {
    return this.held.length;
  }
}
