/**
 * What placement reads from PostgreSQL, in one place: the live workers serving an account (with their
 * loads), the holders of the script image and of the dependency layer, what the registry has for the
 * submission, and the inputs' state — the last three in one round trip.
 *
 * A worker serves an account when the token its agent uses (workers.token_id) serves it, by the view
 * live_worker_token_accounts that token lookups read too: placement and claims agree.
 */
import type { Queryable } from '../db/pool.js';
import { NO_REQUIREMENTS } from '../repositories/entries.js';
import { loadRatio, type Holder, type RegistryArtifact, type WorkerLoadInfo } from './rank.js';

export interface PlacementQuery {
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

export interface HoldingRows {
  /** One per worker, the largest matching entry's size, by worker id (code-point order). Liveness is the caller's. */
  image: Holder[];
  deps: Holder[];
  registry: { image: RegistryArtifact | null; deps: RegistryArtifact | null };
  manifest: boolean;
  missing: string[];
}

export interface FleetSnapshot {
  live: Map<string, WorkerLoadInfo>;
  /** All live workers, least loaded first (ties by worker id). */
  leastLoaded: WorkerLoadInfo[];
}

const byWorkerId = (a: { worker_id: string }, b: { worker_id: string }): number => (a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0);

export async function readFleet(q: Queryable, account: string, deadAfterMs: number): Promise<FleetSnapshot> {
  const { rows } = await q.query<WorkerLoadInfo>({
    name: 'rgrid-fleet',
    text: `SELECT w.worker_id, w.capacity, w.running FROM workers w
           WHERE w.last_seen_at > now() - make_interval(secs => $2::float8 / 1000)
             AND EXISTS (SELECT 1 FROM live_worker_token_accounts v WHERE v.worker_id = w.worker_id AND v.account_id = $1
                         AND (w.token_id IS NULL OR v.token_id = w.token_id))`,
    values: [account, deadAfterMs],
  });
  const leastLoaded = rows.sort((a, b) => loadRatio(a) - loadRatio(b) || byWorkerId(a, b));
  return { live: new Map(rows.map((r) => [r.worker_id, r])), leastLoaded };
}

/**
 * The holders of the script image and of the dependency layer in one row: per kind, one string of
 * "worker size" pairs (string_agg) instead of ~110 rows each parsed into an object by pg — worker ids
 * are names without spaces (common/wire Name). Both lookups are index-only scans on the two partial
 * indexes; ordering and the largest entry per worker (a worker may hold two matching entries built on
 * different base images) are done by the caller's parse, which is cheaper there than a sort and an
 * aggregate per request in PostgreSQL. Liveness is filtered against the fleet view by the caller.
 *
 * The registry columns are NULL when the registry has no matching row, else the largest matching row's
 * size (-1 when no push recorded one): rows built on different base images are the same artifact to
 * placement, and the largest is the cautious guess of what a pull costs. Both use the partial indexes
 * of registry_images. A registry row has requirements_sha256 NULL without requirements ($5).
 */
const HOLDERS_COLUMNS = `
  (SELECT string_agg(worker_id || ' ' || size_bytes, ' ') FROM cache_entries
   WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4) AS image,
  (SELECT string_agg(worker_id || ' ' || size_bytes, ' ') FROM cache_entries
   WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> '') AS deps,
  (SELECT max(coalesce(size_bytes, -1))::float8 FROM registry_images
   WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND script_sha256 = $4
     AND requirements_sha256 IS NOT DISTINCT FROM $5::text) AS registry_image,
  (SELECT max(coalesce(size_bytes, -1))::float8 FROM registry_images
   WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $5::text) AS registry_deps`;
const HOLDERS_SQL = `SELECT ${HOLDERS_COLUMNS}`;

/** The same, plus the input manifest's state in the same round trip (only when the request names inputs). */
const HOLDERS_INPUTS_SQL = `SELECT ${HOLDERS_COLUMNS},
  EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $6) AS manifest,
  ARRAY(SELECT DISTINCT f.sha256 FROM input_manifest_files f
        WHERE f.account_id = $1 AND f.input_sha256 = $6
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
  registry_image: number | null;
  registry_deps: number | null;
  manifest?: boolean;
  missing?: string[];
}

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

const artifact = (size: number | null): RegistryArtifact | null => (size === null ? null : { size_bytes: size < 0 ? null : size });

/** One round trip: the holders per worker, the registry's artifacts and, when the query names inputs, the manifest's state. */
export async function readHoldings(q: Queryable, query: PlacementQuery): Promise<HoldingRows> {
  const base = [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256, query.requirementsSha256];
  // Named statements are parsed and planned once per connection, not on every request.
  const { rows } = await q.query<AggregateRow>(
    query.inputSha256 === null
      ? { name: 'rgrid-placement-holdings-v1', text: HOLDERS_SQL, values: base }
      : { name: 'rgrid-placement-holdings-inputs-v1', text: HOLDERS_INPUTS_SQL, values: [...base, query.inputSha256] },
  );
  const r = rows[0]!;
  return {
    image: parseHolders(r.image),
    deps: parseHolders(r.deps),
    registry: { image: artifact(r.registry_image), deps: artifact(r.registry_deps) },
    manifest: r.manifest ?? false,
    missing: r.missing ?? [],
  };
}

/** Every matching entry, one row each (for `include_entries`). */
export async function readEntries(q: Queryable, query: Omit<PlacementQuery, 'inputSha256'>): Promise<HolderRow[]> {
  const { rows } = await q.query<HolderRow>({
    name: 'rgrid-resolve-entries',
    text: ENTRIES_SQL,
    values: [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256],
  });
  return rows;
}
