// Who is at the other end of a UNIX-domain socket: the peer's pid, uid and gid from the kernel
// (SO_PEERCRED, Linux), read through the small N-API addon in native/peercred, plus uid → user
// name through getent (so NSS users from LDAP or sssd resolve too). The same addon also looks up
// one TCP socket by its 4-tuple (netlink sock_diag); its typed entry point is sockDiagFunctions().
// Owns: loading the addon, the fd of a net.Socket, uid → name lookups. Must not: make access
// decisions, open or close sockets, or build the addon itself.
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type net from 'node:net';
import { WarpstoneError, errorCode, errorMessage } from '../common/errors.js';

export interface PeerCredentials {
  /** 0 when the peer lives in another PID namespace */
  pid: number;
  uid: number;
  gid: number;
}

export interface Peer extends PeerCredentials {
  /** the uid's login name, when the system knows one */
  user?: string;
}

/**
 * One TCP socket as the kernel's sock_diag reports it. Addresses are in network order: 4 bytes
 * for family 4, 16 for family 6 (an IPv6 socket carrying IPv4 shows ::ffff:a.b.c.d).
 */
export interface TcpDiagSocket {
  family: 4 | 6;
  /** the kernel's TCP state: 1 ESTABLISHED ... 6 TIME_WAIT, 7 CLOSE, 10 LISTEN, 12 NEW_SYN_RECV */
  state: number;
  /** meaningless (0) when inode is 0: TIME_WAIT, request and orphaned sockets have no owner */
  uid: number;
  inode: number;
  /** the device the socket is bound to, 0 for none */
  ifindex: number;
  local: Buffer;
  localPort: number;
  remote: Buffer;
  remotePort: number;
}

/** The addon's netlink sock_diag calls (native/peercred/peercred.c says what each one does). */
export interface SockDiagFunctions {
  /**
   * The socket with exactly this 4-tuple (and bound to `ifindex`, 0 = unbound), or null when the
   * kernel has none. The kernel may answer with a listener of the local port instead: callers
   * compare the 4-tuple. Trust a null only after tcpDiagProbe succeeded.
   */
  tcpDiagLookup(family: 4 | 6, local: Buffer, localPort: number, remote: Buffer, remotePort: number, ifindex: number): TcpDiagSocket | null;
  /** Throws (WS_SOCKDIAG_FAILED, with errno) unless the kernel's diag handler for family/protocol (default TCP) answers. */
  tcpDiagProbe(family: 4 | 6, protocol?: number): void;
  /** The interface indexes of this network namespace. */
  interfaceIndexes(): number[];
}

/** The functions of an addon built from older source lack the sock_diag ones, hence Partial. */
export interface PeercredAddon extends Partial<SockDiagFunctions> {
  peerCredentials(fd: number): PeerCredentials;
}

/** The addon cannot be loaded (not built, built for another Node, wrong platform). */
export class PeerCredentialsUnavailable extends WarpstoneError {
  readonly path: string;
  constructor(path: string, why: string, cause?: unknown) {
    super(
      'WS_PEERCRED_UNAVAILABLE',
      `peer credentials of UNIX-socket clients need the native addon ${path}, which cannot be loaded (${why}); ` +
        `build it with 'npm run build:native' (needs python3, make and a C compiler, like better-sqlite3)`,
      { cause },
    );
    this.path = path;
  }
}

/** Reading the credentials of one socket failed (not a UNIX socket, already closed, ...). */
export class PeerCredentialsError extends WarpstoneError {}

/** Where `npm run build:native` puts the addon; the same from src/identity and dist/identity. */
export const DEFAULT_ADDON_PATH = fileURLToPath(new URL('../../native/peercred/build/Release/peercred.node', import.meta.url));

const require = createRequire(import.meta.url);

/**
 * Loads the addon at `path` (tests pass a wrong path to see the error). Throws
 * PeerCredentialsUnavailable, never a bare loader error.
 */
export function loadPeercredAddon(path: string = DEFAULT_ADDON_PATH): PeercredAddon {
  let loaded: unknown;
  try {
    loaded = require(path);
  } catch (err) {
    const code = errorCode(err);
    const why =
      code === 'MODULE_NOT_FOUND' || (code === 'ERR_DLOPEN_FAILED' && /No such file/.test(errorMessage(err)))
        ? 'it has not been built'
        : `loading failed: ${errorMessage(err)}`;
    throw new PeerCredentialsUnavailable(path, why, err);
  }
  if (!loaded || typeof loaded !== 'object' || !('peerCredentials' in loaded) || typeof loaded.peerCredentials !== 'function') {
    throw new PeerCredentialsUnavailable(path, 'the file does not export peerCredentials()');
  }
  return loaded as PeercredAddon;
}

let addon: PeercredAddon | undefined;

/** The default addon, loaded on first use. A failed load is retried next time (it may get built). */
export function peercredAddon(): PeercredAddon {
  addon ??= loadPeercredAddon();
  return addon;
}

/** The addon's sock_diag calls cannot be used (no addon, or one built before they existed). */
export class SockDiagUnavailable extends WarpstoneError {
  constructor(why: string, cause?: unknown) {
    super('WS_SOCKDIAG_UNAVAILABLE', `netlink sock_diag lookups are unavailable: ${why}`, { cause });
  }
}

/** The sock_diag calls of `loaded` (default: the default addon). Throws SockDiagUnavailable. */
export function sockDiagFunctions(loaded?: PeercredAddon): SockDiagFunctions {
  let addonNow: PeercredAddon;
  try {
    addonNow = loaded ?? peercredAddon();
  } catch (err) {
    throw new SockDiagUnavailable(errorMessage(err), err);
  }
  const { tcpDiagLookup, tcpDiagProbe, interfaceIndexes } = addonNow;
  if (typeof tcpDiagLookup !== 'function' || typeof tcpDiagProbe !== 'function' || typeof interfaceIndexes !== 'function') {
    throw new SockDiagUnavailable(`the native addon was built from older source without them; rebuild it with 'npm run build:native'`);
  }
  return { tcpDiagLookup, tcpDiagProbe, interfaceIndexes };
}

/**
 * The descriptor under a net.Socket. `_handle` is Node's internal libuv wrapper (TCP or Pipe);
 * it is not in @types/node, so it is read through this narrow shape, never through `any`.
 * TLS sockets have no descriptor of their own: pass the underlying net.Socket.
 */
interface SocketWithHandle {
  _handle?: { fd?: unknown } | null;
}

export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as SocketWithHandle)._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new PeerCredentialsError(
      'WS_PEERCRED_NO_FD',
      socket.destroyed
        ? 'the socket is already closed, so its peer credentials cannot be read'
        : 'this socket has no file descriptor of its own (a TLS socket? pass the underlying net.Socket)',
    );
  }
  return fd;
}

/**
 * The credentials of the process that connected `socket` (a UNIX-domain stream socket), as the
 * kernel recorded them at connect() time, and its user name. Throws PeerCredentialsUnavailable
 * when the addon is missing and PeerCredentialsError when the socket has no peer credentials.
 */
export function peerOf(socket: net.Socket, loaded: PeercredAddon = peercredAddon()): Peer {
  const fd = socketFd(socket);
  let creds: PeerCredentials;
  try {
    creds = loaded.peerCredentials(fd);
  } catch (err) {
    throw new PeerCredentialsError(errorCode(err) ?? 'WS_PEERCRED_FAILED', `peer credentials: ${errorMessage(err)}`, { cause: err });
  }
  const user = userName(creds.uid);
  return user === undefined ? { ...creds } : { ...creds, user };
}

// uid → name cache. Names change rarely; unknown uids are retried after a while.
const NAME_TTL_MS = 5 * 60_000;
const MISS_TTL_MS = 30_000;
const NAME_CACHE_MAX = 4096;
const names = new Map<number, { name: string | undefined; until: number }>();

/** The login name of `uid` (getent passwd, cached), or undefined when there is none. */
export function userName(uid: number): string | undefined {
  if (!Number.isInteger(uid) || uid < 0) return undefined;
  const now = Date.now();
  const hit = names.get(uid);
  if (hit && hit.until > now) return hit.name;
  let name: string | undefined;
  try {
    const line = execFileSync('getent', ['passwd', String(uid)], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? '';
    const fields = line.split(':');
    if (fields.length >= 3 && fields[2] === String(uid) && fields[0]) name = fields[0];
  } catch {
    name = undefined; // exit status 2: no such uid; anything else: treat as unknown
  }
  if (names.size >= NAME_CACHE_MAX) names.clear();
  names.set(uid, { name, until: now + (name === undefined ? MISS_TTL_MS : NAME_TTL_MS) });
  return name;
}
