/**
 * POST /v1/resolve (issue 3 contract): what is cached where for (account from the token, runtime,
 * script, requirements, inputs), and a ranked placement over the live workers.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { ResolveRequest, ResolveResponse, type HolderEntry } from '../../common/wire/control-api.js';
import { accountOf } from '../plugins/auth.js';
import { rankPlacement, type Holder, type WorkerLoadInfo } from '../placement.js';
import type { HolderRow } from '../repositories/resolve.js';

/** One holder per worker (a worker may hold two matching entries built on different base images). */
function byWorker(rows: readonly HolderRow[]): HolderRow[] {
  const best = new Map<string, HolderRow>();
  for (const r of rows) {
    const seen = best.get(r.worker_id);
    if (!seen || r.size_bytes > seen.size_bytes) best.set(r.worker_id, r);
  }
  return [...best.values()];
}

function answer(rows: readonly HolderRow[], holders: readonly HolderRow[]) {
  const entries: HolderEntry[] = rows.map((r) => ({
    worker_id: r.worker_id, key: r.key, image_id: r.image_id, size_bytes: r.size_bytes, last_used_at: new Date(r.last_used_at).toISOString(),
  }));
  return { cached: holders.length > 0, workers: holders.map((h) => h.worker_id), entries };
}

const resolveRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  app.post(
    '/resolve',
    { config: { roles: ['scheduler'] }, schema: { tags: ['scheduler'], body: ResolveRequest, response: { 200: ResolveResponse } } },
    async (request) => {
      const account = accountOf(request);
      const body = request.body;
      const limit = body.limit ?? app.config.placementLimit;
      const rows = await app.repos.resolve.resolve({
        account,
        runtime: body.runtime,
        scriptSha256: body.script_sha256,
        requirementsSha256: body.requirements_sha256 ?? null,
        inputSha256: body.input_sha256 ?? null,
        deadAfterMs: app.config.workerDeadAfterMs,
        leastLoaded: limit,
      });
      const image = byWorker(rows.image);
      const deps = byWorker(rows.deps);
      const candidates = new Map<string, WorkerLoadInfo>();
      for (const w of [...image, ...deps, ...rows.least]) candidates.set(w.worker_id, { worker_id: w.worker_id, capacity: w.capacity, running: w.running });
      const toHolder = (h: HolderRow): Holder => ({ worker_id: h.worker_id, size_bytes: h.size_bytes });
      const placement = rankPlacement({
        liveWorkers: rows.live, imageHolders: image.map(toHolder), depsHolders: deps.map(toHolder), candidates: [...candidates.values()], limit,
      });
      const inputSha = body.input_sha256 ?? null;
      app.metrics.resolves.inc();
      return {
        image: answer(rows.image, image),
        deps: answer(rows.deps, deps),
        inputs: {
          input_sha256: inputSha,
          manifest: rows.manifest,
          stored: inputSha === null ? true : rows.manifest && rows.missing.length === 0,
          missing_blobs: rows.missing,
        },
        placement,
        live_workers: rows.live,
      };
    },
  );
  done();
};
export default resolveRoutes;
