// What an agent exposes: `NAME=HOST:PORT` from the command line or the YAML config file.
// Owns: parsing and validating exposures and the agent config file. Must not: open sockets.
import { readFileSync } from 'node:fs';
import { parseDocument, LineCounter, isMap, isScalar } from 'yaml';
import { z } from 'zod';
import { parseHostPort, type HostPort } from '../common/hostport.js';
import { ConfigError, UsageError, errorMessage } from '../common/errors.js';
import { nameProblem } from '../pki/names.js';

export interface Exposure {
  name: string;
  target: HostPort;
}

export function parseExpose(text: string, what = '--expose'): Exposure {
  const eq = text.indexOf('=');
  if (eq < 0) throw new UsageError(`${what} '${text}': expected NAME=HOST:PORT, e.g. web=127.0.0.1:8080`);
  const name = text.slice(0, eq);
  const problem = nameProblem(name, 'tunnel');
  if (problem) throw new UsageError(`${what} '${text}': ${problem}`);
  return { name, target: parseHostPort(text.slice(eq + 1), `${what} ${name}`) };
}

export function checkUnique(exposures: Exposure[]): Exposure[] {
  const seen = new Set<string>();
  for (const e of exposures) {
    if (seen.has(e.name)) throw new UsageError(`tunnel '${e.name}' is exposed twice; each name may appear once`);
    seen.add(e.name);
  }
  return exposures;
}

const AgentConfigSchema = z
  .object({
    identity: z.string().min(1).optional(),
    relay: z.string().min(1).optional(),
    expose: z.record(z.string(), z.string()).optional(),
  })
  .strict();

export interface AgentConfig {
  identity?: string;
  relay?: string;
  exposures: Exposure[];
}

/** Reads an agent YAML file; errors name the file, the line and the field. */
export function loadAgentConfig(path: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, undefined, undefined, `cannot be read: ${errorMessage(err)}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const line = yamlError.pos ? lines.linePos(yamlError.pos[0]).line : undefined;
    throw new ConfigError(path, line, undefined, `not valid YAML: ${yamlError.message.split('\n')[0]}`);
  }
  // The line of a field is the line of its key (so an unknown key points at itself, not at
  // its value); for a missing field, the line of the nearest parent that exists.
  const lineOf = (fieldPath: Array<string | number>): number | undefined => {
    for (let depth = fieldPath.length; depth > 0; depth--) {
      const parent = depth === 1 ? doc.contents : doc.getIn(fieldPath.slice(0, depth - 1), true);
      if (!isMap(parent)) continue;
      const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === fieldPath[depth - 1]);
      const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
      if (range) return lines.linePos(range[0]).line;
    }
    return undefined;
  };
  const parsed = AgentConfigSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const fieldPath = (issue?.path ?? []).map((p) => (typeof p === 'symbol' ? String(p) : p));
    const keys = issue && 'keys' in issue && Array.isArray(issue.keys) ? (issue.keys as string[]) : [];
    const field = [...fieldPath, ...keys].join('.') || undefined;
    const line = keys.length > 0 ? lineOf([...fieldPath, keys[0] as string]) ?? lineOf(fieldPath) : lineOf(fieldPath);
    throw new ConfigError(path, line, field, issue?.message ?? 'invalid');
  }
  const exposures: Exposure[] = [];
  for (const [name, target] of Object.entries(parsed.data.expose ?? {})) {
    try {
      exposures.push(parseExpose(`${name}=${target}`, 'expose'));
    } catch (err) {
      throw new ConfigError(path, lineOf(['expose', name]), `expose.${name}`, errorMessage(err));
    }
  }
  return { identity: parsed.data.identity, relay: parsed.data.relay, exposures };
}
