// The bench's target service, run as its own process (`node --import tsx bench/echo-server.ts`):
// a TCP echo server on 127.0.0.1 (port 0 = any free port). Prints "echo listening on PORT" once
// ready. Every byte comes back; a half-close is answered with a half-close. It is the far end
// of the round-trip, connection-rate and idle-stream measurements for every peer.
// Owns: nothing but its sockets. Must not: log per connection (it would skew the rates).
import net from 'node:net';

const port = Number(process.argv[2] ?? 0);
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  socket.on('error', () => undefined);
  socket.pipe(socket);
});
server.maxConnections = 100_000;
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  process.stdout.write(`echo listening on ${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
