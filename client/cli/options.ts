/**
 * The numbers `rgrid` takes on its command line, parsed and range-checked before anything is sent: a
 * value that is not a number, or out of the range the control plane accepts, is a usage error (one line,
 * exit 2), never silently dropped. Ranges are the submit schema's (common/wire/dispatch-api.ts).
 */
import { parseDuration } from '../../common/duration.js';
import { RgridError } from '../../common/errors.js';
import { shown } from '../../common/names.js';
import { DEFAULT_RETRY_FOR_MS } from '../retry.js';

const MAX_TIMEOUT_S = 7 * 86_400;
const MIN_MEMORY_MB = 16;
const MAX_MEMORY_MB = 1_048_576;
const MAX_RETRY_FOR_MS = 7 * 86_400_000;

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

/** `--retry-for` / RGRID_RETRY_FOR: how long one control-plane outage is ridden out; 0 turns retries off. */
export function parseRetryFor(text: string | undefined, source: string): number {
  if (text === undefined || text === '') return DEFAULT_RETRY_FOR_MS;
  const ms = parseDuration(text, source);
  if (ms > MAX_RETRY_FOR_MS) throw new RgridError('bad_request', `${source} ${shown(text)} must be at most 7d`);
  return ms;
}
