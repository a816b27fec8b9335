/**
 * The control plane's Fastify app, built apart from the process entry: main.ts alone
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
import { clientErrorHandler, frameworkErrors, installErrorHandling } from './plugins/errors.js';
import admissionPlugin, { installBodyIdleTimeout } from './plugins/admission.js';
import { LONGEST_PATH_ID } from '../common/names.js';
import { declareV1Errors, swaggerOptions } from './openapi.js';
import healthRoutes from './routes/health.js';
import adminRoutes from './routes/admin.js';
import workerRoutes from './routes/workers.js';
import placementPlugin from './placement/plugin.js';
import resolveRoutes from './placement/route.js';
import { blobRoutes, manifestRoutes } from './routes/inputs.js';
import executionRoutes from './routes/executions.js';
// Dispatch: queues, claims, leases.
import dispatchPlugin from './dispatch/plugin.js';
import dispatchRoutes from './dispatch/routes.js';
// Images shared through an OCI registry: build leases, recorded pushes.
import registryRoutes from './registry/routes.js';

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
    // Admission control (docs/operations.md): a request must arrive whole within requestTimeout, a
    // connection silent for connectionTimeout is closed (long polls answer well before it: config.ts
    // checks), an idle keep-alive connection is closed after keepAliveTimeout.
    requestTimeout: config.requestTimeoutMs,
    connectionTimeout: config.connectionTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // The hashes and ids in URLs are exact; no case or trailing-slash games. No id in a path is longer
    // than LONGEST_PATH_ID: a longer parameter is refused by the router (414) before any route runs.
    routerOptions: { caseSensitive: true, ignoreTrailingSlash: false, maxParamLength: LONGEST_PATH_ID },
    frameworkErrors,
    clientErrorHandler,
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.server.headersTimeout = config.headersTimeoutMs;

  app.decorate('config', config);
  installErrorHandling(app);
  installBodyIdleTimeout(app, config.bodyIdleTimeoutMs);
  // Before the document's own hook (it copies HEAD routes): every /v1 operation declares the errors that
  // auth, admission and parsing can answer.
  app.addHook('onRoute', declareV1Errors);
  // The OpenAPI 3.1 document of every route (control/openapi.ts), served below at /docs/json.
  await app.register(swagger, swaggerOptions());
  await app.register(databasePlugin, {
    databaseUrl: config.databaseUrl ?? '',
    poolMax: config.poolMax,
    tokenCacheMs: config.tokenCacheMs,
    ...(deps.pool ? { pool: deps.pool } : {}),
  });
  await app.register(storagePlugin, { dataDir: config.dataDir, ...(deps.storage ? { storage: deps.storage } : {}) });
  await app.register(metricsPlugin, { workerDeadAfterMs: config.workerDeadAfterMs });
  await app.register(cleanupJob);
  await app.register(placementPlugin);
  await app.register(dispatchPlugin);

  await app.register(healthRoutes);
  app.get(
    '/docs/json',
    {
      schema: {
        operationId: 'getOpenApiDocument',
        tags: ['health'],
        summary: 'This OpenAPI 3.1 document',
        security: [],
        response: { 200: { description: 'The OpenAPI document', type: 'object', additionalProperties: true } },
      },
    },
    () => app.swagger() as unknown as Record<string, unknown>,
  );

  await app.register(
    async (v1) => {
      await v1.register(authPlugin);
      await v1.register(admissionPlugin);
      await v1.register(adminRoutes);
      await v1.register(workerRoutes);
      await v1.register(resolveRoutes);
      await v1.register(manifestRoutes);
      await v1.register(executionRoutes);
      await v1.register(dispatchRoutes);
      await v1.register(registryRoutes);
      // Last and in its own context: it swaps the content-type parsers for raw byte streams.
      await v1.register(blobRoutes);
    },
    { prefix: '/v1' },
  );
  return app;
}
