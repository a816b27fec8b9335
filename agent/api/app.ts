import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';
import type { ImageCache } from '../builder/image-cache.js';
import type { AgentIndex } from '../index/index.js';
import type { LeaseTable } from '../index/leases.js';
import { entryOrigin, type IndexEntry } from '../index/types.js';
import type { Runner } from '../runner/run.js';
import { installErrorHandler } from './errors.js';
import { registerFleetRoutes, type FleetRouteDeps } from './fleet-routes.js';
import { registerInspectRoute } from './inspect-route.js';
import { respondNdjson } from './ndjson.js';
import { EnsureBody, EntriesQuery, RunBody, decodeBase64 } from './schemas.js';
import type { Lock } from '../../common/lock.js';

/**
 * The agent's socket API, apart from the process entry: the daemon listens, tests can
 * `inject()`. Routes under /v1; long operations stream NDJSON (see ndjson.ts).
 */
export type DaemonPhase = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

export interface AgentAppDeps {
  config: AgentConfig;
  index: AgentIndex;
  leases: LeaseTable;
  cache: ImageCache;
  runner: Runner;
  logger: Logger;
  phase: () => DaemonPhase;
  version: string;
  startedAt: number;
  /** For `inspect` (GET /v1/entries/:key); absent in unit tests of the core. */
  docker?: Docker;
  /** The fleet routes (metrics, sync, prune, verify, reindex, status); absent in unit tests of the core. */
  fleet?: Omit<FleetRouteDeps, 'index' | 'cache' | 'version' | 'startedAt'>;
  /** Locks by digest, for `inspect` (the resolution service). */
  lockBySha?: (lockSha256: string) => Lock | undefined;
}

/** The `ls` shape (a stable contract, docs/agent.md) plus the keys an operator needs to find an entry's origin. */
export function renderEntry(e: IndexEntry): Record<string, unknown> {
  return {
    kind: e.kind,
    key: e.key,
    image_id: e.image_id,
    runtime: e.runtime,
    account: e.account,
    created_at: new Date(e.created_at).toISOString(),
    last_used_at: new Date(e.last_used_at).toISOString(),
    use_count: e.use_count,
    size_bytes: e.size_bytes,
    image_tag: e.image_tag,
    deps_key: e.deps_key,
    script_sha256: e.script_sha256,
    requirements_sha256: e.requirements_sha256,
    lock_sha256: e.lock_sha256 ?? null,
    base_image_id: e.base_image_id,
    origin: entryOrigin(e),
    registry_digest: e.registry_digest ?? null,
  };
}

/** Never more verbose than the agent's level; at info, Fastify's own request lines are left out. */
function httpLogLevel(logger: Logger): string {
  return logger.isLevelEnabled('debug') || !logger.isLevelEnabled('warn') ? logger.level : 'warn';
}

export function buildAgentApp(deps: AgentAppDeps): FastifyInstance {
  // Fastify's per-request lines (info) would dominate the hit path; they show only at debug/trace.
  // Typed as Fastify's logger so the app keeps Fastify's default logger type.
  const httpLogger: FastifyBaseLogger = deps.logger.child({ component: 'http' }, { level: httpLogLevel(deps.logger) });
  const app = Fastify({
    loggerInstance: httpLogger,
    bodyLimit: deps.config.max_request_mb * 1024 * 1024,
  }).withTypeProvider<TypeBoxTypeProvider>();
  installErrorHandler(app);

  // While draining, only health answers: new work would be abandoned at the deadline anyway.
  app.addHook('onRequest', (request, _reply, done) => {
    if (deps.phase() !== 'running' && !request.url.startsWith('/v1/health') && !request.url.startsWith('/metrics')) {
      done(new RgridError('shutting_down', `the agent is ${deps.phase()}; not accepting new requests`));
    } else done();
  });

  app.get('/v1/health', () => ({
    status: deps.phase() === 'running' ? 'ok' : deps.phase(),
    phase: deps.phase(),
    version: deps.version,
    agent_id: deps.index.agentId,
    uptime_ms: Date.now() - deps.startedAt,
    runtimes: deps.config.runtimes,
    builds: deps.cache.stats(),
    runs_active: deps.runner.active,
    runs: deps.runner.stats(),
    leases: deps.leases.list().map((l) => ({ ...l.ref, holders: l.holders, since: new Date(l.since).toISOString() })),
    entries: { image: deps.index.list({ kind: 'image' }).length, deps: deps.index.list({ kind: 'deps' }).length },
  }));

  app.get('/v1/entries', { schema: { querystring: EntriesQuery } }, async (request) => {
    // A hit answers before its touch commits (agent/index/index.ts): whoever heard "hit" and then lists
    // sees that use counted.
    await deps.index.settled();
    return deps.index.list(request.query).map(renderEntry);
  });
  if (deps.docker) {
    registerInspectRoute(app, {
      index: deps.index, leases: deps.leases, docker: deps.docker, wheelhouseDir: deps.config.pip_find_links,
      ...(deps.lockBySha ? { lockBySha: deps.lockBySha } : {}),
    });
  }

  app.post('/v1/ensure', { schema: { body: EnsureBody } }, async (request, reply) => {
    const body = request.body;
    const prepared = await deps.cache.prepare({
      account: body.account,
      runtime: body.runtime,
      script: decodeBase64(body.script, 'script'),
      requirements: body.requirements ? decodeBase64(body.requirements, 'requirements') : null,
    });
    return respondNdjson(request, reply, async (op) => (await deps.cache.ensure(prepared, { onEvent: (e) => op.emit({ ...e }) })).result);
  });

  app.post('/v1/run', { schema: { body: RunBody } }, async (request, reply) => {
    const body = request.body;
    const prepared = await deps.runner.prepare({
      account: body.account,
      runtime: body.runtime,
      script: decodeBase64(body.script, 'script'),
      requirements: body.requirements ? decodeBase64(body.requirements, 'requirements') : null,
      inputs: (body.inputs ?? []).map((i) => ({ name: i.name, data: decodeBase64(i.data, `input ${i.name}`) })),
      timeout_s: body.timeout_s,
      memory_mb: body.memory_mb,
      cpus: body.cpus,
      collect_outputs: body.collect_outputs,
    });
    return respondNdjson(request, reply, (op) => deps.runner.run(prepared, { onEvent: (e) => op.emit({ ...e }), signal: op.signal }));
  });

  if (deps.fleet) registerFleetRoutes(app, { ...deps.fleet, index: deps.index, cache: deps.cache, version: deps.version, startedAt: deps.startedAt });

  return app;
}
