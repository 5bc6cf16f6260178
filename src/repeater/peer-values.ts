// What the value escapes of a `/http` request line stand for on one connection, as stone 2.4's
// strnAddr/strnUser compute them (checked against Debian's binary):
//   \a  the client's host: getnameinfo's name (numeric with -n or when it has none; for a UNIX
//       socket client glibc answers this machine's node name, `localhost` with -n)
//   \A  `host:port` as stone prints addresses (loopback stays numeric, the port by its tcp
//       service name unless -n); a UNIX socket client is `unix:` (it has no bound path)
//   \u \g \U \G  for a UNIX-socket listener, the client's uid, gid, user and group from its peer
//       credentials (SO_PEERCRED; -1 / empty when they cannot be read); on a TCP listener they are
//       empty, except \U with /ident, which is what the client's identd answered
// \d \D (SO_ORIGINAL_DST) are refused before start-up (support.ts): Node cannot read it.
// Owns: computing these strings. Must not: decide access, log, or touch the relayed bytes.
import os from 'node:os';
import { promises as dns } from 'node:dns';
import { execFileSync } from 'node:child_process';
import type net from 'node:net';
import { peerOf, userName } from '../identity/peercred.js';
import { parseServices } from './logline.js';
import { existsSync, readFileSync } from 'node:fs';
import type { TemplatePart, TemplateValue } from './types.js';
import type { TemplateValues } from './tcp-relay.js';

/** The client whose values are wanted. */
export type PeerInfo =
  | { readonly kind: 'inet'; readonly address: string; readonly port: number; readonly ident?: string }
  | { readonly kind: 'unix'; readonly socket: net.Socket };

/** The value escapes a template uses (none: nothing to compute per connection). */
export function valuesUsed(parts: readonly TemplatePart[]): Set<TemplateValue> {
  const out = new Set<TemplateValue>();
  const walk = (list: readonly TemplatePart[]): void => {
    for (const part of list) {
      if (part.kind === 'value') out.add(part.value);
      else if (part.kind === 'conditional') {
        walk(part.then);
        walk(part.otherwise);
      }
    }
  };
  walk(parts);
  return out;
}

let tcpServices: Map<string, string> | undefined;
function tcpService(port: number): string | undefined {
  if (!tcpServices) {
    try {
      tcpServices = existsSync('/etc/services') ? parseServices(readFileSync('/etc/services', 'utf8')) : new Map();
    } catch {
      tcpServices = new Map();
    }
  }
  return tcpServices.get(`${port}/tcp`);
}

/** stone's islocalhost(): 127.0.0.1, ::1 and the null addresses are never looked up */
function isLocalOrNull(address: string): boolean {
  return address === '127.0.0.1' || address === '0.0.0.0' || address === '::1' || address === '::';
}

/** getnameinfo without NI_NAMEREQD: the name, or the number when there is none. */
async function hostName(address: string, port: number): Promise<string> {
  try {
    return (await dns.lookupService(address, port)).hostname;
  } catch {
    return address;
  }
}

/** stone's addr2str(): the host's name (numeric with -n, or when it has none). */
export function peerHostName(address: string, port: number, numeric: boolean): Promise<string> {
  return numeric ? Promise.resolve(address) : hostName(address, port);
}

// gid → group name, cached like peercred.ts caches user names
const GROUP_TTL_MS = 5 * 60_000;
const GROUP_CACHE_MAX = 4096;
const groups = new Map<number, { name: string | undefined; until: number }>();

/** The name of group `gid` (getent group, cached), or undefined when there is none. */
export function groupName(gid: number): string | undefined {
  if (!Number.isInteger(gid) || gid < 0) return undefined;
  const now = Date.now();
  const hit = groups.get(gid);
  if (hit && hit.until > now) return hit.name;
  let name: string | undefined;
  try {
    const line = execFileSync('getent', ['group', String(gid)], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? '';
    const fields = line.split(':');
    if (fields.length >= 3 && fields[2] === String(gid) && fields[0]) name = fields[0];
  } catch {
    name = undefined;
  }
  if (groups.size >= GROUP_CACHE_MAX) groups.clear();
  groups.set(gid, { name, until: now + GROUP_TTL_MS });
  return name;
}

/** Computes the values `needed` for one client. `numeric`: stone's -n. */
export async function peerValues(needed: ReadonlySet<TemplateValue>, peer: PeerInfo, numeric: boolean): Promise<TemplateValues> {
  const out: Partial<Record<TemplateValue, string>> = {};
  if (needed.size === 0) return out;
  if (peer.kind === 'unix') {
    if (needed.has('peer-address')) out['peer-address'] = numeric ? 'localhost' : os.hostname();
    if (needed.has('peer-address-port')) out['peer-address-port'] = 'unix:';
    const wantsCredentials = ['user-id', 'group-id', 'user-name', 'group-name'].some((v) => needed.has(v as TemplateValue));
    if (wantsCredentials) {
      let uid = -1;
      let gid = -1;
      try {
        const p = peerOf(peer.socket);
        uid = p.uid;
        gid = p.gid;
      } catch {
        // stone: `-1` for the ids and empty names when SO_PEERCRED fails
      }
      out['user-id'] = String(uid);
      out['group-id'] = String(gid);
      out['user-name'] = uid < 0 ? '' : (userName(uid) ?? '');
      out['group-name'] = gid < 0 ? '' : (groupName(gid) ?? '');
    }
    return out;
  }
  const address = peer.address.replace(/%.*$/, '');
  if (needed.has('peer-address')) out['peer-address'] = numeric ? address : await hostName(address, peer.port);
  if (needed.has('peer-address-port')) {
    const host = numeric || isLocalOrNull(address) ? address : await hostName(address, peer.port);
    const service = numeric ? undefined : tcpService(peer.port);
    out['peer-address-port'] = `${host}:${service ?? peer.port}`;
  }
  // on a TCP listener stone has no credentials: \u \g \G are empty, \U is the ident answer
  out['user-id'] = '';
  out['group-id'] = '';
  out['group-name'] = '';
  out['user-name'] = peer.ident ?? '';
  return out;
}
