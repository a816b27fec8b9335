/**
 * Scheduling of the sync loop: the agent's one backoff (common/retry.ts `backoffDelay`: exponential with
 * full jitter), and a circuit breaker so that a dead control plane is probed now and then instead of
 * hammered.
 *
 *   ok        last attempt succeeded; work is sent at the normal interval
 *   retrying  1 … threshold-1 consecutive failures; the next attempt waits backoff(failures)
 *   open      ≥ threshold failures; nothing is sent until `resetMs` has passed, then ONE half-open probe
 *             (a heartbeat, which seals no ops): success closes the breaker, failure re-opens it
 *
 * Pure and clock-injected, so the unit tests drive it without timers.
 */
import { backoffDelay } from '../../common/retry.js';

export type SyncState = 'ok' | 'retrying' | 'open';

export interface BreakerSettings {
  initialMs: number;
  maxMs: number;
  threshold: number;
  resetMs: number;
}

export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private nextAttemptAt = 0;
  private lastError: string | undefined;

  constructor(
    private settings: () => BreakerSettings,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {}

  get state(): SyncState {
    const { threshold } = this.settings();
    if (this.failures === 0) return 'ok';
    return this.failures >= threshold ? 'open' : 'retrying';
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  get error(): string | undefined {
    return this.lastError;
  }

  /** When the next attempt may start (epoch ms); ≤ now means now. */
  get nextAttempt(): number {
    return this.nextAttemptAt;
  }

  /** Whether an attempt may start now; for an open breaker, whether this is the half-open probe. */
  canAttempt(): { allowed: boolean; probe: boolean } {
    const at = this.now();
    if (this.state === 'open') {
      const allowed = at >= this.openedAt + this.settings().resetMs;
      return { allowed, probe: allowed };
    }
    return { allowed: at >= this.nextAttemptAt, probe: false };
  }

  success(): void {
    this.failures = 0;
    this.nextAttemptAt = 0;
    this.lastError = undefined;
  }

  failure(error: string): void {
    const s = this.settings();
    this.failures++;
    this.lastError = error;
    const at = this.now();
    if (this.failures >= s.threshold) {
      // (Re-)open: the probe comes resetMs later, with a little jitter so a fleet does not probe in step.
      this.openedAt = at + Math.round(this.random() * Math.min(1000, s.resetMs / 10));
      this.nextAttemptAt = this.openedAt + s.resetMs;
    } else {
      // Full jitter, like every retry of the agent; the loop still waits at least its interval (sync-loop.ts).
      this.nextAttemptAt = at + backoffDelay(this.failures, s, this.random);
    }
  }
}
