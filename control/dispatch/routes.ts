/**
 * Dispatch endpoints (docs/dispatch.md). Clients submit, wait and read logs for their own account; a
 * worker token claims, renews and completes only as its own worker and only for accounts it serves.
 * Every change of state goes through the execution service (app.dispatch.executions).
 */
import { isTerminal } from '../../common/executions.js';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { Execution, Uuid, WorkerId } from '../../common/wire/control-api.js';
import {
  ClaimParams, ClaimRequest, ClaimResponse, CompleteRequest, LogsResponse, RenewRequest, RenewResponse, SubmitExecutionRequest, WaitQuery, WaitResponse,
} from '../../common/wire/dispatch-api.js';
import { errors } from '../openapi.js';
import { accountOf, ownWorker } from '../plugins/auth.js';
import { logs } from './repository.js';

const IdParams = Type.Object({ id: Uuid });
const WorkerParams = Type.Object({ worker_id: WorkerId });

/**
 * Aborts when the connection closes before the answer was written (the client left). A long poll then
 * stops at once: the admission plugin has already given the token's concurrency slot back, so a loop
 * that kept querying until its deadline would be database work nobody accounts for or reads.
 */
export function clientLeft(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const check = (): void => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  // The connection may have closed already (while the token was looked up): 'close' will not come again.
  if (reply.raw.destroyed) check();
  else reply.raw.once('close', check);
  return controller.signal;
}

const dispatchRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const tags = ['dispatch'];
  const executions = app.dispatch.executions;

  app.post(
    '/executions/submit',
    { config: { roles: ['client', 'scheduler'] }, schema: { operationId: 'submitExecution', summary: 'Queues an execution for a worker of this account', tags, body: SubmitExecutionRequest, response: { 201: Execution } } },
    async (request, reply) => reply.code(201).send(await executions.submit(accountOf(request), request.body)),
  );

  app.get(
    '/executions/:id/wait',
    { config: { roles: ['client', 'scheduler'] }, schema: { operationId: 'waitExecution', summary: 'The execution once finished, or as it is when the wait ends', tags, params: IdParams, querystring: WaitQuery, response: { 200: WaitResponse, ...errors([404]) } } },
    async (request, reply) => {
      const account = accountOf(request);
      const deadline = Date.now() + Math.min(request.query.timeout_ms ?? app.config.claimWaitMaxMs, app.config.claimWaitMaxMs);
      const gone = clientLeft(reply);
      for (;;) {
        const execution = await app.repos.executions.get(account, request.params.id);
        if (!execution) throw new RgridError('not_found', `no execution ${request.params.id}`);
        const left = deadline - Date.now();
        if (isTerminal(execution.status) && request.query.logs === true) {
          // Logs are written with the result and never change after it: read them after the row.
          const row = await logs(app.db, account, execution.id);
          if (row) return { ...execution, logs: { execution_id: execution.id, status: row.status, stdout: row.stdout ?? '', stderr: row.stderr ?? '', truncated: row.truncated } };
        }
        if (isTerminal(execution.status) || left <= 0 || app.dispatch.closing) return execution;
        await app.dispatch.wait([`x:${execution.id}`], Math.min(left, 1000), gone);
        if (gone.aborted) {
          request.log.debug({ execution_id: execution.id }, 'client left; wait long poll ended');
          return execution;
        }
      }
    },
  );

  app.get(
    '/executions/:id/logs',
    { config: { roles: ['client', 'scheduler'] }, schema: { operationId: 'getExecutionLogs', tags, params: IdParams, response: { 200: LogsResponse, ...errors([404]) } } },
    async (request) => {
      const account = accountOf(request);
      const row = await logs(app.db, account, request.params.id);
      if (!row) throw new RgridError('not_found', `no execution ${request.params.id}`);
      return { execution_id: request.params.id, status: row.status, stdout: row.stdout ?? '', stderr: row.stderr ?? '', truncated: row.truncated };
    },
  );

  app.post(
    '/workers/:worker_id/claim',
    { config: { roles: ['worker'] }, schema: { operationId: 'claimExecutions', summary: 'Up to `max` executions for this worker (long poll)', tags, params: WorkerParams, body: ClaimRequest, response: { 200: ClaimResponse } } },
    async (request, reply) => {
      const worker = ownWorker(request, request.params.worker_id);
      await executions.assertRegistered(worker);
      const deadline = Date.now() + Math.min(request.body.wait_ms ?? app.config.claimWaitMaxMs, app.config.claimWaitMaxMs);
      const gone = clientLeft(reply);
      for (;;) {
        if (gone.aborted) {
          // Nothing is claimed for a client that cannot receive it: the claim would sit until its lease ran out.
          request.log.debug({ worker_id: worker.workerId }, 'client left; claim long poll ended');
          return { claims: [] };
        }
        const claims = await executions.claim(worker, request.body.max);
        if (claims.length > 0) {
          request.log.info({ worker_id: worker.workerId, executions: claims.map((c) => c.execution_id) }, 'claimed');
          return { claims };
        }
        const left = deadline - Date.now();
        if (left <= 0 || app.dispatch.closing) return { claims: [] };
        await app.dispatch.wait([`w:${worker.workerId}`, '*'], Math.min(left, 1000), gone);
        // A worker holding a long poll is alive: keep it placeable (one that left is not holding it).
        if (!gone.aborted) await executions.touch(worker);
      }
    },
  );

  app.post(
    '/workers/:worker_id/claims/:execution_id/renew',
    { config: { roles: ['worker'] }, schema: { operationId: 'renewClaim', tags, params: ClaimParams, body: RenewRequest, response: { 200: RenewResponse } } },
    async (request) => {
      const worker = ownWorker(request, request.params.worker_id);
      const expires = await executions.renew(worker, request.params.execution_id, request.body.claim_id);
      return { lease_expires_at: expires.toISOString() };
    },
  );

  app.post(
    '/workers/:worker_id/claims/:execution_id/complete',
    {
      config: { roles: ['worker'] },
      // Two capped logs plus the rest of the result.
      bodyLimit: 2 * app.config.logMaxBytes * 4 + 1024 * 1024,
      schema: { operationId: 'completeClaim', summary: "Reports a claimed execution's result, or hands it back", tags, params: ClaimParams, body: CompleteRequest, response: { 200: Execution, ...errors([404]) } },
    },
    async (request) => {
      const worker = ownWorker(request, request.params.worker_id);
      return executions.complete(worker, request.params.execution_id, request.body);
    },
  );
  done();
};

export default dispatchRoutes;
