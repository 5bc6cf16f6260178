// The cost of one IDENT lookup on its own: the bench holds one TCP connection open and asks
// `warpstone identd` who owns its client end, again and again, each time as the database relay
// does for every TCP client (a new connection to the identd, one query, one answer). The
// answer must name the bench's own user, or the run fails.
// Owns: the IDENT timing loop. Must not: start the identd.
import net from 'node:net';
import os from 'node:os';
import { queryIdent } from '../src/identity/ident.ts';
import { mean, percentile } from './stats.ts';
import type { DbIdentTiming } from './results.ts';

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

export async function measureIdent(identPort: number, count: number): Promise<DbIdentTiming> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
  });
  const port = await listen(server);
  const client = await connect(port);
  client.on('error', () => undefined);
  const me = os.userInfo().username;
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint();
      const r = await queryIdent({ remoteAddress: '127.0.0.1', remotePort: client.localPort ?? 0, localAddress: '127.0.0.1', localPort: port, identPort, timeoutMs: 3_000 });
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (r.kind !== 'user' || r.user !== me) throw new Error(`identd answered ${JSON.stringify(r)}, expected USERID ${me}`);
    }
  } finally {
    client.destroy();
    for (const s of accepted) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  return { medianMs: percentile(times, 50), meanMs: mean(times), p90Ms: percentile(times, 90), count };
}
