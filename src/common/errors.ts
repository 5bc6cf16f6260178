// Error classes shared by every part. Each carries a stable `code` that logs, tests and callers
// match on; messages are written for the person who has to fix the problem.
// Owns: the error taxonomy. Must not: import any other part of warpstone.

export class WarpstoneError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A value given by the user (flag, name, file) is wrong. Exit code 2 from the CLI. */
export class UsageError extends WarpstoneError {
  constructor(message: string, code = 'WS_USAGE') {
    super(code, message);
  }
}

/** A configuration file is wrong: names the file, line and field. */
export class ConfigError extends WarpstoneError {
  readonly file: string;
  readonly line: number | undefined;
  readonly field: string | undefined;
  constructor(file: string, line: number | undefined, field: string | undefined, problem: string) {
    const where = `${file}${line === undefined ? '' : `:${line}`}`;
    super('WS_CONFIG', `${where}: ${field ? `${field}: ` : ''}${problem}`);
    this.file = file;
    this.line = line;
    this.field = field;
  }
}

/** State on disk (home directory, CA, store) is missing or would be overwritten. */
export class StateError extends WarpstoneError {
  constructor(message: string, code = 'WS_STATE') {
    super(code, message);
  }
}

/** A certificate or identity file cannot be used. */
export class IdentityError extends WarpstoneError {
  constructor(message: string, code = 'WS_IDENTITY') {
    super(code, message);
  }
}

/**
 * A stream was refused by policy or by the far end. `status` is the HTTP status used on the
 * wire (403 not allowed, 404 unknown tunnel, 503 tunnel offline, 502 target refused).
 */
export class StreamRefused extends WarpstoneError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** The peer spoke something that is not the protocol. Closes that one connection. */
export class ProtocolError extends WarpstoneError {
  constructor(message: string, code = 'WS_PROTOCOL') {
    super(code, message);
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function errorCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
