/**
 * Numbers and durations from the command lines of the three CLIs, parsed and range-checked before
 * anything starts or is sent: a value that is not a number, or outside the range the receiving side
 * accepts, is a usage error (`bad_request`: one line, exit 2) that names the flag, never a value
 * silently dropped or a schema path the user never typed.
 *
 * The daemons' ranges are read from their config schemas (`rangeOf`), so a flag and its config key can
 * never disagree about what is allowed.
 */
import { formatDuration, parseDuration } from './duration.js';
import { RgridError } from './errors.js';
import { shown } from './names.js';

/** What a flag accepts; bounds are inclusive unless `exclusiveMin`. */
export interface NumberRange {
  integer?: boolean;
  min?: number;
  exclusiveMin?: number;
  max?: number;
}

/** The range a TypeBox number or integer property declares (`minimum`, `exclusiveMinimum`, `maximum`). */
export function rangeOf(property: unknown): NumberRange {
  const p = (property ?? {}) as { type?: unknown; minimum?: unknown; exclusiveMinimum?: unknown; maximum?: unknown };
  const range: NumberRange = { integer: p.type === 'integer' };
  if (typeof p.minimum === 'number') range.min = p.minimum;
  if (typeof p.exclusiveMinimum === 'number') range.exclusiveMin = p.exclusiveMinimum;
  if (typeof p.maximum === 'number') range.max = p.maximum;
  return range;
}

function rangeText(range: NumberRange, show: (n: number) => string = String): string {
  const low = range.exclusiveMin !== undefined ? `more than ${show(range.exclusiveMin)}` : range.min !== undefined ? `at least ${show(range.min)}` : '';
  const high = range.max !== undefined ? `at most ${show(range.max)}` : '';
  return [low, high].filter(Boolean).join(' and ');
}

function inRange(value: number, range: NumberRange): boolean {
  if (range.min !== undefined && value < range.min) return false;
  if (range.exclusiveMin !== undefined && value <= range.exclusiveMin) return false;
  return range.max === undefined || value <= range.max;
}

/** `--build-concurrency 4`, `--cpus 1.5`: plain decimal notation only (no `1e3`, `0x10`, `Infinity`). */
export function numberFlag(text: string | undefined, flag: string, range: NumberRange): number | undefined {
  if (text === undefined) return undefined;
  const syntax = range.integer ? /^\s*\d{1,16}\s*$/ : /^\s*\d{1,16}(?:\.\d{1,16})?\s*$/;
  const value = syntax.test(text) ? Number(text) : Number.NaN;
  if (!Number.isFinite(value) || !inRange(value, range)) {
    const what = range.integer ? 'a whole number' : 'a number';
    const bounds = rangeText(range);
    throw new RgridError('bad_request', `${flag} must be ${what}${bounds ? ` ${bounds}` : ''}, got ${shown(text)}`);
  }
  return value;
}

/**
 * `--ttl 30d`, `--drain-timeout 90` (seconds): a duration (common/duration.ts) returned in `unitMs`
 * units (1 for milliseconds, 1000 for seconds), checked against `range` in those units.
 */
export function durationFlag(text: string | undefined, flag: string, range: NumberRange, unitMs = 1): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseDuration(text, flag);
  const value = ms / unitMs;
  if (!inRange(value, range)) {
    throw new RgridError('bad_request', `${flag} must be ${rangeText(range, (n) => formatDuration(n * unitMs))}, got ${shown(text)}`);
  }
  return value;
}

// ---- run requests: the same flags on `rgrid run` and `rgrid-agent run` ----------------------------------
// Ranges are the submit schema's (common/wire/dispatch-api.ts); a worker lowers them further to its own
// ceilings.
const MAX_TIMEOUT_S = 7 * 86_400;
const MIN_MEMORY_MB = 16;
const MAX_MEMORY_MB = 1_048_576;

/** `--timeout`: seconds (`90`) or a duration (`90s`, `15m`, `2h`); more than 0, at most 7 days. */
export function parseTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = parseDuration(text, '--timeout');
  if (ms <= 0 || ms > MAX_TIMEOUT_S * 1000) throw new RgridError('bad_request', `--timeout ${shown(text)} must be more than 0 and at most 7d`);
  return ms / 1000;
}

/** `--memory`: whole megabytes, 16 to 1048576. */
export function parseMemory(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const mb = /^\d{1,8}$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!(mb >= MIN_MEMORY_MB && mb <= MAX_MEMORY_MB)) {
    throw new RgridError('bad_request', `--memory ${shown(text)} must be a whole number of MB from ${MIN_MEMORY_MB} to ${MAX_MEMORY_MB}`);
  }
  return mb;
}
