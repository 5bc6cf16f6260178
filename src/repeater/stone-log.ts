// Where a running `warpstone stone` writes stone-format lines: the log (stderr, or the `-L`
// file / stdout), the `-a` accounting file, and the address strings stone prints (service names
// from /etc/services, the udp ones for /udp addresses, reverse-DNS names unless `-n`, numbers for
// loopback, `unix:PATH` for UNIX sockets). With `--json` the same lines go out as JSON objects
// (json-log.ts).
// Owns: output destinations and the per-process prefix (time, thread id). Must not: decide which
// events are logged (logline.ts stoneLogs() does) or touch the relayed sockets.
import { existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { promises as dns } from 'node:dns';
import net from 'node:net';
import { WarpstoneError, errorMessage } from '../common/errors.js';
import { dumpBodies, dumpLines } from './dump.js';
import { jsonAccountingLine, jsonDumpLine, jsonEventLine, jsonGuardLine, jsonMessageLine } from './json-log.js';
import {
  accountingLine,
  eventLine,
  extSuffix,
  linePrefix,
  logLine,
  parseServices,
  stoneAddrPort,
  stoneLogs,
  syntheticThreadId,
  timevalNow,
  type AccountingEvent,
  type StoneEvent,
  type StoneExt,
} from './logline.js';
import type { IpAddress, OutputFile } from './types.js';

export interface StoneLogOptions {
  readonly debugLevel: number;
  readonly numeric: boolean;
  /** `--json`: one JSON object per line (json-log.ts) instead of stone's text */
  readonly json?: boolean;
  /** the pid JSON lines carry (default this process) */
  readonly pid?: number;
  readonly logFile: OutputFile | undefined;
  readonly accountingFile: OutputFile | undefined;
}

/** A -L or -a file cannot be opened. */
export class StoneOutputError extends WarpstoneError {
  constructor(what: string, path: string, cause: unknown) {
    super('WS_STONE_OUTPUT', `cannot open the ${what} ${path}: ${errorMessage(cause)}`, { cause });
  }
}

function openOutput(file: OutputFile | undefined, fallbackFd: number, what: string): number {
  if (file === undefined) return fallbackFd;
  if (file.kind === 'stdout') return 1;
  try {
    return openSync(file.path, 'a');
  } catch (err) {
    throw new StoneOutputError(what, file.path, err);
  }
}

let services: Map<string, string> | undefined;
/** getservbyport: the tcp table, or the udp one where stone asks with NI_DGRAM (/udp addresses) */
function serviceName(port: number, proto: 'tcp' | 'udp' = 'tcp'): string | undefined {
  if (!services) {
    try {
      services = existsSync('/etc/services') ? parseServices(readFileSync('/etc/services', 'utf8')) : new Map();
    } catch {
      services = new Map();
    }
  }
  return services.get(`${port}/${proto}`);
}

function isLoopbackOrAny(host: string): boolean {
  const h = host.replace(/^::ffff:/i, '');
  return h === '127.0.0.1' || h === '0.0.0.0' || h === '::1' || h === '::';
}

/** inet_ntop of a resolved xhost address (stone's NI_NUMERICHOST). */
export function ipText(address: IpAddress): string {
  if (address.family === 4) return address.bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((address.bytes[i] ?? 0) << 8) | (address.bytes[i + 1] ?? 0)).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

export class StoneLog {
  readonly debug: number;
  readonly numeric: boolean;
  private readonly logFd: number;
  private readonly accountingFd: number | undefined;
  private readonly threadId = syntheticThreadId();
  /** reverse-DNS names learnt by addrNamed(), by numeric address, each kept NAME_TTL_MS */
  private readonly names = new Map<string, { name: string | undefined; until: number }>();
  private readonly json: boolean;
  private readonly pid: number;

  constructor(options: StoneLogOptions) {
    this.debug = options.debugLevel;
    this.numeric = options.numeric;
    this.json = options.json ?? false;
    this.pid = options.pid ?? process.pid;
    this.logFd = openOutput(options.logFile, 2, 'log file (-L)');
    this.accountingFd = options.accountingFile === undefined ? undefined : openOutput(options.accountingFile, 1, 'accounting file (-a)');
  }

  /** Text lines are bytes (latin1); JSON lines are UTF-8 (bytes as Latin-1 code points). */
  private write(fd: number, line: string): void {
    try {
      writeSync(fd, Buffer.from(`${line}\n`, this.json ? 'utf8' : 'latin1'));
    } catch {
      // a log that cannot be written must not stop the relay (stone ignores it too)
    }
  }

  /** Logs an event if stone would at this -d level and dump mode. */
  event(e: StoneEvent, dumpMode = 0): void {
    if (!stoneLogs(e, { debug: this.debug, dumpMode })) return;
    if (this.json) this.write(this.logFd, jsonEventLine(timevalNow(), this.pid, e));
    else this.write(this.logFd, eventLine(timevalNow(), this.threadId, e));
  }

  /** A message logged as is (for lines logline.ts has no event for). */
  message(text: string): void {
    if (this.json) this.write(this.logFd, jsonMessageLine(timevalNow(), this.pid, text));
    else this.write(this.logFd, logLine(linePrefix(timevalNow(), this.threadId), text));
  }

  /** A ban guard line (--ban-home, stone-bans.ts): always logged, whatever -d says. */
  guard(level: string, fields: Record<string, unknown>, text: string): void {
    if (this.json) this.write(this.logFd, jsonGuardLine(timevalNow(), this.pid, level, fields, text));
    else this.write(this.logFd, logLine(linePrefix(timevalNow(), this.threadId), text));
  }

  /** Dump lines for bytes written (one stone-sized chunk). */
  dump(head: string, data: Uint8Array, mode: number): void {
    if (data.length === 0) return;
    if (this.json) {
      const now = timevalNow();
      for (const body of dumpBodies(data, mode)) this.write(this.logFd, jsonDumpLine(now, this.pid, head, body));
      return;
    }
    const prefix = linePrefix(timevalNow(), this.threadId);
    let out = '';
    for (const line of dumpLines(head, data, mode)) out += `${logLine(prefix, line)}\n`;
    try {
      writeSync(this.logFd, Buffer.from(out, 'latin1'));
    } catch {
      // see write()
    }
  }

  get accounting(): boolean {
    return this.accountingFd !== undefined;
  }

  account(e: AccountingEvent): void {
    if (this.accountingFd === undefined) return;
    this.write(this.accountingFd, this.json ? jsonAccountingLine(timevalNow(), this.pid, e) : accountingLine(e));
  }

  /**
   * `host:port[/ext]` as stone prints an address it knows by number (udp service names when the
   * extensions say /udp, as stone's NI_DGRAM). Without `hostName`, a name learnt earlier by
   * addrNamed() is used.
   */
  addr(host: string, port: number, exts: Iterable<StoneExt> = [], hostName?: string): string {
    const list = [...exts];
    const name = hostName ?? (this.numeric ? undefined : this.names.get(host)?.name);
    return stoneAddrPort(host, port, { numeric: this.numeric, serviceName: serviceName(port, list.includes('udp') ? 'udp' : 'tcp'), exts: list, ...(name ? { hostName: name } : {}) });
  }

  /** `unix:PATH[/ext]`: how stone prints a UNIX-socket address (a client's is usually `unix:`). */
  unix(path: string, exts: Iterable<StoneExt> = []): string {
    return `unix:${path}${extSuffix(exts)}`;
  }

  /** Like addr(), with the reverse-DNS name stone's getnameinfo would find (unless -n). */
  async addrNamed(host: string, port: number, exts: Iterable<StoneExt> = []): Promise<string> {
    if (this.numeric || isLoopbackOrAny(host)) return this.addr(host, port, exts);
    const known = this.names.get(host);
    let name: string | undefined;
    if (known && known.until > Date.now()) {
      name = known.name;
    } else {
      try {
        name = (await dns.reverse(host.replace(/^::ffff:(?=\d+\.)/i, '')))[0];
      } catch {
        name = undefined;
      }
      if (this.names.size >= NAME_CACHE_MAX) this.names.clear();
      this.names.set(host, { name, until: Date.now() + NAME_TTL_MS });
    }
    return this.addr(host, port, exts, name);
  }
}

/**
 * reverse-DNS answers kept: at most this many, each for this long (stone asks the resolver every
 * time; the cache keeps a busy listener from asking per connection)
 */
const NAME_CACHE_MAX = 4096;
const NAME_TTL_MS = 60_000;
