/**
 * Placement as one service, created once per process: `resolve` answers POST /v1/resolve (what is
 * cached where, what the registry has, and a ranked placement), `choose` picks the worker dispatch
 * writes down for an execution. Both read through query.ts and rank with rank.ts, so the route and
 * dispatch cannot drift apart.
 *
 * The two differ in what they read and how fresh:
 * - resolve reads the live workers through a short per-process cache (`fleetCacheMs`, default 1 s, 0 =
 *   read on every request): reading them costs a scan of the account's workers and tokens (1–5 ms for
 *   1,000 workers), which dominated resolve. A view older than fleetCacheMs is still answered with while
 *   one read replaces it in the background, up to 2 × fleetCacheMs old; only a view older than that (an
 *   account idle for a while) is waited for. Otherwise every request arriving during the read waited for
 *   it, once a second: at 2,000 requests/s that was the p99 (docs/benchmarks.md, "Hits and resolve").
 *   This is a cache, not state: every replica reads the same rows, and the views converge within
 *   2 × fleetCacheMs — far below the heartbeat interval that loads change with and the dead-after window
 *   that liveness is judged by.
 * - choose reads liveness fresh inside dispatch's transaction: a placement decision is written down, so
 *   it must not go to a worker that just died. Heartbeats report `running` every few seconds, far too
 *   late for a batch submitted in one burst, so it uses the executions already assigned or handed out
 *   per worker, as `outstanding / (outstanding + capacity)`: unlike running/capacity this never
 *   saturates at 1, so a queue of 50 still counts as more load than a queue of 49 and a batch keeps
 *   alternating.
 */
import type { HolderEntry, ResolveRequest, ResolveResponse } from '../../common/wire/control-api.js';
import type { Db, Queryable } from '../db/pool.js';
import { outstanding } from '../dispatch/repository.js';
import { readEntries, readFleet, readHoldings, type FleetSnapshot, type HolderRow, type HoldingRows, type PlacementQuery } from './query.js';
import { rankPlacement, type Holder, type WorkerLoadInfo } from './rank.js';

export interface PlacementConfig {
  workerDeadAfterMs: number;
  fleetCacheMs: number;
  placementLimit: number;
  /** Assumed registry pull throughput in MB/s (1 MB = 2^20 bytes). */
  placementPullMbps: number;
}

export interface ChooseInput {
  account: string;
  runtime: string;
  scriptSha256: string;
  requirementsSha256: string | null;
  /** Workers that lost a claim on this execution: chosen only when no other live worker serves the account. */
  avoid?: readonly string[];
}

/** Dispatch's load input: see the module comment. Pure, unit-tested. */
export function dispatchLoad(w: { worker_id: string; capacity: number }, queued: number): WorkerLoadInfo {
  const capacity = Math.max(w.capacity, 1);
  return { worker_id: w.worker_id, running: queued, capacity: capacity + queued };
}

/** Picks from a ranking: the best worker not to avoid, else the best one (better late than never). */
export function pick(ranked: readonly { worker_id: string }[], avoid: readonly string[] = []): string | null {
  const preferred = ranked.find((r) => !avoid.includes(r.worker_id));
  return preferred?.worker_id ?? ranked[0]?.worker_id ?? null;
}

const MAX_CACHED_ACCOUNTS = 10_000;

interface FleetCache {
  get(account: string): Promise<FleetSnapshot>;
  /** Drops the views of these accounts: the next resolve reads them (a worker of theirs just left). */
  forget(accounts: readonly string[]): void;
}

function cachedFleet(db: Db, config: PlacementConfig): FleetCache {
  interface Slot { at: number; value: Promise<FleetSnapshot>; refreshing: boolean }
  const cache = new Map<string, Slot>();
  /** One read for the account (single flight through its slot); a failed read is not cached. */
  const read = (account: string, now: number): Slot => {
    const slot: Slot = { at: now, value: readFleet(db, account, config.workerDeadAfterMs), refreshing: false };
    slot.value.catch(() => {
      if (cache.get(account) === slot) cache.delete(account);
    });
    return slot;
  };
  const get = (account: string): Promise<FleetSnapshot> => {
    if (config.fleetCacheMs <= 0) return readFleet(db, account, config.workerDeadAfterMs);
    const now = Date.now();
    const hit = cache.get(account);
    const age = hit ? now - hit.at : Infinity;
    if (hit && age < config.fleetCacheMs) return hit.value;
    if (hit && age < 2 * config.fleetCacheMs) {
      // Stale but usable: answer with it, and replace it once the background read has succeeded.
      if (!hit.refreshing) {
        hit.refreshing = true;
        const next = read(account, now);
        next.value.then(
          () => {
            if (cache.get(account) === hit) cache.set(account, next);
          },
          () => {
            hit.refreshing = false;
          },
        );
      }
      return hit.value;
    }
    if (cache.size >= MAX_CACHED_ACCOUNTS) cache.clear();
    const slot = read(account, now);
    cache.set(account, slot);
    return slot.value;
  };
  return {
    get,
    forget(accounts) {
      for (const account of accounts) cache.delete(account);
    },
  };
}

type Holdings = Pick<HoldingRows, 'image' | 'deps' | 'olderImage' | 'olderDeps'>;

/** The holdings of live workers only: entries of dead workers (or of workers no longer serving the account) are not answers. */
function liveHoldings(rows: Holdings, live: ReadonlyMap<string, unknown>): Holdings {
  const alive = (holders: readonly Holder[]): Holder[] => holders.filter((h) => live.has(h.worker_id));
  return { image: alive(rows.image), deps: alive(rows.deps), olderImage: alive(rows.olderImage), olderDeps: alive(rows.olderDeps) };
}

/** Holders of the newest lock and of older ones together, by worker id (a worker is in one of the two). */
function everyHolder(current: readonly Holder[], older: readonly Holder[]): Holder[] {
  return [...current, ...older].sort((a, b) => (a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0));
}

function cacheAnswer(holders: readonly Holder[], rows: readonly HolderRow[] | undefined) {
  const workers = holders.map((h) => h.worker_id);
  if (!rows) return { cached: holders.length > 0, workers };
  const entries: HolderEntry[] = rows.map((r) => ({
    worker_id: r.worker_id, key: r.key, image_id: r.image_id, size_bytes: r.size_bytes, last_used_at: new Date(r.last_used_ms).toISOString(),
  }));
  return { cached: holders.length > 0, workers, entries };
}

export function createPlacement(db: Db, config: PlacementConfig) {
  const fleetCache = cachedFleet(db, config);
  const cost = { pullBytesPerS: config.placementPullMbps * 1024 * 1024 };

  return {
    /** POST /v1/resolve for `account` (the token's). */
    async resolve(account: string, body: ResolveRequest): Promise<ResolveResponse> {
      const limit = body.limit ?? config.placementLimit;
      const query: PlacementQuery = {
        account, runtime: body.runtime, scriptSha256: body.script_sha256,
        requirementsSha256: body.requirements_sha256 ?? null, inputSha256: body.input_sha256 ?? null,
      };
      // One round trip for the answer (holders aggregated per worker in SQL, registry and inputs folded
      // in) beside the cached fleet; the per-entry detail is a second query, only when asked for.
      const [fleet, rows, entryRows] = await Promise.all([
        fleetCache.get(account),
        readHoldings(db, query),
        body.include_entries === true ? readEntries(db, query) : undefined,
      ]);
      const live = fleet.live;
      const held = liveHoldings(rows, live);
      const liveEntries = entryRows?.filter((r) => live.has(r.worker_id));
      // Candidates: every holder, plus the least loaded live workers. Workers without a holding all
      // share one tier (pull, or build), so they differ by load alone and only the least loaded of them
      // can rank within the limit.
      const candidates = new Map<string, WorkerLoadInfo>();
      for (const holders of [held.image, held.deps, held.olderImage, held.olderDeps]) {
        for (const h of holders) candidates.set(h.worker_id, live.get(h.worker_id)!);
      }
      for (const w of fleet.leastLoaded.slice(0, limit)) candidates.set(w.worker_id, w);
      const placement = rankPlacement({
        liveWorkers: live.size, imageHolders: held.image, depsHolders: held.deps, olderImageHolders: held.olderImage, olderDepsHolders: held.olderDeps,
        registry: rows.registry, hasRequirements: query.requirementsSha256 !== null, candidates: [...candidates.values()], limit, cost,
      });
      const inputSha = query.inputSha256;
      return {
        // A holder of an older lock still holds the entry: it is listed (placement ranks it lower).
        image: cacheAnswer(everyHolder(held.image, held.olderImage), liveEntries?.filter((r) => r.kind === 'image')),
        deps: cacheAnswer(everyHolder(held.deps, held.olderDeps), liveEntries?.filter((r) => r.kind === 'deps')),
        inputs: {
          input_sha256: inputSha,
          manifest: rows.manifest,
          stored: inputSha === null ? true : rows.manifest && rows.missing.length === 0,
          missing_blobs: rows.missing,
        },
        registry: { image: rows.registry.image !== null, deps: rows.registry.deps !== null },
        placement,
        live_workers: live.size,
      };
    },

    /**
     * Forgets this process's cached views of the accounts of a worker that left, so that this replica's
     * next resolve does not offer it; other replicas' views follow within 2 × fleetCacheMs.
     */
    forget(accounts: readonly string[]): void {
      fleetCache.forget(accounts);
    },

    /** The worker an execution goes to, read on `q` (dispatch's transaction); null when no live worker serves the account. */
    async choose(q: Queryable, input: ChooseInput): Promise<string | null> {
      const [fleet, rows] = await Promise.all([
        readFleet(q, input.account, config.workerDeadAfterMs),
        readHoldings(q, { account: input.account, runtime: input.runtime, scriptSha256: input.scriptSha256, requirementsSha256: input.requirementsSha256, inputSha256: null }),
      ]);
      if (fleet.live.size === 0) return null;
      // Every live worker is a candidate: a batch must be able to reach all of them.
      const held = liveHoldings(rows, fleet.live);
      const counts = await outstanding(q, [...fleet.live.keys()]);
      const candidates = [...fleet.live.values()].map((w) => dispatchLoad(w, counts.get(w.worker_id) ?? 0));
      const ranked = rankPlacement({
        liveWorkers: fleet.live.size, imageHolders: held.image, depsHolders: held.deps, olderImageHolders: held.olderImage, olderDepsHolders: held.olderDeps,
        registry: rows.registry, hasRequirements: input.requirementsSha256 !== null, candidates, limit: candidates.length, cost,
      });
      return pick(ranked, input.avoid);
    },
  };
}
export type Placement = ReturnType<typeof createPlacement>;
