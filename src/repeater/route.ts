// Where a stone sends one new connection or datagram: a resolved address (IP + port, or a UNIX
// socket path) and the text stone prints for it in its `connecting to` line. Shared by the TCP,
// UDP and UNIX-socket paths and by failover.ts, which picks one route per connection.
// Owns: the Address/Route shapes and address equality (stone's saComp: family, address, port).
// Must not: resolve names, open sockets or log.
import { parseIpAddress } from './xhost.js';

export type Address =
  | { readonly kind: 'inet'; readonly host: string; readonly port: number; readonly family: 4 | 6 }
  | { readonly kind: 'unix'; readonly path: string };

export interface Route {
  readonly address: Address;
  /** the destination as stone prints it when connecting (`127.0.0.1:http-alt`, `unix:/run/x.sock`) */
  readonly printed: string;
}

/** stone's saComp(): same family, same address bytes, same port (UNIX paths: same path). */
export function sameAddress(a: Address, b: Address): boolean {
  if (a.kind === 'unix' || b.kind === 'unix') return a.kind === b.kind && a.kind === 'unix' && b.kind === 'unix' && a.path === b.path;
  if (a.family !== b.family || a.port !== b.port) return false;
  const x = parseIpAddress(a.host);
  const y = parseIpAddress(b.host);
  if (!x || !y) return a.host === b.host;
  return x.bytes.length === y.bytes.length && x.bytes.every((v, i) => v === y.bytes[i]);
}

/** `host:port` or the path, for messages of our own (not stone's format). */
export function addressText(a: Address): string {
  if (a.kind === 'unix') return a.path;
  return a.family === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
