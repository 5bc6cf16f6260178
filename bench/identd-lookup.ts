// The cost of finding one connection's owner, the identd's per-query work, on both paths: the
// exact netlink sock_diag lookup and the /proc/net/tcp* search, with many unrelated sockets open
// (default 5,000: 2,500 loopback connections held by this process). Measures a hit (a live
// connection), a miss (no such connection: netlink then also asks once per interface), and a
// whole RFC 1413 exchange with an in-process identd (connect, query, answer) per path. Every
// answer is checked; a wrong one fails the run.
// Run: node --import tsx bench/identd-lookup.ts [--sockets 5000] [--count 300]
// Owns: this timing loop and its table. Must not: assert speed (it reports), or touch other benches.
import net from 'node:net';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { pino } from 'pino';
import { Identd, lookupConnectionOwner, type ConnectionKey, type LookupMethod } from '../src/identity/identd.ts';
import { queryIdent } from '../src/identity/ident.ts';
import { mean, percentile } from './stats.ts';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} must be a non-negative integer`);
  return value;
}

const extraSockets = flag('sockets', 5000);
const count = flag('count', 300);

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

interface Row {
  what: string;
  path: LookupMethod;
  samplesUs: number[];
  cpuUsPerOp: number;
}

async function time(what: string, path: LookupMethod, op: () => Promise<void>): Promise<Row> {
  for (let i = 0; i < Math.min(20, count); i++) await op(); // warm-up
  const samplesUs: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    await op();
    samplesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  const cpu = process.cpuUsage(cpu0);
  return { what, path, samplesUs, cpuUsPerOp: (cpu.user + cpu.system) / count };
}

async function main(): Promise<void> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    accepted.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const clients: net.Socket[] = [];
  for (let made = 0; made < Math.ceil(extraSockets / 2); ) {
    const batch = Math.min(200, Math.ceil(extraSockets / 2) - made);
    clients.push(...(await Promise.all(Array.from({ length: batch }, () => connect(port)))));
    made += batch;
  }
  for (const c of clients) c.on('error', () => undefined);
  const target = clients[Math.floor(clients.length / 2)] ?? (await connect(port));
  const me = os.userInfo().uid;
  const hit: ConnectionKey = { localAddress: '127.0.0.1', localPort: target.localPort as number, remoteAddress: '127.0.0.1', remotePort: port };
  const used = new Set(clients.map((c) => c.localPort));
  let free = 1;
  while (used.has(free)) free++;
  const miss: ConnectionKey = { localAddress: '127.0.0.1', localPort: free, remoteAddress: '127.0.0.1', remotePort: port };

  const identds: Partial<Record<LookupMethod, Identd>> = {};
  for (const path of ['netlink', 'proc'] as const) {
    const identd = new Identd({ listen: [{ host: '127.0.0.1', port: 0 }], log: pino({ level: 'silent' }), lookup: path });
    await identd.start();
    identds[path] = identd;
  }
  const tcpLines = readFileSync('/proc/net/tcp', 'latin1').split('\n').length - 2;

  const rows: Row[] = [];
  try {
    for (const path of ['netlink', 'proc'] as const) {
      rows.push(
        await time('lookup, live connection', path, async () => {
          const r = await lookupConnectionOwner(hit, { method: path });
          if (r.uid !== me || r.via !== path) throw new Error(`wrong answer on ${path}: ${JSON.stringify(r)}`);
        }),
      );
      rows.push(
        await time('lookup, no such connection', path, async () => {
          const r = await lookupConnectionOwner(miss, { method: path });
          if (r.uid !== undefined) throw new Error(`wrong answer on ${path}: ${JSON.stringify(r)}`);
        }),
      );
      const identPort = identds[path]?.addresses[0]?.port as number;
      rows.push(
        await time('RFC 1413 exchange (connect, query, answer)', path, async () => {
          const r = await queryIdent({ remoteAddress: '127.0.0.1', remotePort: hit.localPort, localAddress: '127.0.0.1', localPort: port, identPort, timeoutMs: 5000 });
          if (r.kind !== 'user' || r.user !== os.userInfo().username) throw new Error(`wrong answer on ${path}: ${JSON.stringify(r)}`);
        }),
      );
    }
  } finally {
    for (const identd of Object.values(identds)) await identd.stop();
    for (const s of [...clients, ...accepted]) s.destroy();
    server.close();
  }

  const fmt = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`);
  process.stdout.write(
    `identd owner lookup: ${clients.length * 2} extra sockets held (${tcpLines} rows in /proc/net/tcp), ${count} samples each, ` +
      `${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}\n\n` +
      '| operation | path | mean | p50 | p99 | CPU per op |\n|---|---|---|---|---|---|\n',
  );
  for (const r of rows) {
    process.stdout.write(`| ${r.what} | ${r.path} | ${fmt(mean(r.samplesUs))} | ${fmt(percentile(r.samplesUs, 50))} | ${fmt(percentile(r.samplesUs, 99))} | ${fmt(r.cpuUsPerOp)} |\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`identd-lookup bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
