/**
 * The client's tolerance of control-plane outages: a restart of the control plane must not end an
 * `rgrid run` whose execution goes on. Calls that are safe to repeat (wait, status, logs, manifests,
 * blob uploads and downloads: all idempotent) are retried through connection errors, 5xx and 429 for a
 * bounded time per outage, with the policy every rgrid process uses (common/retry.ts: exponential
 * backoff with full jitter, cockatiel loaded on the first failure only). Submitting is not idempotent
 * (the control plane has no request id to deduplicate on), so a submit is repeated only when it provably
 * never reached a handler: the connection was refused, or the rate limiter answered 429.
 *
 * What this module adds to the shared policy is the user's side of it: one line when an outage starts
 * and one when it ends, and the time spent in the final error.
 */
import { formatDuration } from '../common/duration.js';
import { RgridError } from '../common/errors.js';
import { isTransient, retryTransient } from '../common/retry.js';

// The error classes and predicates the client's callers (and tests) know from here.
export { HttpStatusError, UnreachableError } from '../common/http-answer.js';
export { isSafeToResubmit, isTransient } from '../common/retry.js';

export const DEFAULT_RETRY_FOR_MS = 10 * 60_000;
const INITIAL_DELAY_MS = 200;
const MAX_DELAY_MS = 10_000;

export interface RetryOptions {
  /** How long one outage is ridden out; 0 turns retries off. */
  retryForMs: number;
  /** One line for the user when an outage starts and when it ends. */
  notice?: (line: string) => void;
  /** Backoff bounds (defaults 200 ms and 10 s); tests shorten them. */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

/** Runs `fn`; through failures that `retryable` accepts, again and again until `retryForMs` has passed. */
export async function retrying<T>(what: string, fn: () => Promise<T>, options: RetryOptions, retryable: (err: unknown) => boolean = isTransient): Promise<T> {
  const started = Date.now();
  let retried = false;
  try {
    const result = await retryTransient(() => fn(), {
      budgetMs: options.retryForMs,
      initialDelayMs: options.initialDelayMs ?? INITIAL_DELAY_MS,
      maxDelayMs: options.maxDelayMs ?? MAX_DELAY_MS,
      retryable,
      onRetry: (err) => {
        if (retried) return;
        retried = true;
        options.notice?.(`rgrid: ${what}: ${(err as Error).message}; control plane unreachable, retrying for up to ${formatDuration(options.retryForMs)}`);
      },
    });
    if (retried) options.notice?.(`rgrid: ${what}: control plane reachable again`);
    return result;
  } catch (err) {
    if (!retried || !retryable(err)) throw err;
    const e = err as RgridError;
    throw new RgridError(e.code, `${e.message}; gave up after retrying for ${Math.round((Date.now() - started) / 1000)} s`, e.detail);
  }
}
