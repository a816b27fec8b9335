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
    entries.map((e) => e.size_bytes),
    entries.map((e) => e.created_at),
    entries.map((e) => e.last_used_at),
    entries.map((e) => e.use_count),
  ];
}

const UPSERT_SQL = `
  INSERT INTO cache_entries (worker_id, account_id, kind, key, image_id, runtime, requirements_sha256,
    script_sha256, deps_key, size_bytes, created_at, last_used_at, use_count, synced_at)
  SELECT $1::text, u.*, now() FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::bigint[], $11::timestamptz[], $12::timestamptz[], $13::bigint[]) AS u
  ON CONFLICT (worker_id, account_id, kind, key) DO UPDATE SET image_id = EXCLUDED.image_id,
    runtime = EXCLUDED.runtime, requirements_sha256 = EXCLUDED.requirements_sha256,
    script_sha256 = EXCLUDED.script_sha256, deps_key = EXCLUDED.deps_key, size_bytes = EXCLUDED.size_bytes,
    created_at = EXCLUDED.created_at, last_used_at = EXCLUDED.last_used_at, use_count = EXCLUDED.use_count,
    synced_at = now()`;

export interface EntryRow extends CacheEntry {
  worker_id: string;
}

export function createEntryRepository(db: Db) {
  async function upsert(workerId: string, entries: readonly CacheEntry[], q: Queryable): Promise<void> {
    for (let i = 0; i < entries.length; i += CHUNK) {
      await q.query(UPSERT_SQL, [workerId, ...columns(entries.slice(i, i + CHUNK))]);
    }
  }

  return {
    upsert,

    /**
     * A full snapshot: every listed entry is written, and the worker's other entries of the listed
     * accounts (those this transaction did not write: synced_at differs from its now()) are removed.
     */
    async replaceSnapshot(workerId: string, accounts: readonly string[], entries: readonly CacheEntry[], q: Queryable): Promise<{ removed: number }> {
      await upsert(workerId, entries, q);
      const res = await q.query(
        'DELETE FROM cache_entries WHERE worker_id = $1 AND account_id = ANY($2::text[]) AND synced_at <> now()',
        [workerId, accounts],
      );
      return { removed: res.rowCount ?? 0 };
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
           nullif(requirements_sha256, '') AS requirements_sha256, script_sha256, deps_key, size_bytes,
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
