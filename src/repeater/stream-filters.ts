// Byte filters a stone applies to one direction of a TCP pair, as stone 2.4 does them:
// - `/base` (proto_base_s/_d): stone base64-encodes each chunk it read on its own (and, when the
//   encoding does not already end in `=`, appends one `=`), and decodes leniently: characters
//   outside the alphabet are skipped, a `=` at the start of a quad is skipped, a partial quad is
//   kept for the next chunk. Encoded text therefore depends on read sizes; decoded bytes do not.
// - `/proxy <header>` and `/mproxy <header>` (command_ihead/iheads, insheader): the expanded
//   header plus CRLF is inserted after the first line break sent to the destination; `/mproxy`
//   does it again for the next request, which stone takes to begin with the first client bytes
//   after reply bytes went to the client.
// Owns: these transforms (pure, per pair). Must not: touch sockets or log.

export interface ByteFilter {
  /** bytes to write for bytes read (may be empty) */
  transform(chunk: Buffer): Buffer;
  /** reply bytes went the other way (only /mproxy cares) */
  replySeen?(): void;
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const PAD = 254;
const BAD = 255;
const INDEX = new Uint8Array(256).fill(BAD);
for (let i = 0; i < ALPHABET.length; i++) INDEX[ALPHABET.charCodeAt(i)] = i;
INDEX[0x3d] = PAD;

/** stone's baseEncode of one chunk: standard base64, plus `=` when it does not end in one. */
export function stoneBase64Encode(chunk: Buffer): Buffer {
  if (chunk.length === 0) return chunk;
  const text = chunk.toString('base64');
  return Buffer.from(text.endsWith('=') ? text : `${text}=`, 'latin1');
}

/** stone's baseDecode, keeping an unfinished quad between chunks. */
export class Base64Decoder implements ByteFilter {
  private readonly quad: number[] = [];

  transform(chunk: Buffer): Buffer {
    const out: number[] = [];
    for (const byte of chunk) {
      const v = INDEX[byte] as number;
      if (v === BAD) continue;
      if (this.quad.length === 0 && v === PAD) continue;
      this.quad.push(v);
      if (this.quad.length < 4) continue;
      const [a, b, c, d] = this.quad as [number, number, number, number];
      this.quad.length = 0;
      out.push(((a << 2) | ((b & 0x30) >> 4)) & 0xff);
      if (c === PAD) continue;
      out.push((((b & 0x0f) << 4) | ((c & 0x3c) >> 2)) & 0xff);
      if (d === PAD) continue;
      out.push((((c & 0x03) << 6) | d) & 0xff);
    }
    return Buffer.from(out);
  }
}

export class Base64Encoder implements ByteFilter {
  transform(chunk: Buffer): Buffer {
    return stoneBase64Encode(chunk);
  }
}

/** `/proxy` (once) or `/mproxy` (per request): insert `line\r\n` after the first line break. */
export class HeaderInserter implements ByteFilter {
  private seeking = true;

  constructor(
    /** the expanded header for this client (escapes.ts expandTemplate), without CRLF */
    private readonly line: string,
    private readonly everyRequest: boolean,
  ) {}

  transform(chunk: Buffer): Buffer {
    if (!this.seeking) return chunk;
    const nl = chunk.indexOf(0x0a);
    if (nl < 0) return chunk; // stone writes a partial first line as it is and looks again
    this.seeking = false;
    return Buffer.concat([chunk.subarray(0, nl + 1), Buffer.from(`${this.line}\r\n`, 'latin1'), chunk.subarray(nl + 1)]);
  }

  replySeen(): void {
    if (this.everyRequest) this.seeking = true;
  }
}

/** Runs filters one after the other (e.g. insert a header, then base64-encode). */
export function chain(filters: readonly ByteFilter[]): ByteFilter | undefined {
  if (filters.length === 0) return undefined;
  if (filters.length === 1) return filters[0];
  return {
    transform: (chunk) => filters.reduce((c, f) => f.transform(c), chunk),
    replySeen: () => {
      for (const f of filters) f.replySeen?.();
    },
  };
}
