// stone 2.4's built-in line services: `health <sport>` (command_health) and `identd <sport>`
// (command_identd). Each client line (CR/LF ends it, empty lines are skipped) is one command,
// matched case-insensitively as the first word:
// health: `HELO` → `250 stone:2.4 debug=D stone=S pair=P trash=0 conn=0 origin=0`, `STAT` →
//   `250 ... async=0 mutex=0`, `FREE`, `CLOCK` (`now= established= readwrite=`), `CVS_ID`,
//   `CONFIG` (nothing: no -C argument list is kept), `STONE` (`200-stone 3: ... <- ...` per
//   stone, `200 ` on the last), `LIMIT PAIR|CONN|ESTABLISHED|READWRITE|ASYNC n` (`200 x=v is
//   less than n` / `500 x=v is not less than n` / `500 Illegal LIMIT`), `QUIT` (close), and
//   `GET|POST|HEAD ...` → `HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n`, logging `HOST GET
//   ...` with the Host header already received; anything else logs `Unknown health command:
//   LINE` and closes.
// identd: `cport , sport`... parsed as stone's sscanf("%d,%d") (no space before the comma);
//   answers `cport , sport : USERID : STONE : <stone port>` when this process has a connection
//   from local port cport to the asking host's port sport, else `... : ERROR : NO-USER`; an
//   unparsable line or `QUIT` closes.
// After a GET/POST/HEAD the rest of its HTTP header is skipped (stone reads it as commands only
// when it arrives in a later read, and then closes on `Unknown health command: Host: ...`).
// Counts (pair=, conn=, origin=) are this engine's: two per TCP pair or session as in stone,
// pending connects and UDP origins are not tracked (0). Differences: stone answers only the
// first command of each read (later lines wait for more bytes); here every complete line is
// answered. Lines are bounded (MAX_COMMAND_LINE) and sessions close after -T idle seconds.
// Owns: these sessions. Must not: relay bytes or decide xhost access (engine.ts).
import type net from 'node:net';
import type { StoneLog } from './stone-log.js';
import type { PairSet } from './tcp-relay.js';
import type { Activity } from './activity.js';

export const MAX_COMMAND_LINE = 4096;
const VERSION = '2.4';
const CVS_ID = '@(#) $Id: stone.c,v 2.4.1.2 2019/02/15 07:01:05 hiroaki_sengoku Exp $';

export interface CommandContext {
  readonly log: StoneLog;
  readonly listenFd: number;
  readonly idleMs: number;
  readonly pairs: PairSet;
  readonly activity: Activity;
  /** live health/identd sessions (counted as pairs, as stone does) */
  readonly sessions: { count: number };
  readonly stoneCount: number;
  /** `stone 3: DST <- SRC` of every stone, in order */
  readonly stoneLines: readonly string[];
}

type Reply = { readonly text: string; readonly close: boolean };

function commMatch(line: string, word: string): string | undefined {
  if (line.slice(0, word.length).toUpperCase() !== word) return undefined;
  const rest = line.slice(word.length);
  if (rest === '') return rest;
  if (!/\s/.test(rest[0] as string)) return undefined;
  return rest[0] === ' ' ? rest.slice(1) : rest;
}

/** C's atoi: leading space, sign, digits; 0 when there are none. */
function atoi(text: string): number {
  const m = /^\s*([+-]?\d+)/.exec(text);
  return m ? Number.parseInt(m[1] as string, 10) | 0 : 0;
}

/** One health-port command (`rest`: what the client sent after this line, for `Host:`). */
export function healthCommand(line: string, rest: string, c: CommandContext): Reply {
  const log = c.log;
  const head = `250 stone:${VERSION} debug=${log.debug}`;
  const now = Math.floor(Date.now() / 1000);
  const pairCount = 2 * (c.pairs.size + c.sessions.count);
  const simple = (word: string, body: string): Reply => {
    if (log.debug > 0) log.message(`: ${word} ${commMatch(line, word) ?? ''}: ${body}`);
    return { text: `${head} ${body}\r\n`, close: false };
  };
  if (commMatch(line, 'HELO') !== undefined) return simple('HELO', `stone=${c.stoneCount} pair=${pairCount} trash=0 conn=0 origin=0`);
  if (commMatch(line, 'STAT') !== undefined) return simple('STAT', 'async=0 mutex=0');
  if (commMatch(line, 'FREE') !== undefined) return simple('FREE', 'fpair=0 nfexbuf=0 nfexbot=0 nfpktbuf=0');
  if (commMatch(line, 'CLOCK') !== undefined) return simple('CLOCK', `now=${now} established=${now - c.activity.lastEstablished} readwrite=${now - c.activity.lastReadWrite}`);
  if (commMatch(line, 'CVS_ID') !== undefined) return { text: `200 stone ${VERSION} ${CVS_ID}\r\n`, close: false };
  if (commMatch(line, 'CONFIG') !== undefined) return { text: '', close: false };
  if (commMatch(line, 'STONE') !== undefined) {
    return { text: c.stoneLines.map((l, i) => `200${i < c.stoneLines.length - 1 ? '-' : ' '}${l}\n`).join(''), close: false };
  }
  const limit = commMatch(line, 'LIMIT');
  if (limit !== undefined) {
    const values: [string, string, number][] = [
      ['PAIR', 'pair', pairCount],
      ['CONN', 'conn', 0],
      ['ESTABLISHED', 'established', now - c.activity.lastEstablished],
      ['READWRITE', 'readwrite', now - c.activity.lastReadWrite],
      ['ASYNC', 'async', 0],
    ];
    for (const [word, name, value] of values) {
      const parm = commMatch(limit, word);
      if (parm === undefined) continue;
      const n = atoi(parm);
      if (log.debug > 0) log.message(`: LIMIT ${name} ${n}: ${value}`);
      return { text: value < n ? `200 ${name}=${value} is less than ${n}\r\n` : `500 ${name}=${value} is not less than ${n}\r\n`, close: false };
    }
    if (log.debug > 0) log.message(`: Illegal LIMIT ${limit}`);
    return { text: '500 Illegal LIMIT\r\n', close: false };
  }
  const quit = commMatch(line, 'QUIT');
  if (quit !== undefined) {
    if (log.debug > 0) log.message(`: QUIT ${quit}`);
    return { text: '', close: true };
  }
  for (const method of ['GET', 'POST', 'HEAD']) {
    const parm = commMatch(line, method);
    if (parm === undefined) continue;
    // stone looks for `Host:` in the bytes received after the command line
    let host = '';
    for (const l of rest.split(/\r?\n|\r/)) {
      if (l.slice(0, 5).toUpperCase() === 'HOST:') {
        host = `${l.slice(5).replace(/^ +/, '')} `;
        break;
      }
    }
    if (parm !== '') log.message(`${host}${method} ${parm}`);
    return { text: 'HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n', close: false };
  }
  log.message(`Unknown health command: ${line}`);
  return { text: '', close: true };
}

/** One identd query from `peer` (its address as Node reports it). */
export function identdCommand(line: string, peer: string, c: CommandContext): Reply {
  const quit = commMatch(line, 'QUIT');
  if (quit !== undefined) {
    if (c.log.debug > 0) c.log.message(`identd QUIT ${quit}`);
    return { text: '', close: true };
  }
  const m = /^\s*([+-]?\d+),\s*([+-]?\d+)/.exec(line);
  if (!m) return { text: '', close: true };
  const cport = Number.parseInt(m[1] as string, 10) | 0;
  const sport = Number.parseInt(m[2] as string, 10) | 0;
  const port = c.pairs.findOutgoing(cport, peer, sport);
  const mesg = port === undefined ? 'ERROR : NO-USER' : `USERID : STONE : ${port}`;
  if (c.log.debug > 2) c.log.message(`identd ${cport} ${peer.includes(':') ? `[${peer}]` : peer}:${sport} ${mesg}`);
  return { text: `${cport} , ${sport} : ${mesg}\r\n`, close: false };
}

/** Serves one client of a health or identd stone. */
export function serveCommandClient(client: net.Socket, kind: 'health' | 'identd', c: CommandContext): void {
  let held = '';
  let open = true;
  c.sessions.count++;
  const idleMs = c.idleMs > 0 ? c.idleMs : 600_000;
  let timer = setTimeout(() => close(), idleMs);
  timer.unref();
  const close = (): void => {
    if (!open) return;
    open = false;
    c.sessions.count--;
    clearTimeout(timer);
    client.end();
    setTimeout(() => client.destroy(), 2000).unref();
  };
  client.on('close', () => {
    if (open) {
      open = false;
      c.sessions.count--;
      clearTimeout(timer);
    }
  });
  /** after GET/POST/HEAD: the rest of that HTTP header is not a command */
  let inHttpHeader = false;
  client.on('data', (chunk: Buffer) => {
    if (!open) return;
    clearTimeout(timer);
    timer = setTimeout(() => close(), idleMs);
    timer.unref();
    held += chunk.toString('latin1');
    for (;;) {
      if (inHttpHeader) {
        const m = /\r?\n\r?\n|\r\r/.exec(held);
        if (!m) {
          held = held.slice(Math.max(0, held.length - 3));
          return;
        }
        held = held.slice(m.index + m[0].length);
        inHttpHeader = false;
      }
      held = held.replace(/^[\r\n]+/, '');
      const end = held.search(/[\r\n]/);
      if (end < 0) {
        if (held.length > MAX_COMMAND_LINE) {
          c.log.message(`${c.listenFd} TCP ${kind}: command line longer than ${MAX_COMMAND_LINE} bytes, closing`);
          close();
        }
        return;
      }
      const line = held.slice(0, end);
      held = held.slice(end);
      const reply = kind === 'health' ? healthCommand(line, held, c) : identdCommand(line, client.remoteAddress ?? '', c);
      if (reply.text !== '') client.write(Buffer.from(reply.text, 'latin1'));
      if (reply.text.startsWith('HTTP/1.0 200 OK')) inHttpHeader = true;
      if (reply.close) {
        close();
        return;
      }
    }
  });
  client.once('end', () => close());
  client.resume();
}
