/**
 * Folds a batch of sync ops (already filtered to the ops not applied before) into the net effect per
 * entry, so one batch costs three bulk statements instead of one round trip per op. Order inside the
 * batch is respected: the last upsert or delete of a key wins, and touches add up on top of whatever the
 * key holds at that point (a touch after a delete touches nothing).
 */
import type { CacheEntry, SyncOp } from '../common/wire/control-api.js';

export type EntryId = Pick<CacheEntry, 'kind' | 'account' | 'key'>;

export interface Touch extends EntryId {
  count: number;
  last_used_at: string;
}

export interface SyncPlan {
  upserts: CacheEntry[];
  deletes: EntryId[];
  touches: Touch[];
}

type State =
  | { t: 'upsert'; entry: CacheEntry }
  | { t: 'delete'; id: EntryId; touchedAfter: false }
  | { t: 'touch'; touch: Touch };

const later = (a: string, b: string): string => (Date.parse(b) > Date.parse(a) ? b : a);

export function planSyncOps(ops: readonly SyncOp[]): SyncPlan {
  const states = new Map<string, State>();
  for (const op of ops) {
    const id = `${op.kind}\u0000${op.account}\u0000${op.key}`;
    const current = states.get(id);
    if (op.type === 'upsert') {
      const entry: CacheEntry = {
        kind: op.kind, account: op.account, key: op.key, image_id: op.image_id, runtime: op.runtime,
        requirements_sha256: op.requirements_sha256, script_sha256: op.script_sha256 ?? null, deps_key: op.deps_key ?? null,
        lock_sha256: op.lock_sha256 ?? null,
        size_bytes: op.size_bytes, created_at: op.created_at, last_used_at: op.last_used_at, use_count: op.use_count,
      };
      states.set(id, { t: 'upsert', entry });
    } else if (op.type === 'delete') {
      states.set(id, { t: 'delete', id: { kind: op.kind, account: op.account, key: op.key }, touchedAfter: false });
    } else if (!current) {
      states.set(id, { t: 'touch', touch: { kind: op.kind, account: op.account, key: op.key, count: op.count, last_used_at: op.last_used_at } });
    } else if (current.t === 'upsert') {
      current.entry = {
        ...current.entry,
        use_count: current.entry.use_count + op.count,
        last_used_at: later(current.entry.last_used_at, op.last_used_at),
      };
    } else if (current.t === 'touch') {
      current.touch.count += op.count;
      current.touch.last_used_at = later(current.touch.last_used_at, op.last_used_at);
    }
    // current.t === 'delete': the entry is gone at this point of the batch; the touch has no target.
  }
  const plan: SyncPlan = { upserts: [], deletes: [], touches: [] };
  for (const s of states.values()) {
    if (s.t === 'upsert') plan.upserts.push(s.entry);
    else if (s.t === 'delete') plan.deletes.push(s.id);
    else plan.touches.push(s.touch);
  }
  return plan;
}
