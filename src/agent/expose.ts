// What an agent exposes: `NAME=HOST:PORT` from the command line or the YAML config file, where
// an exposure is either the short `NAME: HOST:PORT` or `NAME: {target: HOST:PORT, check: ...}`
// with a health check (health-config.ts defines the `check:` block).
// Owns: parsing and validating exposures and the agent config file. Must not: open sockets.
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { parseDocument, LineCounter, isMap, isScalar } from 'yaml';
import { z } from 'zod';
import { parseHostPort, type HostPort } from '../common/hostport.js';
import { ConfigError, UsageError, errorMessage } from '../common/errors.js';
import { nameProblem } from '../pki/names.js';
import { CheckSchema, CheckSpecProblem, checkFromInput, type HealthCheckSpec } from './health-config.js';

export interface Exposure {
  name: string;
  target: HostPort;
  /** the target's health check; undefined = the default (TCP connect every 10 s) */
  check?: HealthCheckSpec;
  /**
   * An in-process service instead of a network target (the database relay's tunnel listener):
   * the agent answers 200 and hands over the stream with the user and source the relay sent;
   * `target` is then only the port announced to the relay.
   */
  handler?: (stream: Duplex, meta: { user: string; source: string }) => void;
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
    // each entry is checked on its own (ExposeEntrySchema), so errors point inside it
    expose: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

/** The long form of one exposure. */
const ExposeEntrySchema = z.object({ target: z.string().min(1), check: CheckSchema.optional() }).strict();

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
  // A zod issue as a ConfigError: the field path (under `prefix`) and the line of its key.
  const configError = (issue: z.core.$ZodIssue | undefined, prefix: Array<string | number> = []): ConfigError => {
    const fieldPath = [...prefix, ...(issue?.path ?? []).map((p) => (typeof p === 'symbol' ? String(p) : p))];
    const keys = issue && 'keys' in issue && Array.isArray(issue.keys) ? (issue.keys as string[]) : [];
    const field = [...fieldPath, ...keys].join('.') || undefined;
    const line = keys.length > 0 ? lineOf([...fieldPath, keys[0] as string]) ?? lineOf(fieldPath) : lineOf(fieldPath);
    return new ConfigError(path, line, field, issue?.message ?? 'invalid');
  };
  const parsed = AgentConfigSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw configError(parsed.error.issues[0]);
  const exposures: Exposure[] = [];
  for (const [name, value] of Object.entries(parsed.data.expose ?? {})) {
    let target: string;
    let check: HealthCheckSpec | undefined;
    if (typeof value === 'string') {
      target = value;
    } else if (value && typeof value === 'object' && !Array.isArray(value)) {
      const entry = ExposeEntrySchema.safeParse(value);
      if (!entry.success) throw configError(entry.error.issues[0], ['expose', name]);
      target = entry.data.target;
      try {
        check = entry.data.check === undefined ? undefined : checkFromInput(entry.data.check);
      } catch (err) {
        if (!(err instanceof CheckSpecProblem)) throw err;
        const fieldPath = ['expose', name, 'check', ...err.field.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p))];
        throw new ConfigError(path, lineOf(fieldPath), fieldPath.join('.'), err.message);
      }
    } else {
      throw new ConfigError(path, lineOf(['expose', name]), `expose.${name}`, 'expected HOST:PORT, or a map with target: HOST:PORT and check: ...');
    }
    try {
      exposures.push({ ...parseExpose(`${name}=${target}`, 'expose'), ...(check ? { check } : {}) });
    } catch (err) {
      throw new ConfigError(path, lineOf(['expose', name]), `expose.${name}`, errorMessage(err));
    }
  }
  return { identity: parsed.data.identity, relay: parsed.data.relay, exposures };
}
