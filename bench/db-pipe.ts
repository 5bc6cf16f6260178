// The plainest forwarder Node can be, as a peer of the database relay in the db phase: accept,
// connect to the upstream, pipe both ways, nothing parsed. What the relay costs beyond it is the
// relay's own work (handshake parsing, identity, policy, logging, its splice).
// Usage: node --import tsx bench/db-pipe.ts UPSTREAM_PORT   (prints "pipe listening on PORT")
// Owns: this forwarder. Must not: be imported by anything.
import net from 'node:net';

const upstreamPort = Number(process.argv[2]);
if (!Number.isInteger(upstreamPort) || upstreamPort < 1 || upstreamPort > 65535) {
  process.stderr.write('usage: db-pipe.ts UPSTREAM_PORT\n');
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close).on('close', close);
  upstream.on('error', close).on('close', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`pipe listening on ${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
