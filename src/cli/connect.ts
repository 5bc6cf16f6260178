// `warpstone connect TUNNEL`: reach a tunnel through the relay from a local port or stdio.
import type { Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseHostPort } from '../common/hostport.js';
import { UsageError } from '../common/errors.js';
import { readIdentityFile } from '../pki/pem.js';
import { RelayClient } from '../client/relay-client.js';
import { LocalForwarder, connectStdio } from '../client/connect.js';
import { parseTarget } from '../wire/protocol.js';
import { onShutdown, reportAndExit } from './shared.js';

export function register(program: Command): void {
  program
    .command('connect')
    .description('forward a local port (or stdin/stdout) to a tunnel through the relay')
    .argument('<tunnel>', 'tunnel name, optionally tunnel:port')
    .requiredOption('--identity <file>', 'user identity file from `warpstone issue user`')
    .requiredOption('--relay <host:port>', 'the relay')
    .option('--listen <[host:]port>', 'local address to accept connections on (host defaults to 127.0.0.1)')
    .option('--stdio', 'join stdin/stdout to one stream (ssh ProxyCommand)')
    .action(async (tunnel: string, opts: { identity: string; relay: string; listen?: string; stdio?: boolean }) => {
      const target = parseTarget(tunnel);
      if (typeof target === 'string') throw new UsageError(`connect: ${target}`);
      if (!opts.listen === !opts.stdio) throw new UsageError('connect: give exactly one of --listen [HOST:]PORT or --stdio');
      const identity = readIdentityFile(opts.identity);
      if (identity.role !== 'user') throw new UsageError(`connect: ${opts.identity} holds a ${identity.role} certificate; users connect, agents expose`);
      const relay = parseHostPort(opts.relay, '--relay');
      const log = createLogger({ name: 'connect' });
      const client = new RelayClient(identity, relay, log);
      if (opts.stdio) {
        onShutdown(async () => client.close());
        await connectStdio(client, tunnel).catch(reportAndExit);
        process.exit(0);
      }
      const forwarder = new LocalForwarder(client, tunnel, log);
      onShutdown(() => forwarder.close());
      const listen = parseHostPort(opts.listen as string, '--listen', '127.0.0.1', true);
      const bound = await forwarder.listen(listen);
      if (listen.port === 0) process.stdout.write(`listening on ${bound.host}:${bound.port}\n`);
    });
}
