/**
 * One retry policy for calls to another rgrid process over the network: exponential backoff with full
 * jitter (so a fleet of agents does not hammer a control plane that just came back in lock-step),
 * retrying only what another attempt can fix — the peer unreachable, a 5xx, a 429 — and never a 4xx,
 * which would fail the same way again. The total time spent is bounded by an abort signal rather than
 * by a count of attempts, so a caller can say "ride out an outage of up to N minutes".
 */
import { ExponentialBackoff, fullJitterGenerator, handleWhen, retry, type RetryPolicy } from 'cockatiel';
import { isRgridError, RgridError, type RgridErrorCode } from './errors.js';

/**
 * RgridError codes that mean "try again later": the peer answered 503 (or any 5xx or 429, which
 * errorFromBody maps to `unavailable`), or could not be reached at all (clients map that to `unavailable`).
 */
export const TRANSIENT_ERROR_CODES: ReadonlySet<RgridErrorCode> = new Set<RgridErrorCode>(['unavailable', 'engine_unavailable', 'shutting_down']);

/** System and undici error codes of a connection that failed or broke: the request may not have arrived. */
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

/** True when another attempt of the same call may succeed (see the module comment). */
export function isTransient(err: unknown): boolean {
  if (isRgridError(err)) return TRANSIENT_ERROR_CODES.has(err.code);
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return true;
  // fetch() wraps the socket error: TypeError('fetch failed', { cause }).
  const cause = (err as { cause?: unknown }).cause;
  return cause !== undefined && cause !== err && isTransient(cause);
}

export interface TransientRetryOptions {
  /** Upper bound of the first delay (full jitter: each delay is uniform in [0, bound)). Default 250 ms. */
  initialDelayMs?: number;
  /** The bound stops doubling here. Default 15 s: an agent notices a returning control plane within that. */
  maxDelayMs?: number;
  /** Attempts after the first; default unbounded (bound the time with a signal instead). */
  maxRetries?: number;
}

/** The cockatiel policy: retries transient failures with exponential backoff and full jitter. */
export function transientRetryPolicy(options: TransientRetryOptions = {}): RetryPolicy {
  return retry(handleWhen(isTransient), {
    maxAttempts: options.maxRetries ?? Number.POSITIVE_INFINITY,
    backoff: new ExponentialBackoff({
      generator: fullJitterGenerator,
      initialDelay: options.initialDelayMs ?? 250,
      maxDelay: options.maxDelayMs ?? 15_000,
    }),
  });
}

export interface RetryTransientOptions extends TransientRetryOptions {
  /** Give up (throwing the last error) once this much time has passed. */
  budgetMs: number;
  /** Also give up when this aborts (e.g. the claim was lost, the agent is shutting down). */
  signal?: AbortSignal;
  /** Called before each retry's delay, for a log line. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Runs `fn` until it succeeds, fails with a non-transient error, or the budget or signal runs out; the
 * error thrown is then the last one `fn` threw. `fn` gets a signal that aborts at the same moment.
 */
export async function retryTransient<T>(fn: (signal: AbortSignal) => Promise<T>, options: RetryTransientOptions): Promise<T> {
  const policy = transientRetryPolicy(options);
  const signals = [AbortSignal.timeout(options.budgetMs), ...(options.signal ? [options.signal] : [])];
  const listener = options.onRetry
    ? policy.onRetry((event) => options.onRetry?.('error' in event ? event.error : event.value, event.attempt, event.delay))
    : undefined;
  // Giving up must say why the calls failed, not that we stopped them: an attempt cut by the budget or the
  // caller's signal (or started after it, as cockatiel may after its delay) throws the last real error, or
  // `unavailable` when there was none — never a bare AbortError, which would read as a permanent failure.
  let last: { error: unknown } | undefined;
  const attempt = async (signal: AbortSignal): Promise<T> => {
    if (signal.aborted && last) throw last.error;
    try {
      return await fn(signal);
    } catch (err) {
      const aborted = signal.aborted && (err === signal.reason || ['AbortError', 'TimeoutError'].includes((err as Error | undefined)?.name ?? ''));
      if (aborted) throw last ? last.error : new RgridError('unavailable', `gave up waiting: ${(err as Error).message}`);
      last = { error: err };
      throw err;
    }
  };
  try {
    return await policy.execute(({ signal }) => attempt(signal), AbortSignal.any(signals));
  } finally {
    listener?.dispose();
  }
}
