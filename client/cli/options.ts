/**
 * The numbers `rgrid` takes on its command line, parsed and range-checked before anything is sent: a
 * value that is not a number, or out of the range the control plane accepts, is a usage error (one line,
 * exit 2), never silently dropped. `--timeout` and `--memory` are shared with `rgrid-agent run`
 * (common/cli-flags.ts).
 */
import { parseDuration } from '../../common/duration.js';
import { RgridError } from '../../common/errors.js';
import { shown } from '../../common/names.js';
import { DEFAULT_RETRY_FOR_MS } from '../retry.js';

export { parseMemory, parseTimeout } from '../../common/cli-flags.js';

const MAX_RETRY_FOR_MS = 7 * 86_400_000;

/** `--retry-for` / RGRID_RETRY_FOR: how long one control-plane outage is ridden out; 0 turns retries off. */
export function parseRetryFor(text: string | undefined, source: string): number {
  if (text === undefined || text === '') return DEFAULT_RETRY_FOR_MS;
  const ms = parseDuration(text, source);
  if (ms > MAX_RETRY_FOR_MS) throw new RgridError('bad_request', `${source} ${shown(text)} must be at most 7d`);
  return ms;
}
