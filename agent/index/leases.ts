import { refId, type EntryRef } from './types.js';

/**
 * Leases pin entries while something depends on their image (a run between "hit" and "container
 * removed"), so the pruner cannot delete an image under a starting container (the kubelet
 * race). They live in memory on purpose: a lease only matters while this process runs the container,
 * and after a crash the pruner's second rule (never remove an image any container uses) still holds.
 *
 * The pruner's side of the contract: skip every ref for which `isLeased(ref)` is true, and decide and
 * remove the index entry synchronously after that check (same event-loop turn), before any await.
 */
export interface LeaseInfo {
  ref: EntryRef;
  holders: string[];
  since: number;
}

export interface Lease {
  readonly refs: readonly EntryRef[];
  readonly holder: string;
  /** Idempotent. */
  release(): void;
}

export interface LeaseTable {
  acquire(refs: readonly EntryRef[], holder: string): Lease;
  isLeased(ref: EntryRef): boolean;
  list(): LeaseInfo[];
  readonly size: number;
}

export function createLeaseTable(now: () => number = Date.now): LeaseTable {
  const table = new Map<string, { ref: EntryRef; holders: Map<symbol, string>; since: number }>();
  return {
    acquire(refs, holder) {
      const token = Symbol(holder);
      for (const ref of refs) {
        const id = refId(ref);
        let slot = table.get(id);
        if (!slot) {
          slot = { ref: { ...ref }, holders: new Map(), since: now() };
          table.set(id, slot);
        }
        slot.holders.set(token, holder);
      }
      let released = false;
      return {
        refs,
        holder,
        release() {
          if (released) return;
          released = true;
          for (const ref of refs) {
            const id = refId(ref);
            const slot = table.get(id);
            if (!slot) continue;
            slot.holders.delete(token);
            if (slot.holders.size === 0) table.delete(id);
          }
        },
      };
    },
    isLeased: (ref) => table.has(refId(ref)),
    list: () => [...table.values()].map((s) => ({ ref: s.ref, holders: [...s.holders.values()], since: s.since })),
    get size() {
      return table.size;
    },
  };
}
