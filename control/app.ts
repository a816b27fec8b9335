/**
 * The control plane's Fastify app (design.md §7), built apart from the process entry: main.ts alone
 * listens and handles signals; tests build it and use inject(). Health, readiness, metrics and the
 * OpenAPI document sit at the root; everything under /v1 lives in an encapsulated context behind auth.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ControlConfig } from './config.js';
import type { Db } from './db/pool.js';
import type { BlobStorage } from './storage/blob-storage.js';
import databasePlugin from './plugins/database.js';
import storagePlugin from './plugins/storage.js';
import metricsPlugin from './plugins/metrics.js';
import authPlugin from './plugins/auth.js';
import cleanupJob from './plugins/cleanup-job.js';
import { installErrorHandling } from './plugins/errors.js';
import healthRoutes from './routes/health.js';
import adminRoutes from './routes/admin.js';
import workerRoutes from './routes/workers.js';
import resolveRoutes from './routes/resolve.js';
import { blobRoutes, manifestRoutes } from './routes/inputs.js';
import executionRoutes from './routes/executions.js';
// issue 5: dispatch (queues, claims, leases)
import dispatchPlugin from './dispatch/plugin.js';
import dispatchRoutes from './dispatch/routes.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: ControlConfig;
  }
}

export interface ControlDeps {
  /** Use this pool instead of opening one from config.databaseUrl (the caller closes it). */
  pool?: Db;
  storage?: BlobStorage;
  /** A pino logger, or false for none (tests). Default: pino at config.logLevel. */
  logger?: FastifyBaseLogger | false;
}

export async function buildControlApp(config: ControlConfig, deps: ControlDeps = {}): Promise<FastifyInstance> {
  if (!config.databaseUrl && !deps.pool) throw new Error('buildControlApp needs config.databaseUrl (the CLI starts the embedded database first)');
  const app = Fastify({
    ...(deps.logger === undefined ? { logger: { level: config.logLevel } } : deps.logger === false ? { logger: false } : { loggerInstance: deps.logger }),
    bodyLimit: config.bodyLimitBytes,
    // The hashes and ids in URLs are exact; no case or trailing-slash games.
    routerOptions: { caseSensitive: true, ignoreTrailingSlash: false },
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorate('config', config);
  installErrorHandling(app);
  await app.register(swagger, {
    openapi: {
      info: { title: 'rgrid control plane', version: '1', description: 'Fleet-wide cache index, inputs and executions (docs/control.md)' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(databasePlugin, {
    databaseUrl: config.databaseUrl ?? '',
    poolMax: config.poolMax,
    fleetCacheMs: config.fleetCacheMs,
    tokenCacheMs: config.tokenCacheMs,
    workerDeadAfterMs: config.workerDeadAfterMs,
    ...(deps.pool ? { pool: deps.pool } : {}),
  });
  await app.register(storagePlugin, { dataDir: config.dataDir, ...(deps.storage ? { storage: deps.storage } : {}) });
  await app.register(metricsPlugin, { workerDeadAfterMs: config.workerDeadAfterMs });
  await app.register(cleanupJob);
  await app.register(dispatchPlugin);

  await app.register(healthRoutes);
  app.get('/docs/json', { schema: { hide: true } }, () => app.swagger());

  await app.register(
    async (v1) => {
      await v1.register(authPlugin);
      await v1.register(adminRoutes);
      await v1.register(workerRoutes);
      await v1.register(resolveRoutes);
      await v1.register(manifestRoutes);
      await v1.register(executionRoutes);
      await v1.register(dispatchRoutes);
      // Last and in its own context: it swaps the content-type parsers for raw byte streams.
      await v1.register(blobRoutes);
    },
    { prefix: '/v1' },
  );
  return app;
}
