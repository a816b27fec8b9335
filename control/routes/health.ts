import type { FastifyPluginCallback } from 'fastify';
import Type from 'typebox';
import type { Db } from '../db/pool.js';

/** A health probe must answer even when the database hangs rather than refuses. */
const PROBE_TIMEOUT_MS = 2000;

/** Why the database cannot be used now, or undefined when a trivial query succeeds in time. */
async function databaseProblem(db: Db): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${PROBE_TIMEOUT_MS} ms`), PROBE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([
      db.query('SELECT 1').then(
        () => undefined,
        // The code only (ECONNREFUSED, 57P01...): a driver message could carry the server's address.
        (err: unknown) => `query failed (${(err as { code?: string }).code ?? 'connection error'})`,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const Status = Type.Object({ status: Type.String() });
const Unavailable = Type.Object({ status: Type.String(), reason: Type.String() });
/** Probes and scrapers carry no token: these operations override the document's bearer security. */
const PUBLIC = { tags: ['health'], security: [] };

/**
 * Outside the authenticated context: probes and scrapers carry no token. Both probes check the
 * database: the control plane does nothing useful without it, and with the embedded server a dead
 * database is something this process repairs (it restarts it), so the probes show the outage and the
 * recovery. /readyz also goes unavailable while the process drains.
 */
const healthRoutes: FastifyPluginCallback = (app, _opts, done) => {
  let draining = false;
  app.addHook('preClose', (hookDone) => {
    draining = true;
    hookDone();
  });

  app.get('/healthz', {
    schema: {
      ...PUBLIC,
      operationId: 'getHealth',
      summary: 'Liveness: the process answers and its database answers within 2 s',
      response: { 200: { ...Status, description: 'Alive' }, 503: { ...Unavailable, description: 'The database does not answer (Retry-After)' } },
    },
  }, async (_request, reply) => {
    const problem = await databaseProblem(app.db);
    if (problem) return reply.code(503).header('retry-after', '2').send({ status: 'unavailable', reason: `database unreachable: ${problem}` });
    return { status: 'ok' };
  });

  app.get('/readyz', {
    schema: {
      ...PUBLIC,
      operationId: 'getReadiness',
      summary: 'Readiness: the database answers and the process is not draining',
      response: { 200: { ...Status, description: 'Ready' }, 503: { ...Unavailable, description: 'The database does not answer, or the process drains' } },
    },
  }, async (_request, reply) => {
    if (draining) return reply.code(503).send({ status: 'unavailable', reason: 'shutting down' });
    const problem = await databaseProblem(app.db);
    if (problem) return reply.code(503).send({ status: 'unavailable', reason: `database unreachable: ${problem}` });
    return { status: 'ready' };
  });

  app.get('/metrics', {
    schema: {
      ...PUBLIC,
      operationId: 'getMetrics',
      summary: 'Prometheus metrics (text exposition format 0.0.4)',
      response: { 200: { description: 'The scrape', content: { 'text/plain': { schema: { type: 'string' } } } } },
    },
  }, async (_request, reply) => {
    const text = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(text);
  });
  done();
};
export default healthRoutes;
