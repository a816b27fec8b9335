/**
 * POST /v1/resolve (issue 3 contract): what is cached where for (account from the token, runtime,
 * script, requirements, inputs), and a ranked placement over the live workers serving the account.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { ResolveRequest, ResolveResponse, type HolderEntry } from '../../common/wire/control-api.js';
import { accountOf } from '../plugins/auth.js';
import { rankPlacement, type Holder, type WorkerLoadInfo } from '../placement.js';
import type { HolderRow } from '../repositories/resolve.js';

/** One holder per worker (a worker may hold two matching entries built on different base images). */
function byWorker(rows: readonly HolderRow[]): Holder[] {
  const best = new Map<string, Holder>();
  for (const r of rows) {
    const seen = best.get(r.worker_id);
    if (!seen || r.size_bytes > seen.size_bytes) best.set(r.worker_id, { worker_id: r.worker_id, size_bytes: r.size_bytes });
  }
  return [...best.values()].sort((a, b) => (a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0));
}

function answer(rows: readonly HolderRow[], holders: readonly Holder[], withEntries: boolean) {
  const workers = holders.map((h) => h.worker_id);
  if (!withEntries) return { cached: holders.length > 0, workers };
  const entries: HolderEntry[] = rows.map((r) => ({
    worker_id: r.worker_id, key: r.key, image_id: r.image_id, size_bytes: r.size_bytes, last_used_at: new Date(r.last_used_ms).toISOString(),
  }));
  return { cached: holders.length > 0, workers, entries };
}

const resolveRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  app.post(
    '/resolve',
    { config: { roles: ['scheduler'] }, schema: { tags: ['scheduler'], body: ResolveRequest, response: { 200: ResolveResponse } } },
    async (request) => {
      const account = accountOf(request);
      const body = request.body;
      const limit = body.limit ?? app.config.placementLimit;
      const [fleet, rows] = await Promise.all([
        app.fleet.get(account),
        app.repos.resolve.resolve({
          account, runtime: body.runtime, scriptSha256: body.script_sha256,
          requirementsSha256: body.requirements_sha256 ?? null, inputSha256: body.input_sha256 ?? null,
        }),
      ]);
      // Entries of dead workers (or of workers no longer serving the account) are not answers.
      const liveRows = rows.holders.filter((r) => fleet.live.has(r.worker_id));
      const imageRows = liveRows.filter((r) => r.kind === 'image');
      const depsRows = liveRows.filter((r) => r.kind === 'deps');
      const image = byWorker(imageRows);
      const deps = byWorker(depsRows);
      // Candidates: every holder, plus the least loaded live workers (the only others that can rank
      // within the limit, since without a holding they differ by load alone).
      const candidates = new Map<string, WorkerLoadInfo>();
      for (const h of [...image, ...deps]) candidates.set(h.worker_id, fleet.live.get(h.worker_id)!);
      for (const w of fleet.leastLoaded.slice(0, limit)) candidates.set(w.worker_id, w);
      const placement = rankPlacement({ liveWorkers: fleet.live.size, imageHolders: image, depsHolders: deps, candidates: [...candidates.values()], limit });
      const inputSha = body.input_sha256 ?? null;
      app.metrics.resolves.inc();
      return {
        image: answer(imageRows, image, body.include_entries === true),
        deps: answer(depsRows, deps, body.include_entries === true),
        inputs: {
          input_sha256: inputSha,
          manifest: rows.manifest,
          stored: inputSha === null ? true : rows.manifest && rows.missing.length === 0,
          missing_blobs: rows.missing,
        },
        placement,
        live_workers: fleet.live.size,
      };
    },
  );
  done();
};
export default resolveRoutes;
