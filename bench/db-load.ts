// What else kept the cores busy during the db phase: once a second, the machine's busy CPU time
// (/proc/stat) minus the bench's own process tree (pgbench, mysqlslap, relay, identd) minus the
// two database servers (every `postgres` process, including the backends it already reaped,
// and `mariadbd`). The database servers are counted apart: they work for the bench, but also
// for anyone else using them at the same time, which the kernel cannot tell apart. Also how
// many TCP sockets the host has (/proc/net/tcp and tcp6, TIME_WAIT included): `warpstone identd`
// reads both files for every lookup, so their length is what an IDENT lookup costs.
// Owns: this sampler. Must not: start or stop processes.
import { readFileSync, readdirSync } from 'node:fs';
import { processTree } from './procfs.ts';
import type { DbPhaseLoadFigures } from './results.ts';

const CLK_TCK = 100;
const DB_SERVERS = new Set(['postgres', 'mariadbd', 'mysqld']);

/** utime+stime+cutime+cstime of one process, in ticks, and its command name. */
function ticksOf(pid: number): { ticks: number; comm: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const open = text.indexOf('(');
    const close = text.lastIndexOf(')');
    const f = text.slice(close + 2).split(' ');
    return { comm: text.slice(open + 1, close), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

function machineBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/) ?? [];
  return (Number(cpu[1]) + Number(cpu[2]) + Number(cpu[3])) / CLK_TCK;
}

function benchSeconds(): number {
  return processTree(process.pid).reduce((sum, p) => sum + (ticksOf(p)?.ticks ?? 0), 0) / CLK_TCK;
}

function dbServerSeconds(): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const t = ticksOf(Number(entry));
    if (t && DB_SERVERS.has(t.comm)) ticks += t.ticks;
  }
  return ticks / CLK_TCK;
}

/** TCP sockets of the host: lines of /proc/net/tcp and tcp6 minus their headers. */
export function tcpSockets(): number {
  let n = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      n += Math.max(0, readFileSync(file, 'latin1').split('\n').filter((l) => l.trim() !== '').length - 1);
    } catch {
      // no IPv6
    }
  }
  return n;
}

interface Sample {
  busy: number;
  bench: number;
  db: number;
  at: number;
}

export class DbPhaseLoad {
  private readonly foreign: number[] = [];
  private readonly db: number[] = [];
  private readonly sockets: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private last: Sample | undefined;

  private read(): Sample {
    return { busy: machineBusySeconds(), bench: benchSeconds(), db: dbServerSeconds(), at: Date.now() };
  }

  start(): void {
    this.last = this.read();
    this.sockets.push(tcpSockets());
    this.timer = setInterval(() => this.sample(), 1_000);
    this.timer.unref();
  }

  private sample(): void {
    const now = this.read();
    const last = this.last ?? now;
    const wall = (now.at - last.at) / 1000;
    // a backend that exited but was not reaped yet drops out of the sum for a moment: clamp at 0
    const db = Math.max(0, now.db - last.db);
    if (wall > 0) {
      this.db.push(db / wall);
      this.foreign.push(Math.max(0, now.busy - last.busy - (now.bench - last.bench) - db) / wall);
    }
    this.last = now;
    this.sockets.push(tcpSockets());
  }

  stop(): DbPhaseLoadFigures {
    if (this.timer) clearInterval(this.timer);
    const avg = (xs: number[]): number => (xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
    const max = (xs: number[]): number => (xs.length > 0 ? Math.max(...xs) : 0);
    return {
      foreignMeanCores: avg(this.foreign),
      foreignPeakCores: max(this.foreign),
      dbServersMeanCores: avg(this.db),
      tcpSocketsMean: avg(this.sockets),
      tcpSocketsMax: max(this.sockets),
    };
  }
}
