/**
 * What the worker reports about a run, as pure functions: which failure reason a run result is, the
 * error line that goes with it, and text made storable before it is sent — the control plane stores
 * `error` and the logs in PostgreSQL `text`, which refuses NUL, and an answer of 500 there would lose the
 * run's result.
 */
import { storableLog } from '../../common/names.js';
import type { ExecutionFailure } from '../../common/wire/control-api.js';
import type { RunResult } from '../runner/run.js';

/** The wire's bound on `error` (Text(4000)). */
export const ERROR_MAX_CHARS = 4000;

/**
 * Text for the `error` field: NUL and unpaired surrogates replaced (storableLog), cut to the wire's bound
 * between two code points (a surrogate pair is never split), with an ellipsis when cut.
 */
export function reportError(message: string): string {
  const text = storableLog(message);
  if (text.length <= ERROR_MAX_CHARS) return text;
  let cut = ERROR_MAX_CHARS - 1;
  const last = text.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  return `${text.slice(0, cut)}…`;
}

type Outcome = Pick<RunResult, 'timed_out' | 'output_limit' | 'oom_killed' | 'exit_code'>;

/**
 * The failure reason of a finished run, or null for success. A timeout comes first (the agent killed
 * it); outputs over the limit next, since writing past the limit is also what makes a script fail with
 * "no space left" or run out of memory (its outputs live in memory-backed storage).
 */
export function runFailure(result: Outcome): ExecutionFailure | null {
  if (result.timed_out) return 'timeout';
  if (result.output_limit !== null) return 'output_limit';
  if (result.oom_killed) return 'memory_limit';
  return result.exit_code !== 0 ? 'nonzero_exit' : null;
}

export function runError(result: Outcome, timeoutMs: number): string | null {
  switch (runFailure(result)) {
    case 'timeout':
      return `killed after the ${timeoutMs / 1000} s timeout`;
    case 'output_limit':
      return reportError(`outputs cut at the output limit, none kept: ${result.output_limit ?? ''}`);
    case 'memory_limit':
      return 'killed: out of memory (memory limit)';
    default:
      return null;
  }
}
