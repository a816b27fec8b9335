import { RgridError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `2s`, `15m`, `12h`, `30d` (or a bare number of seconds) into milliseconds. */
export function parseDuration(text: string, field = 'duration'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) {
    throw new RgridError('bad_request', `${field}: "${text}" is not a duration (examples: 500ms, 2s, 15m, 12h, 30d)`);
  }
  const value = Number(match[1]);
  const unit = match[2] ?? 's';
  return Math.round(value * (UNIT_MS[unit] ?? 1000));
}

/** The shortest exact spelling of `ms` in the units parseDuration reads (`90000` → `90s`, `600000` → `10m`). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
