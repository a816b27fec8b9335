/**
 * What placement reads from PostgreSQL, in one place: the live workers serving an account (with their
 * loads), the holders of the script image and of the dependency layer, what the registry has for the
 * submission, and the inputs' state — the last three in one round trip.
 *
 * A worker serves an account when the token its agent uses (workers.token_id) serves it, by the view
 * live_worker_token_accounts that token lookups read too: placement and claims agree. A worker is live
 * when it was heard from within the dead-after window and is not leaving (its agent said it is stopping).
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
  /**
   * One per worker, by worker id (code-point order): the holders of the newest lock (every holder when no
   * entry names a lock). Liveness is the caller's.
   */
  image: Holder[];
  deps: Holder[];
  /** The other holders: every matching entry of theirs was built on an older lock (or on none) than the newest. */
  olderImage: Holder[];
  olderDeps: Holder[];
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
           WHERE w.last_seen_at > now() - make_interval(secs => $2::float8 / 1000) AND w.leaving_at IS NULL
             AND EXISTS (SELECT 1 FROM live_worker_token_accounts v WHERE v.worker_id = w.worker_id AND v.account_id = $1
                         AND (w.token_id IS NULL OR v.token_id = w.token_id))`,
    values: [account, deadAfterMs],
  });
  const leastLoaded = rows.sort((a, b) => loadRatio(a) - loadRatio(b) || byWorkerId(a, b));
  return { live: new Map(rows.map((r) => [r.worker_id, r])), leastLoaded };
}

/**
 * The holders of the script image and of the dependency layer in one row: per kind, one string of
 * "worker mark" pairs (string_agg) instead of ~110 rows each parsed into an object by pg — worker ids are
 * names without spaces (common/wire Name). Both lookups are index-only scans on the two partial indexes;
 * ordering and one holder per worker (a worker may hold two matching entries built on different base
 * images) are done by the caller's parse, which is cheaper there than a sort and an aggregate per
 * request in PostgreSQL. Liveness is filtered against the fleet view by the caller. Only what placement
 * reads is aggregated: an entry's size, once part of each triple, was never read, and turning ~110 sizes
 * into text per request was a third of PostgreSQL's CPU for a resolve (docs/benchmarks.md, "Hits and
 * resolve"); `include_entries` reads the sizes with the entries.
 *
 * The mark is `n` for an entry of the newest lock and `o` for one of an older lock (or of none). The
 * newest lock of (account, runtime, requirements) is the one whose entries' latest created_at is the
 * latest — the lock of the newest entry, of either kind, of any worker (a newer lock seen anywhere makes
 * the older ones stale): one probe of cache_entries_newest_lock_idx, in the same round trip. Without any
 * entry naming a lock (a fleet from before locks, or no requirements) there is no newest and every entry
 * is marked `n`, as before.
 *
 * The registry columns are NULL when the registry has no matching row, else the largest matching row's
 * size (-1 when no push recorded one): rows built on different base images are the same artifact to
 * placement, and the largest is the cautious guess of what a pull costs. Both use the partial indexes
 * of registry_images. A registry row has requirements_sha256 NULL without requirements ($5).
 */
const MARK = `CASE WHEN newest.lock IS NULL OR lock_sha256 = newest.lock THEN ' n' ELSE ' o' END`;
// MATERIALIZED: probed once, not once per reference in the two holder lookups.
const NEWEST_LOCK = `WITH newest AS MATERIALIZED (SELECT (SELECT lock_sha256 FROM cache_entries
   WHERE account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> '' AND lock_sha256 IS NOT NULL
   ORDER BY created_at DESC, lock_sha256 DESC LIMIT 1) AS lock)`;
const HOLDERS_COLUMNS = `
  (SELECT string_agg(worker_id || ${MARK}, ' ') FROM cache_entries
   WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND script_sha256 = $4) AS image,
  (SELECT string_agg(worker_id || ${MARK}, ' ') FROM cache_entries
   WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $3 AND $3 <> '') AS deps,
  (SELECT max(coalesce(size_bytes, -1))::float8 FROM registry_images
   WHERE kind = 'image' AND account_id = $1 AND runtime = $2 AND script_sha256 = $4
     AND requirements_sha256 IS NOT DISTINCT FROM $5::text) AS registry_image,
  (SELECT max(coalesce(size_bytes, -1))::float8 FROM registry_images
   WHERE kind = 'deps' AND account_id = $1 AND runtime = $2 AND requirements_sha256 = $5::text) AS registry_deps`;
const HOLDERS_SQL = `${NEWEST_LOCK} SELECT ${HOLDERS_COLUMNS} FROM newest`;

/** The same, plus the input manifest's state in the same round trip (only when the request names inputs). */
const HOLDERS_INPUTS_SQL = `${NEWEST_LOCK} SELECT ${HOLDERS_COLUMNS},
  EXISTS (SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $6) AS manifest,
  ARRAY(SELECT DISTINCT f.sha256 FROM input_manifest_files f
        WHERE f.account_id = $1 AND f.input_sha256 = $6
          AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = f.sha256) ORDER BY 1) AS missing
  FROM newest`;

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

/**
 * "w1 mark w2 mark ..." → one holder per worker, by worker id: among the current ones when any of its
 * entries is marked `n` (newest lock), else among the older ones. Exported for tests.
 */
export function parseHolders(text: string | null): { current: Holder[]; older: Holder[] } {
  if (!text) return { current: [], older: [] };
  const parts = text.split(' ');
  const all: Array<{ worker_id: string; newest: boolean }> = [];
  for (let i = 0; i + 1 < parts.length; i += 2) all.push({ worker_id: parts[i]!, newest: parts[i + 1] === 'n' });
  all.sort(byWorkerId);
  const current: Holder[] = [];
  const older: Holder[] = [];
  for (let i = 0; i < all.length; ) {
    const id = all[i]!.worker_id;
    let newest = false;
    for (; i < all.length && all[i]!.worker_id === id; i++) newest ||= all[i]!.newest;
    (newest ? current : older).push({ worker_id: id });
  }
  return { current, older };
}

const artifact = (size: number | null): RegistryArtifact | null => (size === null ? null : { size_bytes: size < 0 ? null : size });

/** One round trip: the holders per worker, the registry's artifacts and, when the query names inputs, the manifest's state. */
export async function readHoldings(q: Queryable, query: PlacementQuery): Promise<HoldingRows> {
  const base = [query.account, query.runtime, query.requirementsSha256 ?? NO_REQUIREMENTS, query.scriptSha256, query.requirementsSha256];
  // Named statements are parsed and planned once per connection, not on every request.
  const { rows } = await q.query<AggregateRow>(
    query.inputSha256 === null
      ? { name: 'rgrid-placement-holdings-v3', text: HOLDERS_SQL, values: base }
      : { name: 'rgrid-placement-holdings-inputs-v3', text: HOLDERS_INPUTS_SQL, values: [...base, query.inputSha256] },
  );
  const r = rows[0]!;
  const image = parseHolders(r.image);
  const deps = parseHolders(r.deps);
  return {
    image: image.current,
    deps: deps.current,
    olderImage: image.older,
    olderDeps: deps.older,
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
