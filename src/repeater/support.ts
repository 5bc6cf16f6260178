// What this engine runs today, checked before anything starts: relays between TCP (IPv4/IPv6),
// UDP and UNIX sockets in any combination stone 2.4 allows (`host:port[/udp|/ssl]` or a socket
// path, to `sport[/udp|/ssl]` or a socket path, [xhost...]), with -d -p -n -L -a -X -T -A -r -u
// -i -N, -b backups and -B balance groups, the -q/-z SSL options (ssl.ts, crl_check and
// crl_check_all included) except lb<n>=, `/ident` listeners, `host:port/http sport <request>`
// with every escape but \d \D (SO_ORIGINAL_DST, which Node cannot read), `sport/http`
// listeners of TCP relays (tcp-relay.ts), `proxy`, `health` and `identd` stones on TCP and
// UNIX-socket listeners (proxy-stone.ts, command-stones.ts), `host:port/proxy|/mproxy sport
// <header>` and `/base` on TCP/UNIX sides (stream-filters.ts).
// Everything else the grammar accepts (lb<n>=, -I, -D, -o, -g, -t, -l, %interface listeners, /http
// or /base in UDP stones, commands on UDP listeners) is refused with WS_STONE_UNSUPPORTED naming
// the stone or option, never silently ignored.
// Owns: the list of supported features. Must not: open sockets or log.
import { WarpstoneError } from '../common/errors.js';
import { formatPosition } from './tokens.js';
import type { Destination, Listener, SslOptions, StoneDefinition, StoneProgram, TemplatePart, TemplateValue } from './types.js';

export class StoneUnsupportedError extends WarpstoneError {
  constructor(message: string) {
    super('WS_STONE_UNSUPPORTED', message);
  }
}

function endpointText(endpoint: { kind: 'inet'; host: string; port: { text: string } } | { kind: 'unix'; path: string }): string {
  return endpoint.kind === 'unix' ? endpoint.path : `${endpoint.host}:${endpoint.port.text}`;
}

function destinationText(d: Destination): string {
  switch (d.kind) {
    case 'relay':
    case 'http-request':
    case 'insert-header':
      return endpointText(d.endpoint);
    default:
      return d.kind;
  }
}

function listenerText(l: Listener): string {
  if (l.address.kind === 'unix') return l.address.path;
  const host = l.address.host === undefined ? '' : `${l.address.host}${l.address.interface ? `%${l.address.interface}` : ''}:`;
  return `${host}${l.address.port.text}`;
}

/** `stone 2 (argument 4: backend:80 <- 8080)` */
export function describeStone(stone: StoneDefinition): string {
  return `stone ${stone.index + 1} (${formatPosition(stone.position)}: ${destinationText(stone.destination)} <- ${listenerText(stone.listener)})`;
}

const VALUE_ESCAPES: Readonly<Record<TemplateValue, string>> = {
  'peer-address': 'a',
  'peer-address-port': 'A',
  'original-destination': 'd',
  'original-destination-port': 'D',
  'user-id': 'u',
  'group-id': 'g',
  'user-name': 'U',
  'group-name': 'G',
};

/** The `\a \A \d \D \u \g \U \G` escapes of a template (not expanded yet by the engine). */
function templateValues(parts: readonly TemplatePart[]): string[] {
  const out = new Set<string>();
  const walk = (list: readonly TemplatePart[]): void => {
    for (const part of list) {
      if (part.kind === 'value') out.add(VALUE_ESCAPES[part.value]);
      else if (part.kind === 'conditional') {
        walk(part.then);
        walk(part.otherwise);
      }
    }
  };
  walk(parts);
  return [...out];
}

/** The -q/-z options of a set that this engine cannot honour yet. */
function sslUnsupported(o: SslOptions, flag: 'q' | 'z'): string[] {
  const out: string[] = [];
  if (o.loadBalance !== undefined) out.push(`-${flag} lb${o.loadBalance.group}=${o.loadBalance.modulus}`);
  return out;
}

/** The reasons a stone cannot run here yet; [] when it can. */
export function unsupportedFeatures(stone: StoneDefinition): string[] {
  const out: string[] = [];
  const d = stone.destination;
  const l = stone.listener;
  const udpListener = l.extensions.transport === 'udp';
  if (d.kind === 'http-request') {
    const values = templateValues(d.request.parts).filter((v) => v === 'd' || v === 'D');
    if (values.length > 0) out.push(`${values.map((v) => `\\${v}`).join(' ')} (the original destination, SO_ORIGINAL_DST) in a /http request line`);
    if (udpListener) out.push('a /http destination behind a UDP listener');
  } else if (d.kind === 'insert-header') {
    if (udpListener) out.push('a /proxy or /mproxy destination behind a UDP listener');
  } else if (d.kind !== 'relay') {
    if (udpListener) out.push(`the '${d.kind}' command on a UDP listener`);
  }
  if (d.extensions.ssl && stone.settings.sslClient) out.push(...sslUnsupported(stone.settings.sslClient, 'q'));
  if (d.extensions.ssl && udpListener) out.push('an /ssl destination behind a UDP listener');
  if (d.extensions.base64 && (udpListener || d.extensions.transport === 'udp')) out.push('a base64 destination (/base) in a UDP stone');
  if (l.address.kind === 'inet' && l.address.interface !== undefined) out.push(`binding to an interface (%${l.address.interface})`);
  if (l.extensions.ssl && stone.settings.sslServer) out.push(...sslUnsupported(stone.settings.sslServer, 'z'));
  if (l.extensions.http && (udpListener || d.kind !== 'relay' || d.extensions.transport === 'udp')) out.push('an HTTP-wrapped listener (/http) other than in a TCP relay');
  if (l.extensions.base64 && (udpListener || d.extensions.transport === 'udp')) out.push('a base64 listener (/base) in a UDP stone');
  if (stone.settings.localBind !== undefined) out.push(`-I ${stone.settings.localBind.text}`);
  return out;
}

/** Throws StoneUnsupportedError for the first stone or global option this engine cannot run. */
export function checkSupported(program: StoneProgram): void {
  const g = program.globals;
  const globals: [boolean, string][] = [
    [g.daemon, '-D (become a daemon)'],
    [g.user !== undefined, '-o (switch user)'],
    [g.group !== undefined, '-g (switch group)'],
    [g.chrootDirectory !== undefined, '-t (chroot)'],
    [g.syslog > 0, '-l (syslog)'],
  ];
  for (const [given, what] of globals) {
    if (given) throw new StoneUnsupportedError(`option ${what} is not supported yet by warpstone stone`);
  }
  for (const stone of program.stones) {
    const reasons = unsupportedFeatures(stone);
    if (reasons.length > 0) {
      throw new StoneUnsupportedError(
        `${describeStone(stone)}: ${reasons.join(', ')} ${reasons.length === 1 ? 'is' : 'are'} not supported yet by warpstone stone (supported: relays between TCP, UDP and UNIX sockets, /ssl on TCP sides (crl_check too), /base, host:port/http sport <request>, sport/http listeners, /proxy and /mproxy headers, proxy, health and identd stones, -b and -B)`,
      );
    }
  }
}
