/**
 * Token → principal, kept by each process for a short, bounded time (`tokenCacheMs`, default 1 s, 0 = look
 * up on every request). Without it every authenticated request pays a sha256 and a database round trip
 * before any work, which on a busy scheduler is as costly as the work itself (docs/control.md, figures).
 *
 * Bounds (documented in docs/control.md, Auth):
 * - Expiry is never extended: an entry lives at most until the token's expires_at, measured on the
 *   database clock at lookup time (the remaining time is added to the local time taken *before* the
 *   query, so the local deadline is never later than the real one).
 * - Revocation through this process clears the cache at once (so do token creations: a new worker
 *   token changes the accounts a worker's other tokens serve). Other replicas stop accepting a revoked
 *   token within tokenCacheMs.
 * - Only valid tokens are kept: unknown, expired and revoked ones are looked up again every time (a
 *   concurrent burst of requests with the same token shares one lookup).
 * - Keyed by the token's sha256, never by the secret; at most MAX_ENTRIES tokens (then it starts over).
 */
import { hashToken, type TokenLookup } from './repositories/tokens.js';

const MAX_ENTRIES = 10_000;

export interface TokenCacheOptions {
  ttlMs: number;
  /** Injectable clock for tests. */
  now?: () => number;
}

export type TokenByHash = (tokenSha256: string) => Promise<TokenLookup | undefined>;

export function createTokenCache(lookup: TokenByHash, opts: TokenCacheOptions) {
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { until: number; value: Promise<TokenLookup | undefined> }>();
  return {
    get(token: string): Promise<TokenLookup | undefined> {
      const hash = hashToken(token);
      if (opts.ttlMs <= 0) return lookup(hash);
      const at = now();
      const hit = cache.get(hash);
      if (hit && at < hit.until) return hit.value;
      if (cache.size >= MAX_ENTRIES) cache.clear();
      const entry = { until: at + opts.ttlMs, value: lookup(hash) };
      cache.set(hash, entry);
      entry.value.then(
        (row) => {
          if (!row || row.revoked || row.expired) {
            if (cache.get(hash) === entry) cache.delete(hash);
          } else if (row.expires_in_ms !== null) {
            entry.until = Math.min(entry.until, at + row.expires_in_ms);
          }
        },
        () => {
          if (cache.get(hash) === entry) cache.delete(hash);
        },
      );
      return entry.value;
    },
    /** After a revocation or creation: the next request of every token reads the database again. */
    clear(): void {
      cache.clear();
    },
    get size(): number {
      return cache.size;
    },
  };
}
export type TokenCache = ReturnType<typeof createTokenCache>;
