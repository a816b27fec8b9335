import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import type { ImageCache } from '../builder/image-cache.js';
import type { Fleet } from '../fleet.js';
import type { AgentIndex } from '../index/index.js';

/**
 * Socket API routes of the fleet side: metrics, sync, prune, verify, reindex, status, config reload. The CLI
 * commands of the same names call these (agent/cli/fleet-commands.ts).
 */
export interface FleetRouteDeps {
  fleet: Fleet;
  index: AgentIndex;
  cache: ImageCache;
  version: string;
  startedAt: number;
}

const PruneBody = Type.Object({ dry_run: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const VerifyBody = Type.Object({ repair: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

export function registerFleetRoutes(app: FastifyInstance, deps: FleetRouteDeps): void {
  const { fleet, index } = deps;

  app.get('/metrics', async (_request, reply) => reply.type(fleet.metrics.contentType).send(await fleet.metrics.text()));

  app.get('/v1/sync', () => fleet.sync.status());
  app.post('/v1/sync/flush', () => fleet.sync.flush());

  app.post('/v1/prune', { schema: { body: Type.Optional(PruneBody) } }, async (request) => {
    const body = (request.body ?? {}) as { dry_run?: boolean };
    return (await fleet.pruner.prune({ dryRun: body.dry_run === true })).items;
  });

  app.post('/v1/verify', { schema: { body: Type.Optional(VerifyBody) } }, async (request) => {
    const body = (request.body ?? {}) as { repair?: boolean };
    return fleet.reconciler.verify({ repair: body.repair === true });
  });

  app.post('/v1/reindex', async () => {
    const report = await fleet.reconciler.verify({ repair: true });
    const pick = (types: string[]) => report.drift.filter((d) => types.includes(d.type) && d.repaired).map(({ type: _t, repaired: _r, ...rest }) => rest);
    return {
      entries: report.entries,
      images: report.images,
      added: pick(['untracked_image']),
      updated: pick(['mismatched_image_id']),
      removed: pick(['missing_image']),
      stale_images_removed: pick(['stale_image']),
      unrepaired: report.drift.filter((d) => !d.repaired),
    };
  });

  app.post('/v1/config/reload', () => fleet.config.reload());

  app.get('/v1/status', () => {
    const c = fleet.store.get();
    const entries = index.list();
    const count = (kind: string): number => entries.filter((e) => e.kind === kind).length;
    const builds = deps.cache.stats();
    const sync = fleet.sync.status();
    const warm = fleet.warmer.status();
    const lastPrune = fleet.pruner.last();
    return {
      version: deps.version,
      agent_id: index.agentId,
      started_at: new Date(deps.startedAt).toISOString(),
      uptime_s: Math.round((Date.now() - deps.startedAt) / 1000),
      config_file: fleet.store.file ?? null,
      runtimes: c.runtimes,
      default_runtime: c.default_runtime ?? null,
      entries: entries.length,
      entries_by_kind: { image: count('image'), deps: count('deps') },
      bytes: entries.reduce((n, e) => n + e.size_bytes, 0),
      queue_depth: builds.queued,
      builds,
      sync_state: sync.state,
      sync,
      warm,
      prune: {
        ttl_s: c.prune_ttl_s,
        min_age_s: c.prune_min_age_s,
        interval_s: c.prune_interval_s,
        disk_high_percent: c.disk_high_percent,
        disk_low_percent: c.disk_low_percent,
        last_run_at: lastPrune ? new Date(lastPrune.at).toISOString() : null,
        last_removed: lastPrune?.items.length ?? null,
        last_disk: lastPrune?.disk ?? null,
      },
      build_concurrency: c.build_concurrency,
    };
  });
}
