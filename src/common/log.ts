// Structured logging (pino, JSON lines on stderr). Every part takes a child logger so lines say
// which part and which connection they belong to.
// Owns: logger construction. Must not: log secrets (keys, tokens); callers pass names only.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  const level = options.level ?? process.env.WARPSTONE_LOG_LEVEL ?? 'info';
  return pino(
    {
      level,
      base: options.name ? { cmd: options.name } : {},
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything: for library use and tests that assert on behaviour instead. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
