// Debian's stone as an SSL pair, the way VPN-Warp users chained it: one stone terminates TLS
// with the relay's certificate and forwards plain TCP to iperf3; the other accepts plain TCP and
// originates TLS with alice's identity, verifying the server against the warpstone CA. One TLS
// leg, two processes, C and OpenSSL: the reference for what a TLS hop can cost on this machine.
// The terminating stone does not demand the client certificate: with `-z verify`, stone 2.4 on
// OpenSSL 3.0 keeps a stale error from verification and cuts each stream at its end (iperf3
// then fails with "Broken pipe"). That changes the handshake only, not the cost per byte.
// Two variants: stone's default transfer buffer, and `-X 16384` (one TLS record per read).
// Owns: the stone processes. Must not: measure.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Procs } from './procs.ts';
import { freePort } from './procs.ts';
import type { Peer, PeerKey } from './peer.ts';
import type { Services } from './services.ts';

export interface StoneMaterial {
  /** key and certificate of the TLS-terminating side (from the warpstone relay's identity) */
  serverKey: string;
  serverCert: string;
  /** key and certificate of the originating side (from alice's identity file) */
  clientKey: string;
  clientCert: string;
  caPem: string;
}

export async function startStonePair(procs: Procs, services: Services, tls: StoneMaterial, xfer: number | undefined): Promise<Peer> {
  const key: PeerKey = xfer === undefined ? 'stone' : 'stone16k';
  const x = xfer === undefined ? [] : ['-X', String(xfer)];
  const sslPort = await freePort();
  const plainPort = await freePort();
  const server = procs.start(`${key}-server`, 'stone', [
    '-r', ...x,
    '-z', `key=${tls.serverKey}`, '-z', `cert=${tls.serverCert}`,
    `127.0.0.1:${services.iperfPort}`, `127.0.0.1:${sslPort}/ssl`,
  ]);
  await procs.waitListening(server, sslPort);
  const client = procs.start(`${key}-client`, 'stone', [
    '-r', ...x,
    '-q', 'verify', '-q', `CAfile=${tls.caPem}`, '-q', `key=${tls.clientKey}`, '-q', `cert=${tls.clientCert}`,
    `127.0.0.1:${sslPort}/ssl`, `127.0.0.1:${plainPort}`,
  ]);
  await procs.waitListening(client, plainPort);
  const xs = x.length > 0 ? `${x.join(' ')} ` : '';
  return {
    key,
    label: xfer === undefined ? 'stone SSL pair (default buffer)' : `stone SSL pair (-X ${xfer})`,
    iperfPort: plainPort,
    commands: [
      `stone -r ${xs}-z key=relay.key -z cert=relay.crt 127.0.0.1:IPERF 127.0.0.1:S/ssl`,
      `stone -r ${xs}-q verify -q CAfile=ca.pem -q key=alice.key -q cert=alice.crt 127.0.0.1:S/ssl 127.0.0.1:P`,
    ],
    watched: {
      iperf: [
        { name: 'stone (plain → TLS)', pid: client.pid, tree: false },
        { name: 'stone (TLS → plain)', pid: server.pid, tree: false },
      ],
      echo: [],
    },
  };
}

/** The first PEM block whose label matches, e.g. "PRIVATE KEY" or "CERTIFICATE". */
function pemBlock(text: string, label: RegExp): string {
  const blocks = text.match(/-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----\n?/g) ?? [];
  const found = blocks.find((b) => label.test(b.slice(11, b.indexOf('-----', 11))));
  if (!found) throw new Error(`no ${String(label)} block in an identity file`);
  return found;
}

/** Key and leaf certificate in separate files, so stone loads exactly those two blocks. */
function splitIdentity(identityFile: string, dir: string, name: string): { key: string; cert: string } {
  const text = readFileSync(identityFile, 'utf8');
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  writeFileSync(key, pemBlock(text, /PRIVATE KEY$/), { mode: 0o600 });
  writeFileSync(cert, pemBlock(text, /^CERTIFICATE$/));
  return { key, cert };
}

export function stoneMaterial(warpstoneHome: string, benchDir: string): StoneMaterial {
  const server = splitIdentity(join(warpstoneHome, 'relay.pem'), benchDir, 'relay');
  const client = splitIdentity(join(benchDir, 'alice.pem'), benchDir, 'alice');
  return { serverKey: server.key, serverCert: server.cert, clientKey: client.key, clientCert: client.cert, caPem: join(warpstoneHome, 'ca.pem') };
}
