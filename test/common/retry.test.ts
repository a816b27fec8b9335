import { describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { HttpStatusError, UnreachableError } from '../../common/http-answer.js';
import { backoffDelay, isSafeToResubmit, isTransient, retryTransient } from '../../common/retry.js';

describe('backoffDelay: exponential backoff with full jitter', () => {
  const bounds = { initialMs: 100, maxMs: 1000 };
  it('is uniform between 0 and a bound that doubles per attempt, capped', () => {
    expect(backoffDelay(0, bounds, () => 0.5)).toBe(0);
    // Full jitter: the whole range from 0, not half of it (equal jitter would give 50 for attempt 1).
    expect(backoffDelay(1, bounds, () => 0)).toBe(0);
    expect(backoffDelay(1, bounds, () => 0.5)).toBe(50);
    expect(backoffDelay(1, bounds, () => 0.999)).toBe(99);
    expect(backoffDelay(3, bounds, () => 0.5)).toBe(200);
    expect(backoffDelay(4, bounds, () => 0.999)).toBe(799);
    expect(backoffDelay(5, bounds, () => 0.999)).toBe(999);
    expect(backoffDelay(10_000, bounds, () => 0.5)).toBe(500);
  });
  it('never reaches its bound, whatever the random source gives below 1', () => {
    for (let attempt = 1; attempt < 40; attempt++) {
      const bound = Math.min(1000, 100 * 2 ** (attempt - 1));
      expect(backoffDelay(attempt, bounds, () => 0.9999999)).toBeLessThan(bound);
      expect(backoffDelay(attempt, bounds, () => 0)).toBeGreaterThanOrEqual(0);
    }
  });
});

describe('isTransient', () => {
  it('retries what another attempt can fix, never a 4xx', () => {
    expect(isTransient(new RgridError('unavailable', 'HTTP 503'))).toBe(true);
    expect(isTransient(new RgridError('shutting_down', 'draining'))).toBe(true);
    expect(isTransient(new RgridError('engine_unavailable', 'no engine'))).toBe(true);
    expect(isTransient(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransient(new TypeError('fetch failed', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) }))).toBe(true);
    expect(isTransient(Object.assign(new Error('socket'), { code: 'UND_ERR_SOCKET' }))).toBe(true);
    for (const code of ['bad_request', 'conflict', 'forbidden', 'unauthorized', 'not_found', 'payload_too_large', 'digest_mismatch'] as const) {
      expect(isTransient(new RgridError(code, code))).toBe(false);
    }
    expect(isTransient(new Error('plain'))).toBe(false);
    expect(isTransient(Object.assign(new Error('missing'), { code: 'ENOENT' }))).toBe(false);
    expect(isTransient(undefined)).toBe(false);
  });

  it('judges an error answer by its status and a failed connection by its code', () => {
    const http = (status: number, code: 'unavailable' | 'bad_request' | 'bad_response' = 'bad_request') => new HttpStatusError(status, code, 'x');
    expect([http(500), http(502, 'bad_response'), http(503), http(429)].map(isTransient)).toEqual([true, true, true, true]);
    expect([http(400), http(401), http(404, 'bad_response'), http(409), http(413)].map(isTransient)).toEqual([false, false, false, false, false]);
    const unreachable = (code: string | undefined) => new UnreachableError('http://x', Object.assign(new Error('no answer'), code ? { code } : {}));
    expect(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'EAI_AGAIN', undefined].map((c) => isTransient(unreachable(c)))).toEqual([true, true, true, true, true]);
    // A host name that does not resolve fails at once: a typo, not an outage.
    expect(isTransient(unreachable('ENOTFOUND'))).toBe(false);
    expect(isTransient(new RgridError('rate_limited', 'slow down'))).toBe(true);
  });

  it('repeats a call that is not idempotent only when nothing can have reached a handler', () => {
    expect(isSafeToResubmit(new UnreachableError('http://x', Object.assign(new Error('x'), { code: 'ECONNREFUSED' })))).toBe(true);
    expect(isSafeToResubmit(new HttpStatusError(429, 'rate_limited', 'x'))).toBe(true);
    expect(isSafeToResubmit(new UnreachableError('http://x', Object.assign(new Error('x'), { code: 'ECONNRESET' })))).toBe(false);
    expect(isSafeToResubmit(new HttpStatusError(503, 'unavailable', 'x'))).toBe(false);
  });
});

describe('retryTransient', () => {
  const quick = { initialDelayMs: 1, maxDelayMs: 2 };

  it('retries 503s until the call succeeds', async () => {
    let calls = 0;
    const retried: number[] = [];
    const value = await retryTransient(() => {
      calls++;
      return calls <= 3 ? Promise.reject(new RgridError('unavailable', 'HTTP 503')) : Promise.resolve('ok');
    }, { ...quick, budgetMs: 60_000, onRetry: (_err, attempt) => retried.push(attempt) });
    expect(value).toBe('ok');
    expect(calls).toBe(4);
    expect(retried).toEqual([1, 2, 3]);
  });

  it('waits the full-jitter delays of the shared backoff between attempts', async () => {
    let calls = 0;
    const delays: number[] = [];
    await retryTransient(() => (++calls <= 4 ? Promise.reject(new RgridError('unavailable', 'down')) : Promise.resolve('ok')), {
      initialDelayMs: 4, maxDelayMs: 16, budgetMs: 60_000, random: () => 0.5, onRetry: (_err, _attempt, delay) => delays.push(delay),
    });
    expect(delays).toEqual([2, 4, 8, 8]);
  });

  it('retries only what `retryable` accepts', async () => {
    let calls = 0;
    const refused = new UnreachableError('http://x', Object.assign(new Error('x'), { code: 'ECONNRESET' }));
    await expect(retryTransient(() => {
      calls++;
      return Promise.reject(refused);
    }, { ...quick, budgetMs: 60_000, retryable: isSafeToResubmit })).rejects.toBe(refused);
    expect(calls).toBe(1);
  });

  it('makes one attempt only with a budget of 0', async () => {
    let calls = 0;
    await expect(retryTransient(() => {
      calls++;
      return Promise.reject(new RgridError('unavailable', 'down'));
    }, { ...quick, budgetMs: 0 })).rejects.toMatchObject({ code: 'unavailable' });
    expect(calls).toBe(1);
  });

  it('does not retry a 4xx', async () => {
    let calls = 0;
    await expect(retryTransient(() => {
      calls++;
      return Promise.reject(new RgridError('conflict', 'claim lost'));
    }, { ...quick, budgetMs: 60_000 })).rejects.toMatchObject({ code: 'conflict' });
    expect(calls).toBe(1);
  });

  it('stops at the signal and throws the last real error', async () => {
    const stop = new AbortController();
    let calls = 0;
    const err = await retryTransient(() => {
      calls++;
      if (calls === 3) stop.abort();
      return Promise.reject(new RgridError('unavailable', `attempt ${calls}`));
    }, { ...quick, budgetMs: 60_000, signal: stop.signal }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', message: 'attempt 3' });
    expect(calls).toBe(3);
  });

  it('stops when the budget is spent', async () => {
    let calls = 0;
    const err = await retryTransient(() => {
      calls++;
      return Promise.reject(new RgridError('unavailable', 'down'));
    }, { initialDelayMs: 20, maxDelayMs: 20, budgetMs: 100 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable' });
    expect(calls).toBeGreaterThan(1);
    expect(calls).toBeLessThan(1000);
  });

  it('gives up a call cut by the budget as unavailable, not as an abort', async () => {
    const hang = (signal: AbortSignal): Promise<never> =>
      new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true }));
    await expect(retryTransient(hang, { ...quick, budgetMs: 50 })).rejects.toMatchObject({ code: 'unavailable', message: 'gave up waiting: aborted' });
    let calls = 0;
    const err = await retryTransient((signal) => (++calls === 1 ? Promise.reject(new RgridError('unavailable', 'HTTP 502')) : hang(signal)), { ...quick, budgetMs: 100 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', message: 'HTTP 502' });
  });
});
