/**
 * The client's tolerance of control-plane outages: a restart of the control plane must not end an
 * `rgrid run` whose execution goes on. Calls that are safe to repeat (wait, status, logs, manifests,
 * blob uploads and downloads: all idempotent) are retried through connection errors, 5xx and 429 with
 * exponential backoff and full jitter (cockatiel) for a bounded time per outage. Submitting is not
 * idempotent (the control plane has no request id to deduplicate on), so a submit is repeated only when
 * it provably never reached a handler: the connection was refused, or the rate limiter answered 429.
 *
 * cockatiel is loaded on the first failure only: a run that never meets an outage does not pay for
 * loading it (tens of milliseconds of a CLI whose cached run takes a few hundred).
 */
import { RgridError, type RgridErrorCode } from '../common/errors.js';
import { formatDuration } from '../common/duration.js';

export const DEFAULT_RETRY_FOR_MS = 10 * 60_000;
const INITIAL_DELAY_MS = 200;
const MAX_DELAY_MS = 10_000;

/** The control plane could not be reached, or the connection broke before a whole answer arrived. */
export class UnreachableError extends RgridError {
  /** The socket error code (`ECONNREFUSED`, `ECONNRESET`, …), or `timeout`. */
  readonly errno: string;
  constructor(url: string, cause: Error) {
    const errno = (cause as NodeJS.ErrnoException).code ?? 'timeout';
    super('unavailable', `control plane at ${url} unreachable: ${errno === 'timeout' ? cause.message : errno}`);
    this.errno = errno;
  }
}

/** An HTTP error answer, rebuilt from the control plane's error body, keeping the status it came with. */
export class HttpStatusError extends RgridError {
  constructor(readonly status: number, code: RgridErrorCode, message: string, detail?: Record<string, unknown>) {
    super(code, message, detail);
  }
}

/**
 * Connection failures that a restart or a network blip causes. ENOTFOUND is left out on purpose: a
 * misspelt host name should fail at once, not after ten minutes; EAI_AGAIN is the resolver's "try again".
 */
const TRANSIENT_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'timeout']);

/** Worth repeating an idempotent call for: a connection failure, a 5xx or a 429. */
export function isTransient(err: unknown): boolean {
  if (err instanceof UnreachableError) return TRANSIENT_ERRNO.has(err.errno);
  if (err instanceof HttpStatusError) return err.status >= 500 || err.status === 429;
  return false;
}

/** Worth repeating a submit for: nothing reached a handler, so nothing can have been created. */
export function isSafeToResubmit(err: unknown): boolean {
  return (err instanceof UnreachableError && err.errno === 'ECONNREFUSED') || (err instanceof HttpStatusError && err.status === 429);
}

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
  try {
    return await fn();
  } catch (err) {
    if (options.retryForMs <= 0 || !retryable(err)) throw err;
    options.notice?.(`rgrid: ${what}: ${(err as Error).message}; control plane unreachable, retrying for up to ${formatDuration(options.retryForMs)}`);
  }
  const { ExponentialBackoff, fullJitterGenerator, handleWhen, retry } = await import('cockatiel');
  const deadline = started + options.retryForMs;
  const policy = retry(handleWhen((err) => retryable(err) && Date.now() < deadline), {
    maxAttempts: Number.MAX_SAFE_INTEGER, // bounded by the deadline, not a count
    backoff: new ExponentialBackoff({ generator: fullJitterGenerator, initialDelay: options.initialDelayMs ?? INITIAL_DELAY_MS, maxDelay: options.maxDelayMs ?? MAX_DELAY_MS }),
  });
  try {
    const result = await policy.execute(fn);
    options.notice?.(`rgrid: ${what}: control plane reachable again`);
    return result;
  } catch (err) {
    if (!retryable(err)) throw err;
    const e = err as RgridError;
    throw new RgridError(e.code, `${e.message}; gave up after retrying for ${Math.round((Date.now() - started) / 1000)} s`, e.detail);
  }
}
