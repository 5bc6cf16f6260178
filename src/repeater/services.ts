// getservbyname() for the stone grammar: a service name to its port, from /etc/services, read
// once. (logline.ts parseServices goes the other way, port to name, for printing.)
// Owns: name -> port lookups. Must not: resolve host names.
import { readFileSync } from 'node:fs';

let services: Map<string, number> | undefined;

function load(): Map<string, number> {
  const map = new Map<string, number>();
  let text = '';
  try {
    text = readFileSync('/etc/services', 'utf8');
  } catch {
    return map;
  }
  for (const line of text.split('\n')) {
    const [service, portProto, ...aliases] = line.replace(/#.*/, '').trim().split(/\s+/);
    const m = /^(\d+)\/(tcp|udp)$/.exec(portProto ?? '');
    if (!service || !m) continue;
    for (const name of [service, ...aliases]) {
      const key = `${name}/${m[2]}`;
      if (!map.has(key)) map.set(key, Number(m[1]));
    }
  }
  return map;
}

/** The port of a service name, or undefined when it is unknown or /etc/services is missing. */
export function lookupService(name: string, protocol: 'tcp' | 'udp'): number | undefined {
  services ??= load();
  return services.get(`${name}/${protocol}`);
}
