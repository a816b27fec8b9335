import type { IndexEntry } from '../index/types.js';
import { planRemovals } from './plan.js';

/**
 * Which entries a prune removes, as a pure function (unit-tested without an engine), planned by the
 * agent's one removal planner (plan.ts; blobs are planned by it too). Rules
 * (docs/architecture.md, the index lifecycle):
 *  - never an entry younger than the minimum age (since creation), whatever the TTL or the disk says;
 *  - never a protected entry (its image is used by a container, or it is leased by a run);
 *  - never a dependency layer that a remaining script image still builds on (same account, deps_key);
 *  - "ttl": unused (last_used_at) for longer than the TTL;
 *  - "disk": when usage ≥ the high mark, least recently used first until the bytes planned to be freed
 *    bring usage below the low mark (kubelet's image GC: the amount to free is computed once per pass
 *    from one reading; sizes are the engine's image sizes, shared layers counted in full, so this is an
 *    upper estimate and the next pass reads the disk again).
 * The result is in a valid removal order: a dependency layer comes after every script image built on it.
 */
export type PruneReason = 'ttl' | 'disk';

export interface PruneVictim {
  entry: IndexEntry;
  reason: PruneReason;
}

export interface PruneSelectionInput {
  entries: readonly IndexEntry[];
  now: number;
  ttlMs: number;
  minAgeMs: number;
  disk?: { used_bytes: number; total_bytes: number } | undefined;
  highPercent: number;
  lowPercent: number;
  /** Why an entry must stay (e.g. "in_use", "leased"), or undefined. */
  protectedReason(entry: IndexEntry): string | undefined;
}

export interface PruneSelection {
  victims: PruneVictim[];
  /** Bytes the disk rule wanted freed (0 when below the high mark or without a disk reading). */
  diskBytesToFree: number;
}

const imagesFirst = (a: IndexEntry, b: IndexEntry): number => (a.kind === b.kind ? 0 : a.kind === 'image' ? -1 : 1);

export function selectPrune(input: PruneSelectionInput): PruneSelection {
  const { entries, now } = input;
  const eligible = (e: IndexEntry): boolean => now - e.created_at >= input.minAgeMs && input.protectedReason(e) === undefined;
  const hasLiveChild = (deps: IndexEntry, chosen: ReadonlySet<IndexEntry>): boolean =>
    entries.some((e) => e.kind === 'image' && e.account === deps.account && e.deps_key === deps.key && !chosen.has(e));

  let diskBytesToFree = 0;
  const disk = input.disk;
  if (disk && disk.total_bytes > 0 && (disk.used_bytes / disk.total_bytes) * 100 >= input.highPercent) {
    diskBytesToFree = Math.max(0, disk.used_bytes - Math.floor((input.lowPercent / 100) * disk.total_bytes));
  }
  const planned = planRemovals({
    items: entries,
    now,
    ttlMs: input.ttlMs,
    lastUsedAt: (e) => e.last_used_at,
    sizeBytes: (e) => e.size_bytes,
    removable: (e, chosen) => eligible(e) && !(e.kind === 'deps' && hasLiveChild(e, chosen)),
    bytesToFree: diskBytesToFree,
    // TTL: script images first, so a layer whose images all expire can go in the same pass.
    ttlOrder: imagesFirst,
    lruTieBreak: (a, b) => imagesFirst(a, b) || a.created_at - b.created_at,
    // A layer skipped because its images were still there may qualify once they are chosen: two rounds.
    rounds: 2,
  });
  return { victims: planned.map((p) => ({ entry: p.item, reason: p.reason === 'ttl' ? 'ttl' : 'disk' })), diskBytesToFree };
}
