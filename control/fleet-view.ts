/**
 * The live workers serving an account, with their loads: what placement ranks besides the holders.
 * A worker serves an account when the token its agent uses (workers.token_id) serves it, by the view
 * live_worker_token_accounts that token lookups read too: placement and claims agree. Reading it costs a scan of the account's workers and
 * tokens (about 1 ms for 1,000 workers), which dominated resolve; so each process keeps it for a short,
 * bounded time (`fleetCacheMs`, default 1 s, 0 = read on every request). This is a cache, not state: every replica reads the same rows, and the
 * views converge within fleetCacheMs — far below the heartbeat interval that loads change with and the
 * dead-after window that liveness is judged by.
 */
import type { Db, Queryable } from './db/pool.js';
import { loadRatio, type WorkerLoadInfo } from './placement.js';

export interface FleetSnapshot {
  live: Map<string, WorkerLoadInfo>;
  /** All live workers, least loaded first (ties by worker id). */
  leastLoaded: WorkerLoadInfo[];
}

const MAX_ACCOUNTS = 10_000;

export async function readFleet(q: Queryable, account: string, deadAfterMs: number): Promise<FleetSnapshot> {
  const { rows } = await q.query<WorkerLoadInfo>({
    name: 'rgrid-fleet',
    text: `SELECT w.worker_id, w.capacity, w.running FROM workers w
           WHERE w.last_seen_at > now() - make_interval(secs => $2::float8 / 1000)
             AND EXISTS (SELECT 1 FROM live_worker_token_accounts v WHERE v.worker_id = w.worker_id AND v.account_id = $1
                         AND (w.token_id IS NULL OR v.token_id = w.token_id))`,
    values: [account, deadAfterMs],
  });
  const leastLoaded = rows.sort((a, b) => loadRatio(a) - loadRatio(b) || (a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0));
  return { live: new Map(rows.map((r) => [r.worker_id, r])), leastLoaded };
}

export function createFleetView(db: Db, opts: { cacheMs: number; deadAfterMs: number }) {
  const cache = new Map<string, { at: number; value: Promise<FleetSnapshot> }>();
  return {
    get(account: string): Promise<FleetSnapshot> {
      if (opts.cacheMs <= 0) return readFleet(db, account, opts.deadAfterMs);
      const now = Date.now();
      const hit = cache.get(account);
      if (hit && now - hit.at < opts.cacheMs) return hit.value;
      if (cache.size >= MAX_ACCOUNTS) cache.clear();
      // Concurrent requests share one read (single flight); a failed read is not cached.
      const value = readFleet(db, account, opts.deadAfterMs);
      cache.set(account, { at: now, value });
      value.catch(() => cache.delete(account));
      return value;
    },
  };
}
export type FleetView = ReturnType<typeof createFleetView>;
