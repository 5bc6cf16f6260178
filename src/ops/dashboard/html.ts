// Safe HTML building for the dashboard: a tagged template that escapes every interpolated value
// unless it is already SafeHtml, plus the number, size and time formats the pages use.
// Every name shown on a page (agents, tunnels, identities from certificates, addresses, reasons)
// can come from outside, so nothing is ever concatenated into markup unescaped.
// Owns: escaping and display formats. Must not: read the relay or the store.

export class SafeHtml {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c] ?? c);
}

type Fragment = SafeHtml | string | number | boolean | null | undefined | readonly Fragment[];

function render(value: Fragment): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.text;
  if (Array.isArray(value)) return value.map((v: Fragment) => render(v)).join('');
  return escapeHtml(String(value));
}

/** html`<td>${name}</td>`: values are escaped; SafeHtml and arrays of it pass as markup. */
export function html(strings: TemplateStringsArray, ...values: Fragment[]): SafeHtml {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? '');
  return new SafeHtml(out);
}

/** A path segment or query value; the result is then escaped again by html`` when placed in an attribute. */
export function urlPart(text: string): string {
  return encodeURIComponent(text);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '-';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** "2024-05-01 12:00:03Z" (UTC, to the second) from a Date or ISO text; "-" for nothing. */
export function formatTime(value: Date | string | null | undefined): string {
  if (value === null || value === undefined) return '-';
  const date = typeof value === 'string' ? new Date(value) : value;
  if (Number.isNaN(date.getTime())) return typeof value === 'string' ? value : '-';
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function ago(value: Date | string, now: number): string {
  const date = typeof value === 'string' ? new Date(value) : value;
  const ms = now - date.getTime();
  return Number.isFinite(ms) ? `${formatDuration(Math.max(0, ms))} ago` : '-';
}
