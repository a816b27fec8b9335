import { RgridError } from '../../common/errors.js';
import type { Db, Queryable } from '../db/pool.js';
import type { CacheEntry } from '../../common/wire/control-api.js';
import type { EntryId, SyncPlan } from '../sync-plan.js';

/** Rows per INSERT ... SELECT FROM unnest(): bounded arrays keep each statement's memory modest. */
const CHUNK = 5000;

/** '' stands for "no requirements" in the table, so lookups stay plain equality on a btree. */
export const NO_REQUIREMENTS = '';

function columns(entries: readonly CacheEntry[]): unknown[] {
  return [
    entries.map((e) => e.account),
    entries.map((e) => e.kind),
    entries.map((e) => e.key),
    entries.map((e) => e.image_id),
    entries.map((e) => e.runtime),
    entries.map((e) => e.requirements_sha256 ?? NO_REQUIREMENTS),
    entries.map((e) => (e.kind === 'image' ? (e.script_sha256 ?? null) : null)),
    entries.map((e) => e.deps_key ?? null),
    entries.map((e) => e.lock_sha256 ?? null),
    entries.map((e) => e.size_bytes),
    entries.map((e) => e.created_at),
    entries.map((e) => e.last_used_at),
    entries.map((e) => e.use_count),
  ];
}

/**
 * $15 is the snapshot writing the rows (null for sync ops, which leave an existing row's mark alone): a
 * snapshot's final part removes the entries of its accounts that none of its parts marked.
 */
const UPSERT_SQL = `
  INSERT INTO cache_entries (worker_id, account_id, kind, key, image_id, runtime, requirements_sha256,
    script_sha256, deps_key, lock_sha256, size_bytes, created_at, last_used_at, use_count, synced_at, snapshot_id)
  SELECT $1::text, u.*, now(), $15::uuid FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::bigint[], $12::timestamptz[], $13::timestamptz[], $14::bigint[]) AS u
  ON CONFLICT (worker_id, account_id, kind, key) DO UPDATE SET image_id = EXCLUDED.image_id,
    runtime = EXCLUDED.runtime, requirements_sha256 = EXCLUDED.requirements_sha256,
    script_sha256 = EXCLUDED.script_sha256, deps_key = EXCLUDED.deps_key, lock_sha256 = EXCLUDED.lock_sha256,
    size_bytes = EXCLUDED.size_bytes,
    created_at = EXCLUDED.created_at, last_used_at = EXCLUDED.last_used_at, use_count = EXCLUDED.use_count,
    synced_at = now(), snapshot_id = coalesce(EXCLUDED.snapshot_id, cache_entries.snapshot_id)`;

export interface EntryRow extends CacheEntry {
  worker_id: string;
}

/** One part of a worker's full snapshot; a snapshot sent in one request is part 0, final. */
export interface SnapshotPart {
  snapshotId: string;
  part: number;
  final: boolean;
  /** The accounts the snapshot is complete for: every part of one snapshot names the same ones. */
  accounts: readonly string[];
  entries: readonly CacheEntry[];
}

export type SnapshotPartResult =
  /**
   * Applied (or applied before: a retry). `entries` counts the snapshot's parts so far; `finishedBefore`:
   * the snapshot was complete before this part arrived (nothing changed).
   */
  | { applied: true; entries: number; removed: number; complete: boolean; finishedBefore: boolean }
  /** Changed nothing: the snapshot was superseded or its parts arrived out of order; the agent starts over. */
  | { applied: false; reason: string };

/** Finished or superseded snapshots kept per worker, so a late retry of their parts is recognised. */
const SNAPSHOTS_KEPT = 8;

interface SnapshotState {
  same_registration: boolean | null;
  accounts: string[] | null;
  next_part: number | null;
  entries: number | null;
  removed: number | null;
  completed: boolean | null;
  newest: boolean | null;
}

const sameAccounts = (a: readonly string[], b: readonly string[]): boolean => {
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((x) => set.has(x));
};

export function createEntryRepository(db: Db) {
  async function upsertMarked(workerId: string, entries: readonly CacheEntry[], snapshotId: string | null, q: Queryable): Promise<void> {
    for (let i = 0; i < entries.length; i += CHUNK) {
      await q.query(UPSERT_SQL, [workerId, ...columns(entries.slice(i, i + CHUNK)), snapshotId]);
    }
  }
  const upsert = (workerId: string, entries: readonly CacheEntry[], q: Queryable): Promise<void> => upsertMarked(workerId, entries, null, q);

  /** The part the snapshot expects next: written and counted; the final one removes the rest and completes it. */
  async function applyNext(workerId: string, p: SnapshotPart, before: number, q: Queryable): Promise<SnapshotPartResult> {
    await upsertMarked(workerId, p.entries, p.snapshotId, q);
    const entries = before + p.entries.length;
    let removed = 0;
    if (p.final) {
      const res = await q.query(
        'DELETE FROM cache_entries WHERE worker_id = $1 AND account_id = ANY($2::text[]) AND snapshot_id IS DISTINCT FROM $3::uuid',
        [workerId, p.accounts, p.snapshotId],
      );
      removed = res.rowCount ?? 0;
    }
    await q.query(
      `UPDATE sync_snapshots SET next_part = $3, entries = $4, removed = $5, completed_at = CASE WHEN $6::boolean THEN now() END
       WHERE worker_id = $1 AND snapshot_id = $2`,
      [workerId, p.snapshotId, p.part + 1, entries, removed, p.final],
    );
    return { applied: true, entries, removed, complete: p.final, finishedBefore: false };
  }

  return {
    upsert,

    /**
     * One part of a full snapshot, inside the caller's transaction with the worker's row locked (parts of
     * one worker apply one at a time). Its entries are written marked with the snapshot id; the final part
     * then removes the worker's entries of the snapshot's accounts that no part marked, so the result
     * equals one snapshot of all the parts' entries. Nothing is removed before the final part: a snapshot
     * that never completes leaves the entries as they were plus what its parts wrote.
     *
     * Only the newest snapshot of the worker's current registration takes parts, in order. The first part
     * of a new id starts a snapshot and supersedes any unfinished one (the agent restarted, or started
     * over); it also clears `snapshot_at`, so deltas wait for the final part (rows written by a delta
     * meanwhile would be removed by it); the caller marks the worker's snapshot done when the final part
     * completes it. A part applied before is applied again (same rows, same mark, counted once); any part
     * of a finished snapshot changes nothing and gets the finished answer.
     */
    async applySnapshotPart(workerId: string, p: SnapshotPart, q: Queryable): Promise<SnapshotPartResult> {
      const { rows } = await q.query<SnapshotState>(
        `SELECT s.registered_at = w.registered_at AS same_registration,
           s.accounts, s.next_part, s.entries, s.removed, s.completed_at IS NOT NULL AS completed,
           s.seq = (SELECT max(seq) FROM sync_snapshots WHERE worker_id = $1) AS newest
         FROM workers w LEFT JOIN sync_snapshots s ON s.worker_id = w.worker_id AND s.snapshot_id = $2
         WHERE w.worker_id = $1`,
        [workerId, p.snapshotId],
      );
      const state = rows[0];
      if (!state) return { applied: false, reason: 'not registered' };
      const id = p.snapshotId;
      if (state.next_part === null) {
        if (p.part !== 0) return { applied: false, reason: `snapshot ${id} is not in progress (superseded, or its part 0 never arrived)` };
        await q.query(
          'INSERT INTO sync_snapshots (worker_id, snapshot_id, registered_at, accounts) SELECT $1, $2, registered_at, $3 FROM workers WHERE worker_id = $1',
          [workerId, id, p.accounts],
        );
        await q.query(
          `DELETE FROM sync_snapshots WHERE worker_id = $1 AND seq NOT IN
             (SELECT seq FROM sync_snapshots WHERE worker_id = $1 ORDER BY seq DESC LIMIT ${SNAPSHOTS_KEPT})`,
          [workerId],
        );
        await q.query('UPDATE workers SET snapshot_at = NULL WHERE worker_id = $1', [workerId]);
        return applyNext(workerId, p, 0, q);
      }
      if (state.completed) return { applied: true, entries: state.entries ?? 0, removed: state.removed ?? 0, complete: true, finishedBefore: true };
      if (!state.same_registration) {
        return { applied: false, reason: `snapshot ${id} began before the worker's last registration` };
      }
      if (!state.newest) return { applied: false, reason: `snapshot ${id} was superseded by a newer snapshot` };
      if (!sameAccounts(state.accounts ?? [], p.accounts)) {
        throw new RgridError('bad_request', `part ${p.part} of snapshot ${id} names other accounts than its part 0`);
      }
      const next = state.next_part;
      if (p.part > next) return { applied: false, reason: `part ${p.part} of snapshot ${id} arrived before part ${next}` };
      if (p.part < next) {
        if (p.final) throw new RgridError('bad_request', `part ${p.part} of snapshot ${id} was applied as a part that is not final`);
        // A retry (the answer was lost): the same rows again, same mark; counted once.
        await upsertMarked(workerId, p.entries, id, q);
        return { applied: true, entries: state.entries ?? 0, removed: 0, complete: false, finishedBefore: false };
      }
      return applyNext(workerId, p, state.entries ?? 0, q);
    },

    /** Records op ids; returns those not seen before for this worker (the ones to apply). */
    async claimOpIds(workerId: string, ids: readonly string[], q: Queryable): Promise<Set<string>> {
      const { rows } = await q.query<{ op_id: string }>(
        `INSERT INTO sync_applied_ops (worker_id, op_id) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING RETURNING op_id`,
        [workerId, ids],
      );
      return new Set(rows.map((r) => r.op_id));
    },

    async applyPlan(workerId: string, plan: SyncPlan, q: Queryable): Promise<void> {
      if (plan.deletes.length > 0) await deleteEntries(workerId, plan.deletes, q);
      if (plan.upserts.length > 0) await upsert(workerId, plan.upserts, q);
      if (plan.touches.length > 0) {
        const t = plan.touches;
        await q.query(
          `UPDATE cache_entries c SET use_count = c.use_count + u.count,
             last_used_at = greatest(c.last_used_at, u.last_used_at), synced_at = now()
           FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
             AS u(account_id, kind, key, count, last_used_at)
           WHERE c.worker_id = $1 AND c.account_id = u.account_id AND c.kind = u.kind AND c.key = u.key`,
          [workerId, t.map((x) => x.account), t.map((x) => x.kind), t.map((x) => x.key), t.map((x) => x.count), t.map((x) => x.last_used_at)],
        );
      }
    },

    /** The entries a worker holds (for inspection and tests), optionally of one account. */
    async listForWorker(workerId: string, account: string | null, q: Queryable = db): Promise<EntryRow[]> {
      const { rows } = await q.query<EntryRow>(
        `SELECT worker_id, kind, account_id AS account, key, image_id, runtime,
           nullif(requirements_sha256, '') AS requirements_sha256, script_sha256, deps_key, lock_sha256, size_bytes,
           created_at, last_used_at, use_count
         FROM cache_entries WHERE worker_id = $1 AND ($2::text IS NULL OR account_id = $2)
         ORDER BY account_id, kind, key`,
        [workerId, account],
      );
      return rows;
    },
  };
}

async function deleteEntries(workerId: string, ids: readonly EntryId[], q: Queryable): Promise<void> {
  await q.query(
    `DELETE FROM cache_entries c USING unnest($2::text[], $3::text[], $4::text[]) AS d(account_id, kind, key)
     WHERE c.worker_id = $1 AND c.account_id = d.account_id AND c.kind = d.kind AND c.key = d.key`,
    [workerId, ids.map((x) => x.account), ids.map((x) => x.kind), ids.map((x) => x.key)],
  );
}
export type EntryRepository = ReturnType<typeof createEntryRepository>;
