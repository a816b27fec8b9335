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
 * The holders of the script image and of the dependency layer in one row: per kind, one string of
 * "worker size" pairs (string_agg) instead of ~110 rows each parsed into an object by pg — worker ids
 * are names without spaces (common/wire Name). Both lookups are index-only scans on the two partial
 * indexes; ordering and the largest entry per worker (a worker may hold two matching entries built on
 * different base images) are done by the caller's parse, which is cheaper there than a sort and an
 * aggregate per request in PostgreSQL. Liveness is filtered against the fleet view by the caller.
 */
const HOLDERS_COLUMNS = `
  (SELECT string_agg(worker_id || ' ' || size_bytes, ' ') FROM cache_entries
   WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4) AS image,
  (SELECT string_agg(worker_id || ' ' || size_bytes, ' ') FROM cache_entries
   WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> '') AS deps`;
const HOLDERS_SQL = `SELECT ${HOLDERS_COLUMNS}`;

/** The same, plus the input manifest's state in the same round trip (only when the request names inputs). */
const HOLDERS_INPUTS_SQL = `SELECT ${HOLDERS_COLUMNS},
  EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $5) AS manifest,
  ARRAY(SELECT DISTINCT f.sha256 FROM input_manifest_files f
        WHERE f.account_id = $1 AND f.input_sha256 = $5
          AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = f.sha256) ORDER BY 1) AS missing`;

const ENTRIES_SQL = `
  SELECT 'image' AS kind, worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8 AS last_used_ms
  FROM cache_entries WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4
  UNION ALL
  SELECT 'deps', worker_id, key, image_id, size_bytes, (extract(epoch FROM last_used_at) * 1000)::float8
  FROM cache_entries WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> ''`;

interface AggregateRow {
  image: string | null;
  deps: string | null;
  manifest?: boolean;
  missing?: string[];
}

const byWorkerId = (a: Holder, b: Holder): number => (a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0);

/** "w1 size w2 size ..." → one holder per worker (its largest entry), by worker id. Exported for tests. */
export function parseHolders(text: string | null): Holder[] {
  if (!text) return [];
  const parts = text.split(' ');
  const all: Holder[] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) all.push({ worker_id: parts[i]!, size_bytes: Number(parts[i + 1]) });
  all.sort(byWorkerId);
  const out: Holder[] = [];
  for (const h of all) {
    const last = out[out.length - 1];
    if (last && last.worker_id === h.worker_id) {
      if (h.size_bytes > last.size_bytes) last.size_bytes = h.size_bytes;
    } else out.push(h);
  }
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
          ? { name: 'rgrid-resolve-holders-v3', text: HOLDERS_SQL, values: base }
          : { name: 'rgrid-resolve-holders-inputs-v3', text: HOLDERS_INPUTS_SQL, values: [...base, query.inputSha256] },
      );
      const r = rows[0]!;
      return {
        image: parseHolders(r.image),
        deps: parseHolders(r.deps),
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
