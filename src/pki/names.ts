// Validation of identity and tunnel names. A name ends up in a certificate subject, in log lines,
// in HTTP request lines (VPN-Warp CONNECT) and in database rows, so it is kept to a small,
// printable alphabet, and every refusal says which rule broke and where.
// Owns: the name rules. Must not: touch the store or certificates.
import { UsageError } from '../common/errors.js';

export const MAX_NAME_LENGTH = 64;
const ALLOWED = /^[A-Za-z0-9._@-]$/;

export type NameKind = 'user' | 'agent' | 'tunnel' | 'identity';

function describeChar(ch: string): string {
  const code = ch.codePointAt(0) ?? 0;
  return `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Returns the first broken rule as a sentence, or undefined when the name is good. */
export function nameProblem(name: string, kind: NameKind): string | undefined {
  const label = `${kind} name ${JSON.stringify(name)}`;
  if (name.length === 0) return `${kind} name is empty`;
  if (name.length > MAX_NAME_LENGTH) return `${label} is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH}`;
  const chars = [...name];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (/\s/u.test(ch)) {
      const where = i === 0 ? ' (leading)' : i === chars.length - 1 ? ' (trailing)' : '';
      return `${label} contains whitespace (${describeChar(ch)}) at position ${i + 1}${where}; names may not contain whitespace`;
    }
    if (/\p{Cc}/u.test(ch)) {
      return `${label} contains a control character (${describeChar(ch)}) at position ${i + 1}; names may not contain control characters`;
    }
  }
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (!ALLOWED.test(ch)) {
      return `${label} contains ${JSON.stringify(ch)} at position ${i + 1}; allowed are letters, digits, '.', '_', '-' and '@'`;
    }
  }
  if (!/^[A-Za-z0-9]/.test(name)) return `${label} must start with a letter or a digit`;
  return undefined;
}

export function assertValidName(name: string, kind: NameKind): string {
  const problem = nameProblem(name, kind);
  if (problem) throw new UsageError(problem, 'WS_BAD_NAME');
  return name;
}
