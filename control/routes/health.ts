import type { FastifyPluginCallback } from 'fastify';
import Type from 'typebox';

/** Outside the authenticated context: probes and scrapers carry no token. */
const healthRoutes: FastifyPluginCallback = (app, _opts, done) => {
  app.get('/healthz', { schema: { hide: true } }, () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { schema: { response: { 200: Type.Object({ status: Type.String() }), 503: Type.Object({ status: Type.String(), reason: Type.String() }) } } },
    async (_request, reply) => {
      try {
        await app.db.query('SELECT 1');
        return { status: 'ready' };
      } catch (err) {
        return reply.code(503).send({ status: 'unavailable', reason: `database unreachable: ${(err as Error).message}` });
      }
    },
  );

  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    const text = await app.metrics.registry.metrics();
    return reply.type(app.metrics.registry.contentType).send(text);
  });
  done();
};
export default healthRoutes;
