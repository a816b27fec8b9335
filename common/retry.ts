/**
 * The one retry policy of every rgrid process calling another over the network (the agent's claim loop
 * and sync, the `rgrid` CLI):
 *   - what is retried: only what another attempt can fix — the peer unreachable or the connection broken,
 *     a 5xx, a 429 — never another 4xx, which would fail the same way again (`isTransient`);
 *   - how long: bounded by time (a budget, and the caller's signal) rather than by a count of attempts,
 *     so a caller can say "ride out an outage of up to N minutes";
 *   - how often: exponential backoff with FULL jitter (`backoffDelay`): each delay is uniform between 0
 *     and a bound that doubles per failure up to a cap. Spreading the whole interval, not half of it,
 *     is what keeps a fleet that lost its control plane at the same moment from coming back in lock-step.
 * The sync's circuit breaker (agent/sync/breaker.ts) schedules with the same `backoffDelay`.
 *
 * cockatiel runs the retry loop, and is loaded on the first failure only: a CLI run that never meets an
 * outage does not pay for loading it (tens of milliseconds of a command whose cached run takes a few
 * hundred).
 */
import { RgridError, isRgridError, type RgridErrorCode } from './errors.js';
import { HttpStatusError, UnreachableError } from './http-answer.js';

export interface BackoffBounds {
  /** The bound of the first delay. */
  initialMs: number;
  /** The bound stops doubling here. */
  maxMs: number;
}

/**
 * The delay before retry number `attempt` (1 = the first retry): uniform in [0, min(maxMs,
 * initialMs · 2^(attempt-1))) — full jitter. 0 for attempt ≤ 0.
 */
export function backoffDelay(attempt: number, bounds: BackoffBounds, random: () => number = Math.random): number {
  if (attempt <= 0) return 0;
  const bound = Math.min(bounds.maxMs, bounds.initialMs * 2 ** Math.min(attempt - 1, 52));
  return Math.floor(random() * bound);
}

/**
 * RgridError codes that mean "try again later", for errors raised on this side: the peer or the engine
 * is unavailable, shutting down, or limiting the rate. An error answer is judged by its status instead.
 */
const TRANSIENT_ERROR_CODES: ReadonlySet<RgridErrorCode> = new Set<RgridErrorCode>(['unavailable', 'engine_unavailable', 'shutting_down', 'rate_limited']);

/**
 * System and undici error codes of a connection that failed or broke: the request may not have arrived.
 * ENOTFOUND is left out on purpose: a misspelt host name fails at once instead of after minutes of
 * retries; EAI_AGAIN is the resolver's own "try again".
 */
const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'timeout',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

/** True when another attempt of the same (idempotent) call may succeed (see the module comment). */
export function isTransient(err: unknown): boolean {
  if (err instanceof UnreachableError) return NETWORK_ERROR_CODES.has(err.errno);
  if (err instanceof HttpStatusError) return err.status >= 500 || err.status === 429;
  if (isRgridError(err)) return TRANSIENT_ERROR_CODES.has(err.code);
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return true;
  // fetch() and stream errors wrap the socket error: TypeError('fetch failed', { cause }).
  const cause = (err as { cause?: unknown }).cause;
  return cause !== undefined && cause !== err && isTransient(cause);
}

/**
 * Worth repeating a call that is NOT idempotent (a submit) for: nothing reached a handler, so nothing
 * can have been created — the connection was refused, or the rate limiter answered.
 */
export function isSafeToResubmit(err: unknown): boolean {
  return (err instanceof UnreachableError && err.errno === 'ECONNREFUSED') || (err instanceof HttpStatusError && err.status === 429);
}

export interface RetryTransientOptions {
  /** Give up (throwing the last error) once this much time has passed; 0: one attempt, no retries. */
  budgetMs: number;
  /** Bound of the first delay (default 250 ms) and its cap (default 15 s: a returning peer is noticed within that). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Also give up when this aborts (e.g. the claim was lost, the agent is shutting down). */
  signal?: AbortSignal;
  /** Which failures are retried; default `isTransient`. */
  retryable?: (err: unknown) => boolean;
  /** Called before each retry's delay (attempt 1 = the first retry), for a log line or a notice. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Tests make the jitter deterministic. */
  random?: () => number;
}

const DEFAULT_INITIAL_DELAY_MS = 250;
const DEFAULT_MAX_DELAY_MS = 15_000;

const isAbort = (err: unknown): boolean => ['AbortError', 'TimeoutError'].includes((err as Error | undefined)?.name ?? '');

/**
 * Runs `fn` until it succeeds, fails with an error that is not retryable, or the budget or signal runs
 * out; the error thrown is then the last one `fn` threw. `fn` gets a signal that aborts at that moment.
 */
export async function retryTransient<T>(fn: (signal: AbortSignal) => Promise<T>, options: RetryTransientOptions): Promise<T> {
  if (options.budgetMs <= 0) return fn(options.signal ?? new AbortController().signal);
  const retryable = options.retryable ?? isTransient;
  const deadline = Date.now() + options.budgetMs;
  const budget = AbortSignal.any([AbortSignal.timeout(options.budgetMs), ...(options.signal ? [options.signal] : [])]);
  // Giving up must say why the calls failed, not that we stopped them: an attempt cut by the budget or the
  // caller's signal (or started after it) throws the last real error, or `unavailable` when there was
  // none — never a bare AbortError, which would read as a permanent failure.
  let last: { error: unknown } | undefined;
  const attempt = async (signal: AbortSignal): Promise<T> => {
    if (signal.aborted && last) throw last.error;
    try {
      return await fn(signal);
    } catch (err) {
      if (signal.aborted && (err === signal.reason || isAbort(err))) {
        throw last ? last.error : new RgridError('unavailable', `gave up waiting: ${(err as Error).message}`);
      }
      last = { error: err };
      throw err;
    }
  };

  let replay: { error: unknown } | undefined;
  try {
    return await attempt(budget);
  } catch (err) {
    if (budget.aborted || !retryable(err)) throw err;
    replay = { error: err };
  }
  const { DelegateBackoff, handleWhen, retry } = await import('cockatiel');
  const bounds = { initialMs: options.initialDelayMs ?? DEFAULT_INITIAL_DELAY_MS, maxMs: options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS };
  const policy = retry(handleWhen(retryable), {
    maxAttempts: Number.MAX_SAFE_INTEGER, // bounded by the budget, not a count
    // Never sleeps past the budget: giving up is not delayed by a long last wait.
    backoff: new DelegateBackoff((context: { attempt: number }) => Math.max(0, Math.min(backoffDelay(context.attempt, bounds, options.random), deadline - Date.now()))),
  });
  const listener = options.onRetry
    ? policy.onRetry((event) => options.onRetry?.('error' in event ? event.error : event.value, event.attempt, event.delay))
    : undefined;
  try {
    // The first attempt already failed outside the policy (before cockatiel was loaded): it is replayed
    // as the policy's first failure, so attempts, delays and onRetry count it like any other.
    return await policy.execute(async ({ signal }) => {
      if (replay) {
        const { error } = replay;
        replay = undefined;
        throw error;
      }
      return await attempt(signal);
    }, budget);
  } finally {
    listener?.dispose();
  }
}
