/**
 * The one removal planner of the agent's caches, pure: images and layers (select.ts) and blobs
 * (blob-pruner.ts) are planned by the same rules.
 *  - "ttl": an item unused (last use) for longer than the TTL goes;
 *  - "size": then, while the bytes chosen are fewer than `bytesToFree`, the least recently used go
 *    (the bytes the TTL chose count towards it);
 *  - an item goes only when `removable` says so at that moment: protected, pinned, leased or too young
 *    items never go, and an item whose dependants are all chosen becomes removable (a dependency layer
 *    after its script images), hence `rounds` of the LRU pass.
 * Victims come in a valid removal order: an item is chosen only after what it must outlive.
 */
export type PlanReason = 'ttl' | 'size';

export interface RemovalPlanInput<T> {
  items: readonly T[];
  now: number;
  ttlMs: number;
  lastUsedAt(item: T): number;
  sizeBytes(item: T): number;
  /** Whether `item` may be removed, given the items chosen before it. */
  removable(item: T, chosen: ReadonlySet<T>): boolean;
  /** Bytes the size rule must free (0: the size rule does not apply in this pass). */
  bytesToFree: number;
  /** Order of the TTL pass (default: as given). */
  ttlOrder?: (a: T, b: T) => number;
  /** Tie-break of the LRU order between items last used at the same time (default: as given). */
  lruTieBreak?: (a: T, b: T) => number;
  /** LRU passes (default 1). */
  rounds?: number;
}

export interface PlannedRemoval<T> {
  item: T;
  reason: PlanReason;
}

export function planRemovals<T>(input: RemovalPlanInput<T>): PlannedRemoval<T>[] {
  const chosen = new Set<T>();
  const victims: PlannedRemoval<T>[] = [];
  const take = (item: T, reason: PlanReason): boolean => {
    if (chosen.has(item) || !input.removable(item, chosen)) return false;
    chosen.add(item);
    victims.push({ item, reason });
    return true;
  };

  const ttlOrdered = input.ttlOrder ? [...input.items].sort(input.ttlOrder) : input.items;
  for (const item of ttlOrdered) if (input.now - input.lastUsedAt(item) > input.ttlMs) take(item, 'ttl');

  let freed = victims.reduce((n, v) => n + input.sizeBytes(v.item), 0);
  if (freed >= input.bytesToFree) return victims;
  const tieBreak = input.lruTieBreak ?? (() => 0);
  const lru = [...input.items].sort((a, b) => input.lastUsedAt(a) - input.lastUsedAt(b) || tieBreak(a, b));
  for (let round = 0; round < (input.rounds ?? 1) && freed < input.bytesToFree; round++) {
    for (const item of lru) {
      if (freed >= input.bytesToFree) break;
      if (take(item, 'size')) freed += input.sizeBytes(item);
    }
  }
  return victims;
}
