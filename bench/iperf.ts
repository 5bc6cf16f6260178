// Single-stream throughput with iperf3: `iperf3 -c 127.0.0.1 -p PORT -t T -O 1 -J [-R]`, JSON
// parsed. iperf3 opens a control connection and then one data connection; through a tunnel both
// are forwarded, which is what a user's iperf3 would do too.
// Owns: running the iperf3 client and reading its verdict. Must not: start servers.
import { runToEnd } from './procs.ts';

export interface IperfResult {
  /** bits per second measured at the receiver; undefined when the run failed */
  bps: number | undefined;
  /** bytes received */
  bytes: number | undefined;
  error: string | undefined;
  /** iperf3's own CPU figures (client host / server host), percent */
  cpuClient: number | undefined;
  cpuServer: number | undefined;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bits_per_second?: number; bytes?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

export function iperfArgs(port: number, seconds: number, reverse: boolean): string[] {
  return ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-O', '1', '-J', ...(reverse ? ['-R'] : [])];
}

/** iperf3's server serves one test at a time; a test it has not yet wound down makes it "busy". */
export async function runIperf(port: number, seconds: number, reverse: boolean): Promise<IperfResult> {
  let result = await runIperfOnce(port, seconds, reverse);
  for (let retry = 0; retry < 2 && result.error !== undefined && /busy/i.test(result.error); retry++) {
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    result = await runIperfOnce(port, seconds, reverse);
  }
  return result;
}

async function runIperfOnce(port: number, seconds: number, reverse: boolean): Promise<IperfResult> {
  const r = await runToEnd('iperf3', [...iperfArgs(port, seconds, reverse), '--connect-timeout', '5000'], { timeoutMs: (seconds + 20) * 1000 });
  let parsed: IperfJson;
  try {
    parsed = JSON.parse(r.stdout) as IperfJson;
  } catch {
    return { bps: undefined, bytes: undefined, error: `iperf3 exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 200)}`, cpuClient: undefined, cpuServer: undefined };
  }
  const bps = parsed.end?.sum_received?.bits_per_second;
  const error = parsed.error ?? (bps ? undefined : `iperf3 exited ${r.code} without a result`);
  return {
    bps: error ? undefined : bps,
    bytes: error ? undefined : parsed.end?.sum_received?.bytes,
    error,
    cpuClient: parsed.end?.cpu_utilization_percent?.host_total,
    cpuServer: parsed.end?.cpu_utilization_percent?.remote_total,
  };
}
