import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import {
  AccountQuery, CreateExecutionRequest, Execution, ListExecutionsQuery, ListExecutionsResponse, UpdateExecutionRequest,
} from '../../common/wire/control-api.js';
import { accountOf } from '../plugins/auth.js';
import { decodeCursor, encodeCursor } from '../repositories/executions.js';

const Params = Type.Object({ id: Type.String({ format: 'uuid' }) });

/**
 * Executions with their cache-hit flags and timings (issue 3 item 7). Created by a client or the
 * scheduler; the scheduler or a worker serving the account reports progress and results with PATCH.
 */
const executionRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const tags = ['executions'];

  app.post(
    '/executions',
    { config: { roles: ['client', 'scheduler'] }, schema: { tags, body: CreateExecutionRequest, response: { 201: Execution } } },
    async (request, reply) => {
      const account = accountOf(request);
      const execution = await app.repos.executions.create(account, request.body);
      return reply.code(201).send(execution);
    },
  );

  app.get(
    '/executions/:id',
    { config: { roles: ['client', 'scheduler', 'worker'] }, schema: { tags, params: Params, querystring: AccountQuery, response: { 200: Execution } } },
    async (request) => {
      const account = accountOf(request, request.query.account);
      const execution = await app.repos.executions.get(account, request.params.id);
      if (!execution) throw new RgridError('not_found', `no execution ${request.params.id}`);
      return execution;
    },
  );

  app.patch(
    '/executions/:id',
    { config: { roles: ['scheduler', 'worker'] }, schema: { tags, params: Params, querystring: AccountQuery, body: UpdateExecutionRequest, response: { 200: Execution } } },
    async (request) => {
      const account = accountOf(request, request.query.account);
      const execution = await app.repos.executions.update(account, request.params.id, request.body);
      if (!execution) throw new RgridError('not_found', `no execution ${request.params.id}`);
      return execution;
    },
  );

  app.get(
    '/executions',
    { config: { roles: ['client', 'scheduler'] }, schema: { tags, querystring: ListExecutionsQuery, response: { 200: ListExecutionsResponse } } },
    async (request) => {
      const account = accountOf(request);
      const limit = request.query.limit ?? 50;
      const after = request.query.cursor === undefined ? undefined : decodeCursor(request.query.cursor);
      if (request.query.cursor !== undefined && !after) throw new RgridError('bad_request', 'malformed cursor');
      const executions = await app.repos.executions.list(account, { limit, after, status: request.query.status });
      const last = executions[executions.length - 1];
      return { executions, next_cursor: executions.length === limit && last ? encodeCursor(last) : null };
    },
  );
  done();
};
export default executionRoutes;
