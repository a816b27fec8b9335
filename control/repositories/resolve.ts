import type { Db, Queryable } from '../db/pool.js';
import { NO_REQUIREMENTS } from './entries.js';
import type { WorkerLoadInfo } from '../placement.js';

export interface ResolveQuery {
  account: string;
  runtime: string;
  scriptSha256: string;
  requirementsSha256: string | null;
  inputSha256: string | null;
  deadAfterMs: number;
  /** How many of the least loaded live workers to consider besides the holders. */
  leastLoaded: number;
}

export interface HolderRow extends WorkerLoadInfo {
  key: string;
  image_id: string;
  size_bytes: number;
  last_used_at: string;
}

export interface ResolveRows {
  live: number;
  image: HolderRow[];
  deps: HolderRow[];
  least: WorkerLoadInfo[];
  manifest: boolean;
  missing: string[];
}

/**
 * Everything resolve needs in one statement (one round trip): the live workers that serve the account
 * (a live worker token of the account; others are never placed on), the live holders of the
 * image and of the dependency layer (index-only lookups on the partial indexes), the least loaded live
 * workers (the only non-holders that can rank high), and the state of the input manifest.
 */
const RESOLVE_SQL = `
WITH live AS MATERIALIZED (
  SELECT w.worker_id, w.capacity, w.running FROM workers w
  WHERE w.last_seen_at > now() - make_interval(secs => $6::float8 / 1000)
    AND w.worker_id IN (SELECT t.worker_id FROM tokens t WHERE t.account_id = $1 AND t.role = 'worker'
                        AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()))
), img AS (
  SELECT e.worker_id, e.key, e.image_id, e.size_bytes, e.last_used_at, l.capacity, l.running
  FROM cache_entries e JOIN live l ON l.worker_id = e.worker_id
  WHERE e.kind = 'image' AND e.account_id = $1 AND e.runtime = $2 AND e.requirements_sha256 = $3 AND e.script_sha256 = $4
), dep AS (
  SELECT e.worker_id, e.key, e.image_id, e.size_bytes, e.last_used_at, l.capacity, l.running
  FROM cache_entries e JOIN live l ON l.worker_id = e.worker_id
  WHERE e.kind = 'deps' AND e.account_id = $1 AND e.runtime = $2 AND e.requirements_sha256 = $3 AND $3 <> ''
), least_loaded AS (
  SELECT worker_id, capacity, running FROM live
  ORDER BY CASE WHEN capacity > 0 THEN least(running::float8 / capacity, 1) ELSE 1 END, worker_id
  LIMIT $7
)
SELECT
  (SELECT count(*)::int FROM live) AS live,
  (SELECT coalesce(json_agg(img ORDER BY worker_id), '[]'::json) FROM img) AS image,
  (SELECT coalesce(json_agg(dep ORDER BY worker_id), '[]'::json) FROM dep) AS deps,
  (SELECT coalesce(json_agg(least_loaded), '[]'::json) FROM least_loaded) AS least,
  EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $5) AS manifest,
  (SELECT coalesce(json_agg(DISTINCT f.sha256), '[]'::json) FROM input_manifest_files f
    WHERE f.account_id = $1 AND f.input_sha256 = $5
      AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = f.sha256)) AS missing`;

export function createResolveRepository(db: Db) {
  return {
    async resolve(query: ResolveQuery, q: Queryable = db): Promise<ResolveRows> {
      const { rows } = await q.query<ResolveRows>({
        // A named statement is parsed and planned once per connection, not on every request.
        name: 'rgrid-resolve',
        text: RESOLVE_SQL,
        values: [
          query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256,
          query.inputSha256, query.deadAfterMs, query.leastLoaded,
        ],
      });
      return rows[0]!;
    },
  };
}
export type ResolveRepository = ReturnType<typeof createResolveRepository>;
