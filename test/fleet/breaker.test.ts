import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../agent/sync/breaker.js';

describe('circuit breaker', () => {
  it('goes ok → retrying → open, probes once after the reset time, closes on success', () => {
    let clock = 1_000_000;
    // random 0.5: the first retry waits half its 100 ms bound (full jitter), an opening adds half its 500 ms jitter.
    const breaker = new CircuitBreaker(() => ({ initialMs: 100, maxMs: 1000, threshold: 3, resetMs: 5000 }), () => clock, () => 0.5);
    expect(breaker.state).toBe('ok');
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });

    breaker.failure('down');
    expect(breaker.state).toBe('retrying');
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 49;
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 1;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });
    breaker.failure('down');
    expect(breaker.state).toBe('retrying');
    breaker.failure('still down');
    expect(breaker.state).toBe('open');
    expect(breaker.error).toBe('still down');

    clock += 5249;
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 1;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: true });
    // A failed probe re-opens for another reset period.
    breaker.failure('probe failed');
    expect(breaker.state).toBe('open');
    expect(breaker.canAttempt().allowed).toBe(false);
    clock += 5250;
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: true });
    breaker.success();
    expect(breaker.state).toBe('ok');
    expect(breaker.consecutiveFailures).toBe(0);
    expect(breaker.canAttempt()).toEqual({ allowed: true, probe: false });
  });
});
