// `/ident` listeners: before the xhost check, ask the client's identd (RFC 1413, through
// src/identity/ident.ts) who owns the connection, as stone 2.4's getident() does. What stone
// shows is the text after the last `:` of the reply (leading blanks skipped), so an error reply
// shows its token: `alice@127.0.0.1:40000` or `NO-USER@...` in the accepted, access-denied and
// -a lines. Lines as stone: `ident: sent HOST:CPORT, SPORT got REPLY` at -ddd,
// `ident: can't send  to HOST ret=-1 err=E buf=CPORT, SPORT` / `ident: read from HOST, timeout`
// at -d.
// Differences from stone, on purpose: `\U` gets the user of a USERID reply only, never an error
// token (stone would send `NO-USER` on as if it were a user name); the whole query has 3 s
// (stone waits up to 60 s for the connect and again for the reply, holding the client).
// Owns: one lookup per accepted client. Must not: decide access or keep answers.
import type net from 'node:net';
import { IDENT_TIMEOUT_MS, queryIdent, type IdentResult } from '../identity/ident.js';
import { errnoOf } from './tcp-relay.js';
import { peerHostName } from './peer-values.js';
import type { StoneLog } from './stone-log.js';

export interface IdentAnswer {
  /** what stone prints before `@` (undefined: no answer, stone prints the address alone) */
  readonly shown: string | undefined;
  /** the user of a USERID reply, for `\U` */
  readonly user: string | undefined;
}

/** stone's extraction: the text after the last `:`, leading blanks skipped. */
export function identShown(reply: string): string {
  const at = reply.lastIndexOf(':');
  if (at < 0) return '';
  return reply.slice(at + 1).replace(/^ +/, '');
}

export async function identify(client: net.Socket, log: StoneLog, timeoutMs = IDENT_TIMEOUT_MS): Promise<IdentAnswer> {
  const remoteAddress = client.remoteAddress;
  const remotePort = client.remotePort;
  const localAddress = client.localAddress;
  const localPort = client.localPort;
  if (remoteAddress === undefined || remotePort === undefined || localAddress === undefined || localPort === undefined) return { shown: undefined, user: undefined };
  let result: IdentResult;
  try {
    result = await queryIdent({ remoteAddress, remotePort, localAddress, localPort, timeoutMs });
  } catch (err) {
    result = { kind: 'network-error', detail: String(err) };
  }
  const host = await peerHostName(remoteAddress.replace(/^::ffff:(?=\d+\.)/i, ''), remotePort, log.numeric);
  if (result.kind === 'network-error') {
    // stone's connect is non-blocking, so a refused or unreachable identd shows up at its send(),
    // whose message carries the query with its CR LF (two lines in the log, as stone's)
    const errno = result.code ? errnoOf({ code: result.code }) : 0;
    if (log.debug > 0) log.message(`ident: can't send  to ${host} ret=-1 err=${errno} buf=${remotePort}, ${localPort}\r\n`);
    return { shown: undefined, user: undefined };
  }
  if (result.kind === 'timeout') {
    if (log.debug > 0) log.message(`ident: read from ${host}, timeout`);
    return { shown: undefined, user: undefined };
  }
  if (result.reply === undefined) {
    if (log.debug > 0) log.message(`ident: can't read from ${host}, ret=0`);
    return { shown: undefined, user: undefined };
  }
  if (log.debug > 2) log.message(`ident: sent ${host}:${remotePort}, ${localPort} got ${result.reply}`);
  return { shown: identShown(result.reply), user: result.kind === 'user' ? result.user : undefined };
}
