// Parser of the VPN-Warp compatible request head: `CONNECT <tunnel>[:<port>] HTTP/1.x` CRLF,
// optional header lines, an empty line. Pure and incremental: feed it bytes, it says "need
// more", "done" (with any bytes that followed the head) or "bad" (with the reason). Bounded:
// a head longer than the limit is refused, never buffered without end.
// Owns: the text-mode grammar. Must not: touch sockets.
import { parseTarget, type Target } from './protocol.js';

export type HeadResult =
  | { kind: 'more' }
  | { kind: 'done'; target: Target; rest: Buffer }
  | { kind: 'bad'; status: number; reason: string };

export class ConnectHeadParser {
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): HeadResult {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const end = findHeadEnd(this.buffered);
    if (end < 0) {
      if (this.buffered.length > this.maxBytes) {
        return { kind: 'bad', status: 400, reason: `request head longer than ${this.maxBytes} bytes` };
      }
      if (!looksLikeConnect(this.buffered)) {
        return { kind: 'bad', status: 400, reason: `expected 'CONNECT <tunnel> HTTP/1.1', got ${preview(this.buffered)}` };
      }
      return { kind: 'more' };
    }
    if (end > this.maxBytes) {
      return { kind: 'bad', status: 400, reason: `request head longer than ${this.maxBytes} bytes` };
    }
    const head = this.buffered.subarray(0, end).toString('latin1');
    const rest = this.buffered.subarray(headTerminatorEnd(this.buffered, end));
    return parseHead(head, rest);
  }
}

/** Index where the empty line starts (after the last header line), or -1. Accepts CRLF or LF. */
function findHeadEnd(buf: Buffer): number {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue;
    if (buf[i + 1] === 0x0a) return i;
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i;
  }
  return -1;
}

function headTerminatorEnd(buf: Buffer, end: number): number {
  // buf[end] is the LF ending the last line; then LF or CR LF ends the head.
  return buf[end + 1] === 0x0a ? end + 2 : end + 3;
}

const PREFIX = Buffer.from('CONNECT ');

function looksLikeConnect(buf: Buffer): boolean {
  const n = Math.min(buf.length, PREFIX.length);
  return buf.subarray(0, n).equals(PREFIX.subarray(0, n));
}

function preview(buf: Buffer): string {
  const text = buf.subarray(0, 40).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
  return JSON.stringify(text) + (buf.length > 40 ? '...' : '');
}

function parseHead(head: string, rest: Buffer): HeadResult {
  const lines = head.split(/\r?\n/);
  const requestLine = lines[0] ?? '';
  const match = /^CONNECT ([^ ]+) HTTP\/1\.[01]$/.exec(requestLine.replace(/\r$/, ''));
  if (!match) {
    return { kind: 'bad', status: 400, reason: `expected 'CONNECT <tunnel>[:<port>] HTTP/1.1', got ${JSON.stringify(requestLine.replace(/\r$/, '').slice(0, 80))}` };
  }
  const target = parseTarget(match[1] as string);
  if (typeof target === 'string') return { kind: 'bad', status: 400, reason: target };
  return { kind: 'done', target, rest };
}
