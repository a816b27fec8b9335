/**
 * Failed authentications per client address. A token is 256 random bits, so guessing one is hopeless;
 * what this stops is the cost of trying (a sha256 and a database lookup per attempt, and log lines)
 * and the noise. After `maxPerWindow` failures within `windowMs` an address gets 429 on every request
 * until its window ends, valid token or not: checking the token first would keep the lookup cost.
 *
 * IPv6 addresses count per /64 (one host usually owns the whole prefix). At most `maxAddresses` are
 * remembered; past that, finished windows are dropped first, then the oldest.
 */
import { normalizeIP } from '@fastify/rate-limit';

export interface FailureThrottleOptions {
  /** Failures allowed per window; 0 turns the throttle off. */
  maxPerWindow: number;
  windowMs: number;
  maxAddresses?: number;
  now?: () => number;
}

export interface FailureThrottle {
  /** Milliseconds until `address` may try again, 0 when it is not throttled. */
  blockedForMs(address: string): number;
  /** Records one failed authentication from `address`. */
  fail(address: string): void;
  readonly size: number;
}

export function createFailureThrottle(opts: FailureThrottleOptions): FailureThrottle {
  const now = opts.now ?? Date.now;
  const maxAddresses = opts.maxAddresses ?? 10_000;
  const windows = new Map<string, { count: number; resetAt: number }>();
  const keyOf = (address: string): string => normalizeIP(address);

  function evict(at: number): void {
    for (const [key, w] of windows) if (w.resetAt <= at) windows.delete(key);
    // Still full: forget the oldest windows (Map keeps insertion order).
    for (const key of windows.keys()) {
      if (windows.size < maxAddresses) break;
      windows.delete(key);
    }
  }

  return {
    blockedForMs(address) {
      if (opts.maxPerWindow <= 0) return 0;
      const w = windows.get(keyOf(address));
      const at = now();
      if (!w || w.resetAt <= at || w.count < opts.maxPerWindow) return 0;
      return w.resetAt - at;
    },
    fail(address) {
      if (opts.maxPerWindow <= 0) return;
      const key = keyOf(address);
      const at = now();
      const w = windows.get(key);
      if (w && w.resetAt > at) {
        w.count++;
        return;
      }
      if (w) windows.delete(key);
      if (windows.size >= maxAddresses) evict(at);
      windows.set(key, { count: 1, resetAt: at + opts.windowMs });
    },
    get size() {
      return windows.size;
    },
  };
}
