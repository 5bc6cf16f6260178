// Reads what the kernel says about the bench's processes: CPU time (utime + stime from
// /proc/<pid>/stat) and resident memory (VmRSS from /proc/<pid>/status), for one process or a
// process and all its descendants (sshd forks a process per connection); and how much CPU the
// rest of the machine used meanwhile (/proc/stat), since other load skews every figure.
// Owns: /proc parsing and CPU-share arithmetic. Must not: start or stop processes.
import { readFileSync, readdirSync } from 'node:fs';

/** Kernel clock ticks per second (USER_HZ); 100 on every Linux build Debian ships. */
const CLK_TCK = 100;

interface StatLine {
  ppid: number;
  /** utime + stime */
  ticks: number;
  /** cutime + cstime: children it has reaped */
  childTicks: number;
}

function readStat(pid: number): StatLine | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name (which may contain spaces and parentheses)
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]), childTicks: Number(rest[13]) + Number(rest[14]) };
  } catch {
    return undefined;
  }
}

/** `pid` and every process below it. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (!stat) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(Number(entry));
    children.set(stat.ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

/** CPU seconds used so far by `pid` and its descendants (children that already exited are lost). */
export function cpuSeconds(pid: number, withTree = false): number {
  const pids = withTree ? processTree(pid) : [pid];
  return pids.reduce((sum, p) => sum + (readStat(p)?.ticks ?? 0), 0) / CLK_TCK;
}

/** VmRSS in KiB of `pid` (and its descendants with `withTree`). */
export function rssKiB(pid: number, withTree = false): number {
  const pids = withTree ? processTree(pid) : [pid];
  let sum = 0;
  for (const p of pids) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      sum += m ? Number(m[1]) : 0;
    } catch {
      // gone
    }
  }
  return sum;
}

/** CPU seconds the whole machine spent in user and system mode so far, all cores together. */
function machineBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/) ?? [];
  return (Number(cpu[1]) + Number(cpu[2]) + Number(cpu[3])) / CLK_TCK;
}

/** CPU seconds of this process and everything it started, including exited (reaped) children. */
function ourCpuSeconds(): number {
  return processTree(process.pid).reduce((sum, p) => {
    const stat = readStat(p);
    return sum + (stat ? stat.ticks + stat.childTicks : 0);
  }, 0) / CLK_TCK;
}

/**
 * Samples, once a second, how much CPU the machine spent on processes that are not the
 * bench's: other users' work competes for the same cores and skews every figure.
 */
export class ForeignLoad {
  private readonly samples: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private last = { busy: 0, ours: 0, at: 0 };

  start(): void {
    this.last = { busy: machineBusySeconds(), ours: ourCpuSeconds(), at: Date.now() };
    this.timer = setInterval(() => this.sample(), 1_000);
    this.timer.unref();
  }

  private sample(): void {
    const now = { busy: machineBusySeconds(), ours: ourCpuSeconds(), at: Date.now() };
    const wall = (now.at - this.last.at) / 1000;
    if (wall > 0) this.samples.push(Math.max(0, now.busy - this.last.busy - (now.ours - this.last.ours)) / wall);
    this.last = now;
  }

  /** Mean and peak (over 1-s intervals) number of cores busy with other work. */
  stop(): { meanCores: number; peakCores: number } {
    if (this.timer) clearInterval(this.timer);
    const n = this.samples.length;
    return {
      meanCores: n > 0 ? this.samples.reduce((a, b) => a + b, 0) / n : 0,
      peakCores: n > 0 ? Math.max(...this.samples) : 0,
    };
  }
}

export interface Watched {
  name: string;
  pid: number;
  tree: boolean;
}

export interface CpuMeasured<T> {
  result: T;
  /** percent of one core, per watched process, plus the bench process itself */
  cpu: Record<string, number>;
  /** CPU seconds of the watched processes together (not the bench process) */
  pathCpuSeconds: number;
  wallSeconds: number;
}

/** CPU share (percent of one core) each watched process used while `work` ran. */
export async function measureCpu<T>(watched: Watched[], work: () => Promise<T>): Promise<CpuMeasured<T>> {
  const before = watched.map((w) => cpuSeconds(w.pid, w.tree));
  const started = process.hrtime.bigint();
  const selfBefore = process.cpuUsage();
  const result = await work();
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const self = process.cpuUsage(selfBefore);
  const cpu: Record<string, number> = {};
  let pathCpuSeconds = 0;
  watched.forEach((w, i) => {
    const used = cpuSeconds(w.pid, w.tree) - (before[i] ?? 0);
    pathCpuSeconds += used;
    cpu[w.name] = (100 * used) / wall;
  });
  cpu['bench (load generator)'] = (100 * (self.user + self.system)) / 1e6 / wall;
  return { result, cpu, pathCpuSeconds, wallSeconds: wall };
}
