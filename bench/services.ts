// The services every peer forwards to: an iperf3 server (throughput) and the bench's echo
// server (round trips, connection rate, idle streams). "Direct" means talking to these ports.
// Owns: starting the two targets. Must not: start any forwarder.
import { join } from 'node:path';
import type { Procs, Started } from './procs.ts';
import { freePort } from './procs.ts';

export interface Services {
  iperfPort: number;
  echoPort: number;
  iperf: Started;
  echo: Started;
  commands: string[];
}

export async function startServices(procs: Procs, benchDir: string, repoRoot: string): Promise<Services> {
  const iperfPort = await freePort();
  const iperf = procs.start('iperf3-server', 'iperf3', ['-s', '-B', '127.0.0.1', '-p', String(iperfPort)]);
  const echo = procs.start('echo-server', process.execPath, ['--import', 'tsx', join(benchDir, 'echo-server.ts'), '0'], {
    cwd: repoRoot,
    display: 'node --import tsx bench/echo-server.ts',
  });
  await procs.waitListening(iperf, iperfPort);
  const m = await procs.waitForLog(echo, /echo listening on (\d+)/);
  const echoPort = Number(m[1]);
  return {
    iperfPort,
    echoPort,
    iperf,
    echo,
    commands: [`iperf3 -s -B 127.0.0.1 -p IPERF`, `${echo.display}   # TCP echo on 127.0.0.1:ECHO`],
  };
}
