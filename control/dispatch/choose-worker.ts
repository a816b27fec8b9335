/**
 * Where an execution goes: the existing resolve query and placement ranking (control/placement.ts), with
 * one change to the load it sees. Heartbeats report `running` every few seconds, far too late for a batch
 * submitted in one burst, so dispatch uses the executions it has already assigned or handed out per
 * worker, as `outstanding / (outstanding + capacity)`: unlike running/capacity this never saturates at
 * 1, so a queue of 50 still counts as more load than a queue of 49 and a batch keeps alternating.
 */
import type { Queryable } from '../db/pool.js';
import { readFleet } from '../fleet-view.js';
import { rankPlacement, type WorkerLoadInfo } from '../placement.js';
import { createResolveRepository } from '../repositories/resolve.js';
import type { Db } from '../db/pool.js';
import { outstanding } from './repository.js';

export interface ChooseInput {
  account: string;
  runtime: string;
  scriptSha256: string;
  requirementsSha256: string | null;
  /** Workers that lost a claim on this execution: chosen only when no other live worker serves the account. */
  avoid?: readonly string[];
}

export interface ChooseConfig {
  workerDeadAfterMs: number;
  placementLimit: number;
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

export async function chooseWorker(db: Db, q: Queryable, input: ChooseInput, config: ChooseConfig): Promise<string | null> {
  // Dispatch reads liveness fresh (inside its transaction), not through the resolve route's short cache:
  // a placement decision is written down, so it must not go to a worker that just died.
  const [fleet, rows] = await Promise.all([
    readFleet(q, input.account, config.workerDeadAfterMs),
    createResolveRepository(db).resolve(
      { account: input.account, runtime: input.runtime, scriptSha256: input.scriptSha256, requirementsSha256: input.requirementsSha256, inputSha256: null },
      q,
    ),
  ]);
  if (fleet.live.size === 0) return null;
  // Every live worker is a candidate: a batch must be able to reach all of them.
  const image = rows.image.filter((h) => fleet.live.has(h.worker_id));
  const deps = rows.deps.filter((h) => fleet.live.has(h.worker_id));
  const counts = await outstanding(q, [...fleet.live.keys()]);
  const candidates = [...fleet.live.values()].map((w) => dispatchLoad(w, counts.get(w.worker_id) ?? 0));
  const ranked = rankPlacement({ liveWorkers: fleet.live.size, imageHolders: image, depsHolders: deps, candidates, limit: candidates.length });
  return pick(ranked, input.avoid);
}
