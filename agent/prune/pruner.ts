import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { isNotFound } from '../builder/engine-build.js';
import { durationsOf, resolveTtlMs, type AgentConfig } from '../config.js';
import type { AgentIndex } from '../index/index.js';
import type { LeaseTable } from '../index/leases.js';
import type { IndexEntry } from '../index/types.js';
import type { AgentMetrics } from '../metrics.js';
import type { DiskUsage, DiskUsageSource } from './disk-usage.js';
import { selectPrune, type PruneReason } from './select.js';
import { createSerial, type Serial } from '../serial.js';

/**
 * Removes what selectPrune chose: index entry first (its delete op goes to the outbox in the same
 * transaction, which removes the central row), then the image. Per victim, in ONE event-loop turn: re-read
 * the entry, check the lease table and the layer's dependents, and remove the entry (index.remove commits
 * synchronously) — so an ensure either leased the entry before (kept) or misses after (rebuilds); it can
 * never get a hit on an image being deleted. If the engine then refuses the removal (a container started
 * on the image behind the agent's back: the engine protects images of containers in every state), the
 * entry is written back. Prunes are serialized; periodic (prune_interval_s) and on demand.
 */
export interface PruneItem {
  key: string;
  kind: 'image' | 'deps';
  image_id: string;
  reason: PruneReason;
  account: string;
  size_bytes: number;
}

export interface PruneReport {
  items: PruneItem[];
  disk: DiskUsage | null;
  at: number;
  dry_run: boolean;
}

export interface Pruner {
  prune(options?: { dryRun?: boolean }): Promise<PruneReport>;
  last(): PruneReport | undefined;
  /** Re-arms the periodic timer (after a config reload changed prune_interval_s). */
  reschedule(): void;
  stop(): Promise<void>;
}

export interface PrunerDeps {
  docker: Docker;
  index: AgentIndex;
  leases: LeaseTable;
  settings: () => AgentConfig;
  disk: DiskUsageSource;
  logger: Logger;
  metrics?: AgentMetrics;
  /** Shared with the reconciler (serial.ts). */
  serial?: Serial;
  /**
   * Containers made ahead of runs (the runner's hot containers): not a use of their image, so they do
   * not protect it, and they are removed before it is (the engine refuses to delete an image any
   * container refers to).
   */
  spare?: SpareContainers;
  now?: () => number;
}

export interface SpareContainers {
  isSpare(container: Docker.ContainerInfo): boolean;
  release(imageId: string): Promise<void>;
}

const item = (e: IndexEntry, reason: PruneReason): PruneItem => ({
  key: e.key, kind: e.kind, image_id: e.image_id, reason, account: e.account, size_bytes: e.size_bytes,
});

export function createPruner(deps: PrunerDeps): Pruner {
  const { docker, index, leases, settings } = deps;
  const log = deps.logger.child({ component: 'prune' });
  const now = deps.now ?? Date.now;
  const serial = deps.serial ?? createSerial();
  let pending: Promise<unknown> = Promise.resolve();
  let lastReport: PruneReport | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  async function run(dryRun: boolean): Promise<PruneReport> {
    const c = settings();
    // Every container, whatever its state: the engine keeps a stopped container's image too.
    const inUse = new Set((await docker.listContainers({ all: true })).filter((ct) => !deps.spare?.isSpare(ct)).map((ct) => ct.ImageID));
    let disk: DiskUsage | null = null;
    try {
      disk = await deps.disk.read();
    } catch (err) {
      log.warn({ reason: (err as Error).message }, 'disk usage unavailable; only the TTL applies');
    }
    // Hits do not wait for their touch to commit (agent/index/index.ts): count the uses already answered.
    await index.settled();
    const at = now();
    const selection = selectPrune({
      entries: index.list(),
      now: at,
      ttlMs: durationsOf(c).prune_ttl_ms,
      minAgeMs: durationsOf(c).prune_min_age_ms,
      disk: disk ?? undefined,
      highPercent: c.disk_high_percent,
      lowPercent: c.disk_low_percent,
      protectedReason: (e) => (inUse.has(e.image_id) ? 'in_use' : leases.isLeased(e) ? 'leased' : undefined),
    });
    if (dryRun) return { items: selection.victims.map((v) => item(v.entry, v.reason)), disk, at, dry_run: true };

    const removed: PruneItem[] = [];
    for (const { entry, reason } of selection.victims) {
      // --- one event-loop turn: check and remove the index entry (no await in between) ---
      const current = index.get(entry);
      if (!current || current.image_id !== entry.image_id || leases.isLeased(current)) continue;
      if (current.kind === 'deps' && index.dependentsOf(current).length > 0) continue;
      if (!(await index.remove(current, { ifImageId: current.image_id }))) continue;
      // --- the entry is gone; now the image ---
      try {
        await deps.spare?.release(current.image_id);
        await docker.getImage(current.image_id).remove({ noprune: false });
      } catch (err) {
        if (!isNotFound(err)) {
          log.warn({ key: current.key, kind: current.kind, image_id: current.image_id, reason: (err as Error).message }, 'engine refused to remove the image; entry kept');
          await index.putBuilt(current);
          continue;
        }
      }
      removed.push(item(current, reason));
      deps.metrics?.pruned(current.kind, reason, current.size_bytes);
    }
    await pruneResolutions(c, at);
    if (removed.length > 0 || selection.diskBytesToFree > 0) {
      log.info({ removed: removed.length, bytes: removed.reduce((n, r) => n + r.size_bytes, 0), disk_bytes_to_free: selection.diskBytesToFree }, 'pruned');
    }
    lastReport = { items: removed, disk, at, dry_run: false };
    return lastReport;
  }

  /**
   * The resolution cache (agent/index/resolutions.ts) goes by the same TTL as the images: a record not
   * checked for that long (never less than a resolve_ttl_s window), and a lock no record names and
   * nothing used for as long. Its failure never fails the image prune.
   */
  async function pruneResolutions(c: AgentConfig, at: number): Promise<void> {
    try {
      const maxAgeMs = Math.max(durationsOf(c).prune_ttl_ms, resolveTtlMs(c) ?? 0);
      // A lock an indexed layer installs stays as long as the layer (inspect shows it, pylock.toml writes it).
      const keepLocks = new Set(index.list({ kind: 'deps' }).flatMap((e) => (e.lock_sha256 ? [e.lock_sha256] : [])));
      const dropped = await index.resolutions.prune({ now: at, maxAgeMs, keepLocks });
      if (dropped.records > 0 || dropped.locks > 0) log.info({ resolutions: dropped.records, locks: dropped.locks }, 'pruned resolutions');
    } catch (err) {
      log.warn({ reason: (err as Error).message }, 'pruning resolutions failed');
    }
  }

  function schedule(): void {
    if (stopped) return;
    clearTimeout(timer);
    const interval = durationsOf(settings()).prune_interval_ms;
    // 0 = on demand only; the setting is re-read every minute so a reload can turn it on.
    timer = setTimeout(() => {
      if (settings().prune_interval_s > 0) {
        pending = serial(() => run(false)).catch((err: unknown) => log.warn({ reason: (err as Error).message }, 'periodic prune failed'));
      }
      void pending.then(schedule);
    }, interval > 0 ? interval : 60_000);
    timer.unref();
  }
  schedule();

  return {
    prune(options = {}) {
      return serial(() => run(options.dryRun === true));
    },
    last: () => lastReport,
    reschedule: schedule,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await pending.catch(() => undefined);
      await serial(() => Promise.resolve());
    },
  };
}
