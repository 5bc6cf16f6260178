// Parsing and printing of HOST:PORT addresses, IPv6 in brackets ("[::1]:7443").
// Owns: address syntax. Must not: resolve names or open sockets.
import { isIPv6 } from 'node:net';
import { UsageError } from './errors.js';

export interface HostPort {
  host: string;
  port: number;
}

export function parsePort(text: string, what: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text)) throw new UsageError(`${what}: '${text}' is not a port number (1-65535)`);
  const port = Number(text);
  if (port === 0 && allowZero) return 0;
  if (port < 1 || port > 65535) throw new UsageError(`${what}: port ${port} is out of range (1-65535)`);
  return port;
}

/**
 * Parses "host:port", "[v6]:port", or (with defaultHost) ":port" and "port".
 * `what` names the flag in error messages; `allowZero` admits port 0 (listen on any free port).
 */
export function parseHostPort(text: string, what: string, defaultHost?: string, allowZero = false): HostPort {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    const close = trimmed.indexOf(']');
    if (close < 0 || trimmed[close + 1] !== ':') {
      throw new UsageError(`${what}: '${text}' should look like [IPv6]:PORT, e.g. [::1]:7443`);
    }
    const host = trimmed.slice(1, close);
    if (!isIPv6(host)) throw new UsageError(`${what}: '${host}' is not an IPv6 address`);
    return { host, port: parsePort(trimmed.slice(close + 2), what, allowZero) };
  }
  const colon = trimmed.lastIndexOf(':');
  if (colon < 0) {
    if (defaultHost !== undefined) return { host: defaultHost, port: parsePort(trimmed, what, allowZero) };
    throw new UsageError(`${what}: '${text}' has no port; write HOST:PORT`);
  }
  if (trimmed.indexOf(':') !== colon) {
    throw new UsageError(`${what}: '${text}' looks like an IPv6 address; write it in brackets, e.g. [::1]:7443`);
  }
  const host = trimmed.slice(0, colon);
  if (host === '' && defaultHost === undefined) throw new UsageError(`${what}: '${text}' has no host`);
  return { host: host === '' ? (defaultHost as string) : host, port: parsePort(trimmed.slice(colon + 1), what, allowZero) };
}

export function formatHostPort(hp: HostPort): string {
  return isIPv6(hp.host) ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** "1.2.3.4:5" / "[::1]:5" from a socket's remote address fields. */
export function formatAddress(address: string | undefined, port: number | undefined): string {
  if (!address) return 'unknown';
  return formatHostPort({ host: address.replace(/^::ffff:/, ''), port: port ?? 0 });
}
