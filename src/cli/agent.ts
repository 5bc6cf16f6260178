// `warpstone agent`: dial out to the relay and serve the exposed targets.
import type { Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseHostPort } from '../common/hostport.js';
import { UsageError } from '../common/errors.js';
import { readIdentityFile } from '../pki/pem.js';
import { Agent } from '../agent/agent.js';
import { checkUnique, loadAgentConfig, parseExpose, type Exposure } from '../agent/expose.js';
import { collect, onShutdown } from './shared.js';

export function register(program: Command): void {
  program
    .command('agent')
    .description('dial out to the relay and expose local services as named tunnels')
    .option('--identity <file>', 'agent identity file from `warpstone issue agent`')
    .option('--relay <host:port>', 'the relay to dial')
    .option('--expose <name=host:port>', 'expose a service as a tunnel (repeatable)', collect, [])
    .option('--config <file>', 'YAML file with identity, relay and expose: {name: host:port}')
    .action(async (opts: { identity?: string; relay?: string; expose: string[]; config?: string }) => {
      const config = opts.config ? loadAgentConfig(opts.config) : { exposures: [] as Exposure[], identity: undefined, relay: undefined };
      const identityPath = opts.identity ?? config.identity;
      const relayText = opts.relay ?? config.relay;
      if (!identityPath) throw new UsageError('agent: --identity FILE is required (or identity: in --config)');
      if (!relayText) throw new UsageError('agent: --relay HOST:PORT is required (or relay: in --config)');
      const exposures = checkUnique([...config.exposures, ...opts.expose.map((e) => parseExpose(e))]);
      if (exposures.length === 0) throw new UsageError('agent: nothing to expose; add --expose NAME=HOST:PORT');
      const identity = readIdentityFile(identityPath);
      if (identity.role !== 'agent') throw new UsageError(`agent: ${identityPath} holds a ${identity.role} certificate; issue one with 'warpstone issue agent NAME'`);
      const relay = parseHostPort(relayText, '--relay');
      const log = createLogger({ name: 'agent' });
      const agent = new Agent({ identity, relay, exposures, log });
      onShutdown(() => agent.stop());
      agent.start();
    });
}
