/**
 * Dispatch endpoints (issue 5, docs/dispatch.md). Clients submit, wait and read logs for their own
 * account; a worker token claims, renews and completes only as its own worker and only for accounts it
 * serves (the claim query filters on them).
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { Execution, WorkerId } from '../../common/wire/control-api.js';
import {
  ClaimParams, ClaimRequest, ClaimResponse, CompleteRequest, LogsResponse, RenewRequest, RenewResponse, SubmitExecutionRequest, WaitQuery, WaitResponse,
} from '../../common/wire/dispatch-api.js';
import { withTransaction } from '../db/pool.js';
import { accountOf, ownWorker } from '../plugins/auth.js';
import { chooseWorker } from './choose-worker.js';
import { notify } from './plugin.js';
import { claim, finish, insertSubmitted, lockClaim, logs, renew, touchWorker } from './repository.js';

const IdParams = Type.Object({ id: Type.String({ format: 'uuid' }) });
const WorkerParams = Type.Object({ worker_id: WorkerId });
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
/** Placement of one account's submissions is serialized, so a burst sees each other's assignments. */
const PLACEMENT_LOCK_NAMESPACE = 0x5247_4450; // "RGDP"

function claimLost(executionId: string): RgridError {
  return new RgridError('conflict', `the claim on execution ${executionId} is no longer held (lease expired or re-queued)`, { claim_lost: true });
}

const dispatchRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const tags = ['dispatch'];

  app.post(
    '/executions/submit',
    { config: { roles: ['client', 'scheduler'] }, schema: { tags, body: SubmitExecutionRequest, response: { 201: Execution } } },
    async (request, reply) => {
      const account = accountOf(request);
      const body = request.body;
      if ((body.requirements_sha256 ?? null) !== null && !body.requirements_blob_sha256) {
        throw new RgridError('bad_request', 'requirements_sha256 needs requirements_blob_sha256 (the uploaded requirements file)');
      }
      // The worker fetches these: refuse now rather than fail on the worker later.
      const needed = [body.script_sha256, ...(body.requirements_blob_sha256 ? [body.requirements_blob_sha256] : [])];
      const missing = await app.repos.inputs.missingBlobs(account, needed);
      if (missing.length > 0) throw new RgridError('bad_request', `blobs not uploaded: ${missing.join(', ')}`, { missing_blobs: missing });
      if (body.input_sha256) {
        const files = await app.repos.inputs.getManifest(account, body.input_sha256);
        if (!files) throw new RgridError('bad_request', `no input manifest ${body.input_sha256}; record it with POST /v1/manifests`);
        const absent = await app.repos.inputs.missingBlobs(account, files.map((f) => f.sha256));
        if (absent.length > 0) throw new RgridError('bad_request', `input blobs not uploaded: ${absent.join(', ')}`, { missing_blobs: absent });
      }
      const execution = await withTransaction(app.db, async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [PLACEMENT_LOCK_NAMESPACE, account]);
        const workerId = await chooseWorker(app.db, tx, {
          account, runtime: body.runtime, scriptSha256: body.script_sha256, requirementsSha256: body.requirements_sha256 ?? null,
        }, app.config);
        const created = await insertSubmitted(tx, account, body, workerId, app.config.maxAttempts);
        await notify(tx, [workerId ? `w:${workerId}` : '*']);
        return created;
      });
      return reply.code(201).send(execution);
    },
  );

  app.get(
    '/executions/:id/wait',
    { config: { roles: ['client', 'scheduler'] }, schema: { tags, params: IdParams, querystring: WaitQuery, response: { 200: WaitResponse } } },
    async (request) => {
      const account = accountOf(request);
      const deadline = Date.now() + Math.min(request.query.timeout_ms ?? app.config.claimWaitMaxMs, app.config.claimWaitMaxMs);
      for (;;) {
        const execution = await app.repos.executions.get(account, request.params.id);
        if (!execution) throw new RgridError('not_found', `no execution ${request.params.id}`);
        const left = deadline - Date.now();
        if (TERMINAL.has(execution.status) && request.query.logs === true) {
          // Logs are written with the result and never change after it: read them after the row.
          const row = await logs(app.db, account, execution.id);
          if (row) return { ...execution, logs: { execution_id: execution.id, status: row.status, stdout: row.stdout ?? '', stderr: row.stderr ?? '', truncated: row.truncated } };
        }
        if (TERMINAL.has(execution.status) || left <= 0 || app.dispatch.closing) return execution;
        await app.dispatch.wait([`x:${execution.id}`], Math.min(left, 1000));
      }
    },
  );

  app.get(
    '/executions/:id/logs',
    { config: { roles: ['client', 'scheduler'] }, schema: { tags, params: IdParams, response: { 200: LogsResponse } } },
    async (request) => {
      const account = accountOf(request);
      const row = await logs(app.db, account, request.params.id);
      if (!row) throw new RgridError('not_found', `no execution ${request.params.id}`);
      return { execution_id: request.params.id, status: row.status, stdout: row.stdout ?? '', stderr: row.stderr ?? '', truncated: row.truncated };
    },
  );

  app.post(
    '/workers/:worker_id/claim',
    { config: { roles: ['worker'] }, schema: { tags, params: WorkerParams, body: ClaimRequest, response: { 200: ClaimResponse } } },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      if (!(await touchWorker(app.db, auth.workerId))) {
        throw new RgridError('conflict', `worker ${auth.workerId} is not registered; register first`, { resync_required: true });
      }
      const lease = app.config.claimLeaseMs;
      const deadline = Date.now() + Math.min(request.body.wait_ms ?? app.config.claimWaitMaxMs, app.config.claimWaitMaxMs);
      for (;;) {
        const rows = await claim(app.db, auth.workerId, auth.accounts, request.body.max, lease);
        if (rows.length > 0) {
          const claims = await Promise.all(rows.map(async (r) => ({
            ...r,
            inputs: r.input_sha256 ? ((await app.repos.inputs.getManifest(r.account, r.input_sha256)) ?? []) : [],
            lease_ms: lease,
            lease_expires_at: r.lease_expires_at.toISOString(),
            queue_ms: Number(r.queue_ms ?? 0),
          })));
          request.log.info({ worker_id: auth.workerId, executions: claims.map((c) => c.execution_id) }, 'claimed');
          return { claims };
        }
        const left = deadline - Date.now();
        if (left <= 0 || app.dispatch.closing) return { claims: [] };
        await app.dispatch.wait([`w:${auth.workerId}`, '*'], Math.min(left, 1000));
        // A worker holding a long poll is alive: keep it placeable.
        await touchWorker(app.db, auth.workerId);
      }
    },
  );

  app.post(
    '/workers/:worker_id/claims/:execution_id/renew',
    { config: { roles: ['worker'] }, schema: { tags, params: ClaimParams, body: RenewRequest, response: { 200: RenewResponse } } },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      await touchWorker(app.db, auth.workerId);
      const expires = await renew(app.db, auth.workerId, request.params.execution_id, request.body.claim_id, app.config.claimLeaseMs);
      if (!expires) throw claimLost(request.params.execution_id);
      return { lease_expires_at: expires.toISOString() };
    },
  );

  app.post(
    '/workers/:worker_id/claims/:execution_id/complete',
    {
      config: { roles: ['worker'] },
      // Two capped logs plus the rest of the result.
      bodyLimit: 2 * app.config.logMaxBytes * 4 + 1024 * 1024,
      schema: { tags, params: ClaimParams, body: CompleteRequest, response: { 200: Execution } },
    },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const id = request.params.execution_id;
      const body = request.body;
      const result = await withTransaction(app.db, async (tx) => {
        const row = await lockClaim(tx, auth.workerId, id, body.claim_id);
        if (!row) throw claimLost(id);
        if (body.outcome === 'retry') {
          await app.dispatch.replace(tx, row, auth.workerId, `worker ${auth.workerId} handed it back: ${body.error ?? 'no reason given'}`);
          return app.repos.executions.get(row.account, id, tx);
        }
        const finished = await finish(tx, id, body, app.config.logMaxBytes);
        await notify(tx, [`x:${id}`]);
        return finished;
      });
      if (!result) throw new RgridError('not_found', `no execution ${id}`);
      return result;
    },
  );
  done();
};

export default dispatchRoutes;
