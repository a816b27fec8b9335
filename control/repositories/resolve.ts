import type { Db, Queryable } from '../db/pool.js';
import type { Holder } from '../placement.js';
import { NO_REQUIREMENTS } from './entries.js';

export interface ResolveQuery {
  account: string;
  runtime: string;
  scriptSha256: string;
  requirementsSha256: string | null;
  inputSha256: string | null;
}

/** One holding entry (the detail `include_entries` asks for). */
export interface HolderRow {
  kind: 'image' | 'deps';
  worker_id: string;
  key: string;
  image_id: string;
  size_bytes: number;
  /** epoch milliseconds (cheaper to move than a timestamp parsed into a Date per row). */
  last_used_ms: number;
}

export interface ResolveRows {
  /** One per worker, the largest matching entry's size, by worker id (code-point order). Liveness is the caller's. */
  image: Holder[];
  deps: Holder[];
  manifest: boolean;
  missing: string[];
}

/**
 * The holders of the script image and of the dependency layer, aggregated in SQL: one row of arrays
 * (worker ids and, per worker, the largest entry: a worker may hold two matching entries built on
 * different base images) instead of ~110 rows each parsed into an object. Both lookups are index-only
 * scans on the two partial indexes. The sizes come back as float8 (exact below 2^53), which pg parses
 * into numbers. Liveness is filtered against the fleet view by the caller.
 */
const HOLDERS_CTE = `
  WITH h AS (
    SELECT 'image' AS kind, worker_id, max(size_bytes) AS size_bytes FROM cache_entries
    WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4
    GROUP BY worker_id
    UNION ALL
    SELECT 'deps', worker_id, max(size_bytes) FROM cache_entries
    WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> ''
    GROUP BY worker_id)`;
const HOLDERS_COLUMNS = `
    coalesce(array_agg(worker_id ORDER BY worker_id COLLATE "C") FILTER (WHERE kind = 'image'), '{}') AS image_workers,
    coalesce(array_agg(size_bytes::float8 ORDER BY worker_id COLLATE "C") FILTER (WHERE kind = 'image'), '{}') AS image_sizes,
    coalesce(array_agg(worker_id ORDER BY worker_id COLLATE "C") FILTER (WHERE kind = 'deps'), '{}') AS deps_workers,
    coalesce(array_agg(size_bytes::float8 ORDER BY worker_id COLLATE "C") FILTER (WHERE kind = 'deps'), '{}') AS deps_sizes`;
const HOLDERS_SQL = `${HOLDERS_CTE} SELECT ${HOLDERS_COLUMNS} FROM h`;

/** The same, plus the input manifest's state in the same round trip (only when the request names inputs). */
const HOLDERS_INPUTS_SQL = `${HOLDERS_CTE} SELECT ${HOLDERS_COLUMNS},
    EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $5) AS manifest,
    ARRAY(SELECT DISTINCT f.sha256 FROM input_manifest_files f
          WHERE f.account_id = $1 AND f.input_sha256 = $5
            AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = f.sha256) ORDER BY 1) AS missing
  FROM h`;

const ENTRIES_SQL = `
  SELECT 'image' AS kind, worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8 AS last_used_ms
  FROM cache_entries WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4
  UNION ALL
  SELECT 'deps', worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8
  FROM cache_entries WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> ''`;

interface AggregateRow {
  image_workers: string[];
  image_sizes: number[];
  deps_workers: string[];
  deps_sizes: number[];
  manifest?: boolean;
  missing?: string[];
}

function holders(workers: readonly string[], sizes: readonly number[]): Holder[] {
  const out: Holder[] = new Array<Holder>(workers.length);
  for (let i = 0; i < workers.length; i++) out[i] = { worker_id: workers[i]!, size_bytes: sizes[i]! };
  return out;
}

export function createResolveRepository(db: Db) {
  return {
    /** One round trip: the holders per worker and, when the query names inputs, the manifest's state. */
    async resolve(query: ResolveQuery, q: Queryable = db): Promise<ResolveRows> {
      const base = [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256];
      // Named statements are parsed and planned once per connection, not on every request.
      const { rows } = await q.query<AggregateRow>(
        query.inputSha256 === null
          ? { name: 'rgrid-resolve-holders-v2', text: HOLDERS_SQL, values: base }
          : { name: 'rgrid-resolve-holders-inputs-v2', text: HOLDERS_INPUTS_SQL, values: [...base, query.inputSha256] },
      );
      const r = rows[0]!;
      return {
        image: holders(r.image_workers, r.image_sizes),
        deps: holders(r.deps_workers, r.deps_sizes),
        manifest: r.manifest ?? false,
        missing: r.missing ?? [],
      };
    },

    /** Every matching entry, one row each (for `include_entries`). */
    async entries(query: Omit<ResolveQuery, 'inputSha256'>, q: Queryable = db): Promise<HolderRow[]> {
      const { rows } = await q.query<HolderRow>({
        name: 'rgrid-resolve-entries',
        text: ENTRIES_SQL,
        values: [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256],
      });
      return rows;
    },
  };
}
export type ResolveRepository = ReturnType<typeof createResolveRepository>;
