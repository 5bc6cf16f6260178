// Small numeric helpers shared by the measurements and the report: percentiles and formatting.
// Owns: arithmetic on samples and number formatting. Must not: do I/O.

/** Nearest-rank percentile of unsorted samples (p in 0..100). */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export function mean(samples: number[]): number {
  return samples.length === 0 ? Number.NaN : samples.reduce((a, b) => a + b, 0) / samples.length;
}

export const gbit = (bps: number | undefined): string => (bps === undefined ? 'n/a' : `${(bps / 1e9).toFixed(2)} Gbit/s`);
export const micros = (us: number): string => `${us.toFixed(0)} µs`;
export const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || !Number.isFinite(a / b) ? 'n/a' : `${(a / b).toFixed(2)}×`;
export const int = (n: number): string => Math.round(n).toLocaleString('en-US');
export const verdict = (met: boolean | undefined): string => (met === undefined ? 'not measured' : met ? '**met**' : '**not met**');
