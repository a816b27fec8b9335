/**
 * POST /v1/resolve: what is cached where for (account from the token, runtime,
 * script, requirements, inputs), and a ranked placement over the live workers serving the account.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { ResolveRequest, ResolveResponse, type HolderEntry } from '../../common/wire/control-api.js';
import { accountOf } from '../plugins/auth.js';
import { rankPlacement, type Holder, type WorkerLoadInfo } from '../placement.js';
import type { HolderRow } from '../repositories/resolve.js';

function answer(holders: readonly Holder[], rows: readonly HolderRow[] | undefined) {
  const workers = holders.map((h) => h.worker_id);
  if (!rows) return { cached: holders.length > 0, workers };
  const entries: HolderEntry[] = rows.map((r) => ({
    worker_id: r.worker_id, key: r.key, image_id: r.image_id, size_bytes: r.size_bytes, last_used_at: new Date(r.last_used_ms).toISOString(),
  }));
  return { cached: holders.length > 0, workers, entries };
}

const resolveRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  app.post(
    '/resolve',
    { config: { roles: ['scheduler'] }, schema: { operationId: 'resolve', summary: 'What is cached where, and a ranked placement', tags: ['scheduler'], body: ResolveRequest, response: { 200: ResolveResponse } } },
    async (request) => {
      const account = accountOf(request);
      const body = request.body;
      const limit = body.limit ?? app.config.placementLimit;
      const query = {
        account, runtime: body.runtime, scriptSha256: body.script_sha256,
        requirementsSha256: body.requirements_sha256 ?? null, inputSha256: body.input_sha256 ?? null,
      };
      // One round trip for the answer (holders aggregated per worker in SQL, inputs folded in); the
      // per-entry detail is a second query, only when asked for.
      const [fleet, rows, entryRows] = await Promise.all([
        app.fleet.get(account),
        app.repos.resolve.resolve(query),
        body.include_entries === true ? app.repos.resolve.entries(query) : undefined,
      ]);
      // Entries of dead workers (or of workers no longer serving the account) are not answers.
      const live = fleet.live;
      const image = rows.image.filter((h) => live.has(h.worker_id));
      const deps = rows.deps.filter((h) => live.has(h.worker_id));
      const liveEntries = entryRows?.filter((r) => live.has(r.worker_id));
      // Candidates: every holder, plus the least loaded live workers (the only others that can rank
      // within the limit, since without a holding they differ by load alone).
      const candidates = new Map<string, WorkerLoadInfo>();
      for (const h of image) candidates.set(h.worker_id, live.get(h.worker_id)!);
      for (const h of deps) candidates.set(h.worker_id, live.get(h.worker_id)!);
      for (const w of fleet.leastLoaded.slice(0, limit)) candidates.set(w.worker_id, w);
      const placement = rankPlacement({ liveWorkers: live.size, imageHolders: image, depsHolders: deps, candidates: [...candidates.values()], limit });
      const inputSha = body.input_sha256 ?? null;
      app.metrics.resolves.inc();
      return {
        image: answer(image, liveEntries?.filter((r) => r.kind === 'image')),
        deps: answer(deps, liveEntries?.filter((r) => r.kind === 'deps')),
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
