import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { isNotFound } from '../builder/engine-build.js';
import type { AgentIndex } from '../index/index.js';
import type { LeaseTable } from '../index/leases.js';
import { refId, type IndexEntry } from '../index/types.js';
import type { AgentMetrics } from '../metrics.js';
import { createSerial, type Serial } from '../serial.js';
import { listOwnImages, type LabelledImage } from './labels.js';

/**
 * Reconcile (against ghost entries, as bazel-remote kept for files deleted behind its back): compare the index with this agent's labelled
 * images, both ways.
 *
 *   missing_image       entry whose image the engine no longer has         repair: drop the entry
 *   mismatched_image_id entry's image gone, but an image labelled with the repair: point the entry at it
 *                       same (kind, account, key) exists
 *   untracked_image     labelled image without an entry for its key        repair: adopt it (reindex)
 *   stale_image         labelled image for a key whose entry points at      repair: remove the image (the
 *                       another, existing image (e.g. an old build)         engine refuses if a container uses it)
 *
 * Adopted entries take created_at from the image and last_used_at = the moment of adoption, use_count 0:
 * the engine records no last use (moby#4237), and pretending the image is as old as its creation would
 * make a freshly reindexed cache look unused for weeks and prune it all at once (the kubelet failure).
 * Every repair goes through the index, so the outbox carries it to the control plane.
 */
/** A labelled image this young may belong to a build that has not written its entry yet: not removed. */
const BUILD_GRACE_MS = 60_000;

export type DriftType = 'missing_image' | 'mismatched_image_id' | 'untracked_image' | 'stale_image';

export interface DriftItem {
  type: DriftType;
  kind: 'image' | 'deps';
  account: string;
  key: string;
  /** The index's image id (null for an image without entry). */
  index_image_id: string | null;
  /** The engine's image id (null when the engine has none). */
  engine_image_id: string | null;
  repaired: boolean;
}

export interface VerifyReport {
  drift: DriftItem[];
  entries: number;
  images: number;
  repair: boolean;
}

export interface Reconciler {
  verify(options?: { repair?: boolean }): Promise<VerifyReport>;
  stop(): Promise<void>;
}

export interface ReconcilerDeps {
  docker: Docker;
  index: AgentIndex;
  leases: LeaseTable;
  logger: Logger;
  metrics?: AgentMetrics;
  serial?: Serial;
  /** Seconds between background reconciles (read each time, live config); 0: none. */
  intervalMs: () => number;
  now?: () => number;
}

export function createReconciler(deps: ReconcilerDeps): Reconciler {
  const { docker, index } = deps;
  const log = deps.logger.child({ component: 'reconcile' });
  const now = deps.now ?? Date.now;
  const serial = deps.serial ?? createSerial();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  async function exists(imageId: string): Promise<boolean> {
    try {
      await docker.getImage(imageId).inspect();
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async function run(repair: boolean): Promise<VerifyReport> {
    const { images, unreadable } = await listOwnImages(docker, index.agentId);
    if (unreadable.length) log.warn({ images: unreadable }, 'images with this agent\'s owner label but unreadable rgrid labels; ignored');
    const byId = new Map(images.map((i) => [i.id, i]));
    const byRef = new Map<string, LabelledImage[]>();
    for (const i of [...images].sort((a, b) => b.created_at - a.created_at)) {
      const list = byRef.get(refId(i.entry)) ?? [];
      list.push(i);
      byRef.set(refId(i.entry), list);
    }
    const drift: DriftItem[] = [];
    const referenced = new Set<string>();
    const item = (type: DriftType, e: Pick<IndexEntry, 'kind' | 'account' | 'key'>, indexId: string | null, engineId: string | null): DriftItem => {
      const d: DriftItem = { type, kind: e.kind, account: e.account, key: e.key, index_image_id: indexId, engine_image_id: engineId, repaired: false };
      drift.push(d);
      return d;
    };

    for (const entry of index.list()) {
      // Images built before owner labels existed are not listed: ask the engine directly.
      if (byId.has(entry.image_id) || (await exists(entry.image_id))) {
        referenced.add(entry.image_id);
        continue;
      }
      const replacement = byRef.get(refId(entry))?.[0];
      if (replacement) {
        referenced.add(replacement.id);
        const d = item('mismatched_image_id', entry, entry.image_id, replacement.id);
        if (repair) {
          await index.putBuilt({ ...entry, image_id: replacement.id, size_bytes: replacement.size_bytes });
          d.repaired = true;
        }
      } else {
        const d = item('missing_image', entry, entry.image_id, null);
        if (repair && !deps.leases.isLeased(entry)) d.repaired = await index.remove(entry, { ifImageId: entry.image_id });
      }
    }

    for (const [ref, candidates] of byRef) {
      const unreferenced = candidates.filter((c) => !referenced.has(c.id));
      if (unreferenced.length === 0) continue;
      const [first] = candidates;
      const entry = first ? index.get(first.entry) : undefined;
      for (const image of unreferenced) {
        const adopt = entry === undefined && image === first;
        const d = item(adopt ? 'untracked_image' : 'stale_image', image.entry, entry?.image_id ?? null, image.id);
        if (!repair) continue;
        if (adopt) {
          const at = now();
          await index.putBuilt({ ...image.entry, created_at: Math.min(image.created_at, at), last_used_at: at, use_count: 0 });
          d.repaired = true;
        } else if (now() - image.created_at >= BUILD_GRACE_MS) {
          d.repaired = await docker.getImage(image.id).remove({ noprune: false }).then(
            () => true,
            (err: unknown) => {
              log.warn({ ref, image_id: image.id, reason: (err as Error).message }, 'stale image not removed');
              return false;
            },
          );
        }
      }
    }
    for (const d of drift) deps.metrics?.drift(d.type, 1);
    if (drift.length) log.info({ drift: drift.length, repair, types: [...new Set(drift.map((d) => d.type))] }, 'index and engine drifted');
    return { drift, entries: index.list().length, images: images.length, repair };
  }

  function schedule(): void {
    if (stopped) return;
    const interval = deps.intervalMs();
    timer = setTimeout(() => {
      const go = deps.intervalMs() > 0 ? serial(() => run(true)).catch((err: unknown) => log.warn({ reason: (err as Error).message }, 'reconcile failed')) : Promise.resolve();
      void go.then(schedule);
    }, interval > 0 ? interval : 60_000);
    timer.unref();
  }
  schedule();

  return {
    verify: (options = {}) => serial(() => run(options.repair === true)),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await serial(() => Promise.resolve());
    },
  };
}
