import { describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { isTransient, retryTransient } from '../../common/retry.js';

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
