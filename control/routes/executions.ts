import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { isUuid } from '../../common/names.js';
import { AccountQuery, CreateExecutionRequest, Execution, ListExecutionsQuery, ListExecutionsResponse, Uuid } from '../../common/wire/control-api.js';
import { errors } from '../openapi.js';
import { accountOf } from '../plugins/auth.js';
import { decodeCursor, encodeCursor } from '../repositories/executions.js';

const Params = Type.Object({ id: Uuid });

/**
 * Executions with their cache-hit flags and timings: read by id or listed per account. Their state
 * changes only through dispatch (control/dispatch/execution-service.ts): there is no PATCH, since an
 * update of the status from outside claim and complete could revive a finished execution (running with
 * no lease: nothing would ever end it) or run it again. POST records an execution run outside dispatch,
 * finished only.
 */
const executionRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const tags = ['executions'];

  app.post(
    '/executions',
    { config: { roles: ['client', 'scheduler'] }, schema: { operationId: 'recordExecution', summary: 'Records a finished execution run outside dispatch', tags, body: CreateExecutionRequest, response: { 201: Execution } } },
    async (request, reply) => reply.code(201).send(await app.dispatch.executions.record(accountOf(request), request.body)),
  );

  app.get(
    '/executions/:id',
    { config: { roles: ['client', 'scheduler', 'worker'] }, schema: { operationId: 'getExecution', tags, params: Params, querystring: AccountQuery, response: { 200: Execution, ...errors([404]) } } },
    async (request) => {
      const account = accountOf(request, request.query.account);
      const execution = await app.repos.executions.get(account, request.params.id);
      if (!execution) throw new RgridError('not_found', `no execution ${request.params.id}`);
      return execution;
    },
  );

  app.get(
    '/executions',
    { config: { roles: ['client', 'scheduler'] }, schema: { operationId: 'listExecutions', summary: "This account's executions, newest first", tags, querystring: ListExecutionsQuery, response: { 200: ListExecutionsResponse } } },
    async (request) => {
      const account = accountOf(request);
      const limit = request.query.limit ?? 50;
      const after = request.query.cursor === undefined ? undefined : decodeCursor(request.query.cursor);
      // The cursor carries an execution id: held to the contract here like any id in a path or query.
      if (request.query.cursor !== undefined && (!after || !isUuid(after[1]))) throw new RgridError('bad_request', 'malformed cursor');
      const executions = await app.repos.executions.list(account, { limit, after, status: request.query.status });
      const last = executions[executions.length - 1];
      return { executions, next_cursor: executions.length === limit && last ? encodeCursor(last) : null };
    },
  );
  done();
};
export default executionRoutes;
