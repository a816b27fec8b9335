import type { Db, Queryable } from '../db/pool.js';
import { NO_REQUIREMENTS } from './entries.js';

export interface ResolveQuery {
  account: string;
  runtime: string;
  scriptSha256: string;
  requirementsSha256: string | null;
  inputSha256: string | null;
}

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
  holders: HolderRow[];
  manifest: boolean;
  missing: string[];
}

/**
 * The holders of the script image and of the dependency layer (index-only scans on the two partial
 * indexes; liveness is filtered against the fleet view by the caller), then the input manifest's state.
 */
const HOLDERS_SQL = `
  SELECT 'image' AS kind, worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8 AS last_used_ms
  FROM cache_entries WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4
  UNION ALL
  SELECT 'deps', worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8
  FROM cache_entries WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> ''`;

const INPUTS_SQL = `
  SELECT EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $2) AS manifest,
    ARRAY(SELECT DISTINCT f.sha256 FROM input_manifest_files f
          WHERE f.account_id = $1 AND f.input_sha256 = $2
            AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = f.sha256) ORDER BY 1) AS missing`;

export function createResolveRepository(db: Db) {
  return {
    async resolve(query: ResolveQuery, q: Queryable = db): Promise<ResolveRows> {
      // Named statements are parsed and planned once per connection, not on every request.
      const holders = q.query<HolderRow>({
        name: 'rgrid-resolve-holders',
        text: HOLDERS_SQL,
        values: [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256],
      });
      const inputs = query.inputSha256 === null
        ? undefined
        : q.query<{ manifest: boolean; missing: string[] }>({ name: 'rgrid-resolve-inputs', text: INPUTS_SQL, values: [query.account, query.inputSha256] });
      const [h, i] = await Promise.all([holders, inputs]);
      return { holders: h.rows, manifest: i?.rows[0]?.manifest ?? false, missing: i?.rows[0]?.missing ?? [] };
    },
  };
}
export type ResolveRepository = ReturnType<typeof createResolveRepository>;
