// Pure parts of run limits and the lease clock.
import { describe, expect, it } from 'vitest';
import { isRgridError } from '../../common/errors.js';
import { ceilingsOf, checkRunRequest } from '../../control/dispatch/run-limits.js';
import { clockTickMs, downtimeAfterMs } from '../../control/dispatch/lease-clock.js';

const defaults = { runMaxMemoryMb: 4096, runMaxTimeoutS: 86_400, runMaxAttempts: 5, maxAttempts: 3 };

describe('ceilingsOf', () => {
  it('takes the account’s own ceiling where set, the default otherwise', () => {
    expect(ceilingsOf(defaults, undefined)).toEqual({ memory_mb: 4096, timeout_s: 86_400, max_attempts: 5 });
    expect(ceilingsOf(defaults, { memory_mb: 100, timeout_s: null, max_attempts: 20 })).toEqual({ memory_mb: 100, timeout_s: 86_400, max_attempts: 20 });
  });
});

describe('checkRunRequest', () => {
  const ceilings = { memory_mb: 4096, timeout_s: 60, max_attempts: 5 };
  it('accepts requests at or under every ceiling and fills the attempts', () => {
    expect(checkRunRequest('a', {}, ceilings, 3)).toEqual({ maxAttempts: 3 });
    expect(checkRunRequest('a', { memory_mb: 4096, timeout_s: 60, max_attempts: 5 }, ceilings, 3)).toEqual({ maxAttempts: 5 });
    expect(checkRunRequest('a', {}, { ...ceilings, max_attempts: 2 }, 3)).toEqual({ maxAttempts: 2 });
  });

  it('refuses the first limit exceeded, naming it', () => {
    for (const [limit, asked] of [['memory_mb', 4097], ['timeout_s', 60.5], ['max_attempts', 6]] as const) {
      try {
        checkRunRequest('acme', { [limit]: asked }, ceilings, 3);
        expect.unreachable();
      } catch (err) {
        expect(isRgridError(err) && err.code).toBe('bad_request');
        expect(isRgridError(err) && err.detail).toEqual({ limit, requested: asked, ceiling: ceilings[limit] });
        expect((err as Error).message).toContain(limit);
      }
    }
  });
});

describe('lease clock', () => {
  it('ticks well inside a lease and counts only gaps of several ticks as downtime', () => {
    expect(clockTickMs(30_000)).toBe(1000);
    expect(clockTickMs(1000)).toBe(250);
    expect(clockTickMs(100)).toBe(50);
    for (const lease of [500, 1000, 3000, 30_000, 600_000]) {
      const tick = clockTickMs(lease);
      expect(downtimeAfterMs(tick)).toBeGreaterThan(2 * tick);
      expect(tick).toBeLessThanOrEqual(lease / 4);
    }
  });
});
