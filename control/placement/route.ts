/**
 * POST /v1/resolve: what is cached where for (account from the token, runtime, script, requirements,
 * inputs), what the registry has, and a ranked placement over the live workers serving the account.
 * The work is the placement service's (control/placement/index.ts), shared with dispatch.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import { ResolveRequest, ResolveResponse } from '../../common/wire/control-api.js';
import { accountOf } from '../plugins/auth.js';

const resolveRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  app.post(
    '/resolve',
    { config: { roles: ['scheduler'] }, schema: { operationId: 'resolve', summary: 'What is cached where, and a ranked placement', tags: ['scheduler'], body: ResolveRequest, response: { 200: ResolveResponse } } },
    async (request) => {
      const answer = await app.placement.resolve(accountOf(request), request.body);
      app.metrics.resolves.inc();
      return answer;
    },
  );
  done();
};
export default resolveRoutes;
