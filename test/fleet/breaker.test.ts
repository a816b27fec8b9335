import { describe, expect, it } from 'vitest';
import { backoffDelay, CircuitBreaker } from '../../agent/sync/breaker.js';

describe('backoff with jitter', () => {
  const s = { initialMs: 100, maxMs: 1000 };
  it('doubles per failure within [half, full] of the exponential step, capped', () => {
    expect(backoffDelay(0, s)).toBe(0);
    expect(backoffDelay(1, s, () => 0)).toBe(50);
    expect(backoffDelay(1, s, () => 1)).toBe(100);
    expect(backoffDelay(3, s, () => 0)).toBe(200);
    expect(backoffDelay(3, s, () => 1)).toBe(400);
    expect(backoffDelay(20, s, () => 1)).toBe(1000);
    expect(backoffDelay(200, s, () => 0.5)).toBe(750);
  });
});

describe('circuit breaker', () => {
  it('goes ok → retrying → open, probes once after the reset time, closes on success', () => {
    let clock = 1_000_000;
    const breaker = new CircuitBreaker(() => ({ initialMs: 100, maxMs: 1000, threshold: 3, resetMs: 5000 }), () => clock, () => 0);
    expect(breaker.state).toBe('ok');
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });

    breaker.failure('down');
    expect(breaker.state).toBe('retrying');
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 50;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });
    breaker.failure('down');
    expect(breaker.state).toBe('retrying');
    breaker.failure('still down');
    expect(breaker.state).toBe('open');
    expect(breaker.error).toBe('still down');

    clock += 4999;
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 1;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: true });
    // A failed probe re-opens for another reset period.
    breaker.failure('probe failed');
    expect(breaker.state).toBe('open');
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 5000;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: true });
    breaker.success();
    expect(breaker.state).toBe('ok');
    expect(breaker.consecutiveFailures).toBe(0);
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });
  });
});
