/**
 * Pruning of the worker's blob cache (agent/worker/blob-cache.ts) by the agent's one removal planner
 * (plan.ts), with the rules images have: unused past `blob_cache_ttl_s` goes; then, while the cache holds
 * more than `blob_cache_max_mb`, the least recently used go; a blob pinned by a run in progress never
 * does (checked when planning, and again by the cache right before each removal). Runs after every
 * execution the claim loop finishes, one prune at a time: a request while one runs is served by a
 * single follow-up prune.
 */
import type { Logger } from 'pino';
import type { BlobCache, CachedBlob } from '../worker/blob-cache.js';
import { planRemovals, type PlanReason } from './plan.js';

export interface BlobPruneSettings {
  ttlMs: number;
  maxBytes: number;
}

export interface BlobVictim {
  blob: CachedBlob;
  reason: PlanReason;
}

/** What to remove, pure: past the TTL first, then least recently used until the cache fits its bound. */
export function selectBlobPrune(blobs: readonly CachedBlob[], settings: BlobPruneSettings & { now: number; pinned: (sha256: string) => boolean }): BlobVictim[] {
  const total = blobs.reduce((n, b) => n + b.size, 0);
  return planRemovals({
    items: blobs,
    now: settings.now,
    ttlMs: settings.ttlMs,
    lastUsedAt: (b) => b.last_used_at,
    sizeBytes: (b) => b.size,
    removable: (b) => !settings.pinned(b.sha256),
    bytesToFree: Math.max(0, total - settings.maxBytes),
    // Same last use: the digest decides, so a plan never depends on the order LMDB lists them in.
    ttlOrder: (a, b) => a.last_used_at - b.last_used_at || (a.sha256 < b.sha256 ? -1 : 1),
    lruTieBreak: (a, b) => (a.sha256 < b.sha256 ? -1 : a.sha256 > b.sha256 ? 1 : 0),
  }).map((p) => ({ blob: p.item, reason: p.reason }));
}

export interface BlobPruneReport {
  removed: number;
  bytes: number;
}

export interface BlobPruner {
  /** Prunes now (or after the prune in progress); resolves with what this prune removed. */
  prune(): Promise<BlobPruneReport>;
  /** Waits for a prune in progress. */
  stop(): Promise<void>;
}

export function createBlobPruner(deps: { blobs: BlobCache; settings: () => BlobPruneSettings; logger: Logger; now?: () => number }): BlobPruner {
  const now = deps.now ?? Date.now;
  const log = deps.logger.child({ component: 'blob-prune' });
  let running: Promise<BlobPruneReport> | undefined;
  let next: Promise<BlobPruneReport> | undefined;

  async function run(): Promise<BlobPruneReport> {
    const victims = selectBlobPrune(deps.blobs.list(), { ...deps.settings(), now: now(), pinned: (sha) => deps.blobs.isPinned(sha) });
    const report = { removed: 0, bytes: 0 };
    for (const { blob } of victims) {
      if (!(await deps.blobs.remove(blob.sha256))) continue;
      report.removed++;
      report.bytes += blob.size;
    }
    if (report.removed > 0) log.info(report, 'blob cache pruned');
    return report;
  }

  function start(): Promise<BlobPruneReport> {
    running = run().finally(() => {
      running = undefined;
    });
    return running;
  }

  return {
    prune() {
      if (!running) return start();
      // One follow-up for every request made meanwhile: what they freed would be planned by it anyway.
      next ??= running.catch(() => undefined).then(() => {
        next = undefined;
        return start();
      });
      return next;
    },
    async stop() {
      await next?.catch(() => undefined);
      await running?.catch(() => undefined);
    },
  };
}
