/**
 * Prometheus metrics. Counters are per process (Prometheus sums replicas); the cache-hit figures and
 * fleet gauges are read from PostgreSQL at scrape time, so every replica reports the same fleet-wide
 * values whichever one recorded the execution.
 */
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../../common/process-metrics.js';

/** Window of the hit-rate gauges. */
export const HIT_WINDOW_MS = 24 * 3_600_000;

export interface ControlMetrics {
  registry: Registry;
  syncOps: Counter<'result'>;
  snapshots: Counter;
  resolves: Counter;
  blobBytesUploaded: Counter;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
  /** Images in the registry (docs/architecture.md). */
  buildLeases: Counter<'how'>;
  buildWaits: Counter<'result'>;
  buildFailures: Counter;
  registryManifestsDeleted: Counter;
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ControlMetrics;
  }
}

export default fp<{ workerDeadAfterMs: number }>(
  (app, opts, done) => {
    const registry = new Registry();
    collectProcessMetrics(registry);
    const metrics: ControlMetrics = {
      registry,
      syncOps: new Counter({ name: 'rgrid_control_sync_ops_total', help: 'Sync ops received, by result (applied, duplicate)', labelNames: ['result'], registers: [registry] }),
      snapshots: new Counter({ name: 'rgrid_control_sync_snapshots_total', help: 'Full snapshots applied', registers: [registry] }),
      resolves: new Counter({ name: 'rgrid_control_resolve_total', help: 'Resolve requests answered', registers: [registry] }),
      blobBytesUploaded: new Counter({ name: 'rgrid_control_blob_upload_bytes_total', help: 'Verified blob bytes received', registers: [registry] }),
      buildLeases: new Counter({ name: 'rgrid_control_build_leases_total', help: 'Build leases handed out, by how (granted: nobody held it; taken_over: its holder stopped renewing)', labelNames: ['how'], registers: [registry] }),
      buildWaits: new Counter({ name: 'rgrid_control_build_waits_total', help: 'Build acquires that found another worker building and waited, by the state they answered at the end', labelNames: ['result'], registers: [registry] }),
      buildFailures: new Counter({ name: 'rgrid_control_build_failures_total', help: 'Failed builds recorded (answered to every worker asking within the failure window)', registers: [registry] }),
      registryManifestsDeleted: new Counter({ name: 'rgrid_control_registry_manifests_deleted_total', help: 'Manifests of unused images deleted from the registry by cleanup (404 counts as deleted)', registers: [registry] }),
      httpDuration: new Histogram({
        name: 'rgrid_control_http_request_duration_seconds',
        help: 'HTTP request duration by route',
        labelNames: ['method', 'route', 'status'],
        buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
        registers: [registry],
      }),
    };
    const db = (): typeof app.db => app.db;

    // prom-client collects all metrics concurrently; the three hit-rate gauges share one query per scrape.
    let hitQuery: ReturnType<typeof app.repos.executions.hitCounts> | undefined;
    const hitCounts = () => {
      if (!hitQuery) {
        hitQuery = app.repos.executions.hitCounts(HIT_WINDOW_MS);
        const clear = (): void => void setTimeout(() => (hitQuery = undefined), 250).unref();
        hitQuery.then(clear, clear);
      }
      return hitQuery.catch(() => undefined);
    };
    const window = `${HIT_WINDOW_MS / 3_600_000}h`;
    new Gauge({
      name: 'rgrid_control_cache_hit_ratio',
      help: `hits / (hits + misses) over executions of the last ${window}, per cache kind (script, dependency, input)`,
      labelNames: ['kind'],
      registers: [registry],
      async collect() {
        for (const [kind, c] of Object.entries((await hitCounts()) ?? {})) {
          if (c.hits + c.misses > 0) this.set({ kind }, c.hits / (c.hits + c.misses));
        }
      },
    });
    for (const [name, field] of [['rgrid_control_cache_hits', 'hits'], ['rgrid_control_cache_misses', 'misses']] as const) {
      new Gauge({
        name,
        help: `Executions with a cache ${field === 'hits' ? 'hit' : 'miss'} in the last ${window}, per cache kind`,
        labelNames: ['kind'],
        registers: [registry],
        async collect() {
          for (const [kind, c] of Object.entries((await hitCounts()) ?? {})) this.set({ kind }, c[field]);
        },
      });
    }
    new Gauge({
      name: 'rgrid_control_workers',
      help: 'Registered workers by state (live: heard from within the dead-after window and not leaving; leaving: its agent is stopping and drains; dead: silent for the dead-after window)',
      labelNames: ['state'],
      registers: [registry],
      async collect() {
        const res = await db()
          .query<{ live: number; leaving: number; dead: number }>(
            `SELECT count(*) FILTER (WHERE last_seen_at > now() - make_interval(secs => $1::float8 / 1000) AND leaving_at IS NULL)::int AS live,
               count(*) FILTER (WHERE last_seen_at > now() - make_interval(secs => $1::float8 / 1000) AND leaving_at IS NOT NULL)::int AS leaving,
               count(*) FILTER (WHERE last_seen_at <= now() - make_interval(secs => $1::float8 / 1000))::int AS dead FROM workers`,
            [opts.workerDeadAfterMs],
          )
          .catch(() => undefined);
        const row = res?.rows[0];
        if (!row) return;
        this.set({ state: 'live' }, row.live);
        this.set({ state: 'leaving' }, row.leaving);
        this.set({ state: 'dead' }, row.dead);
      },
    });
    new Gauge({
      name: 'rgrid_control_cache_entries',
      help: 'Cache entries known fleet-wide, per kind (image, deps)',
      labelNames: ['kind'],
      registers: [registry],
      async collect() {
        const res = await db().query<{ kind: string; n: number }>('SELECT kind, count(*)::int AS n FROM cache_entries GROUP BY kind').catch(() => undefined);
        if (!res) return;
        this.reset();
        for (const r of res.rows) this.set({ kind: r.kind }, r.n);
      },
    });
    new Gauge({
      name: 'rgrid_control_blob_bytes',
      help: 'Bytes of input blobs per account visibility row (a blob shared by two accounts counts twice)',
      registers: [registry],
      async collect() {
        const res = await db().query<{ n: number }>('SELECT coalesce(sum(size_bytes), 0)::bigint AS n FROM blobs').catch(() => undefined);
        if (res?.rows[0]) this.set(res.rows[0].n);
      },
    });

    app.decorate('metrics', metrics);
    app.addHook('onResponse', async (request, reply) => {
      metrics.httpDuration.observe(
        { method: request.method, route: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) },
        reply.elapsedTime / 1000,
      );
    });
    done();
  },
  { name: 'rgrid-metrics', dependencies: ['rgrid-database'] },
);
