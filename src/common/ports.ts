// A free TCP port on this host, for commands that start several local processes (demo) and for
// tests and benchmarks. The port is free when returned; a racing process could still take it.
// Owns: port probing. Must not: keep the port bound.
import net from 'node:net';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
