/**
 * Agent endpoints: register, heartbeat, full snapshot (in one request or in parts), op batches, leave. A
 * worker token acts for its own worker id only and writes entries of the accounts it serves only; any op
 * naming another account rejects the whole batch before anything is written.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import {
  AccountId, HeartbeatRequest, LeaveWorkerResponse, RegisterWorkerRequest, RegisterWorkerResponse, SnapshotRequest, SnapshotResponse,
  SyncOpsRequest, SyncOpsResponse, SyncStatusResponse, WorkerEntriesResponse, WorkerId,
} from '../../common/wire/control-api.js';
import { withTransaction } from '../db/pool.js';
import { planSyncOps } from '../sync-plan.js';
import { ownWorker } from '../plugins/auth.js';

const Params = Type.Object({ worker_id: WorkerId });

function resyncError(workerId: string, reason: string): RgridError {
  return new RgridError('conflict', `worker ${workerId}: ${reason}; register and send a full snapshot`, { resync_required: true, reason });
}

function assertServed(accounts: readonly string[], served: readonly string[], workerId: string): void {
  for (const account of accounts) {
    if (!served.includes(account)) throw new RgridError('forbidden', `worker ${workerId} does not serve account ${account}`);
  }
}

const workerRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const roles = ['worker'] as const;
  const tags = ['workers'];

  app.post(
    '/workers/:worker_id/register',
    { config: { roles }, schema: { operationId: 'registerWorker', tags, params: Params, body: RegisterWorkerRequest, response: { 200: RegisterWorkerResponse } } },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const { known } = await app.repos.workers.register(auth.workerId, request.body, auth.tokenId);
      return {
        worker_id: auth.workerId,
        known,
        snapshot_required: true,
        accounts: auth.accounts,
        heartbeat_interval_ms: app.config.heartbeatIntervalMs,
        dead_after_ms: app.config.workerDeadAfterMs,
        server_time: new Date().toISOString(),
      };
    },
  );

  app.post(
    '/workers/:worker_id/heartbeat',
    { config: { roles }, schema: { operationId: 'heartbeat', tags, params: Params, body: HeartbeatRequest, response: { 200: SyncStatusResponse } } },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const row = await app.repos.workers.heartbeat(auth.workerId, request.body, auth.tokenId);
      return { known: row !== undefined, resync_required: !row || row.snapshotAt === null, server_time: new Date().toISOString() };
    },
  );

  /**
   * The agent is stopping (docs/dispatch.md, "Stopping"): placement skips it from now on and the work
   * waiting in its queue is placed again, while it renews and completes the claims it holds. No body.
   * Idempotent; only a registration undoes it. A worker the control plane does not know gets the 409 of
   * the sync routes (resync_required): there is nothing to leave.
   */
  app.post(
    '/workers/:worker_id/leave',
    {
      config: { roles },
      schema: { operationId: 'leaveWorker', summary: 'Takes this worker out of placement while it drains (its agent is stopping)', tags, params: Params, response: { 200: LeaveWorkerResponse } },
    },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const left = await app.dispatch.executions.leave(auth);
      if (!left) throw resyncError(auth.workerId, 'not registered');
      app.placement.forget(auth.accounts);
      request.log.info({ worker_id: auth.workerId, leaving_at: left.leavingAt, reassigned: left.reassigned }, 'worker leaving');
      return { worker_id: auth.workerId, leaving_at: left.leavingAt.toISOString(), reassigned: left.reassigned };
    },
  );

  app.put(
    '/workers/:worker_id/snapshot',
    {
      config: { roles },
      bodyLimit: app.config.snapshotBodyLimitBytes,
      schema: { operationId: 'putSnapshot', summary: "Replaces the worker's entries of the accounts named", tags, params: Params, body: SnapshotRequest, response: { 200: SnapshotResponse } },
    },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const accounts = request.body.accounts ?? auth.accounts;
      assertServed(accounts, auth.accounts, auth.workerId);
      const entries = request.body.entries;
      const seen = new Set<string>();
      for (const e of entries) {
        if (!accounts.includes(e.account)) throw new RgridError('bad_request', `entry ${e.kind} ${e.key} of account ${e.account} is outside the snapshot's accounts`);
        if (e.kind === 'image' && !e.script_sha256) throw new RgridError('bad_request', `image entry ${e.key} needs script_sha256`);
        if (e.lock_sha256 && !e.requirements_sha256) throw new RgridError('bad_request', `${e.kind} entry ${e.key} names a lock without requirements`);
        const id = `${e.account}\u0000${e.kind}\u0000${e.key}`;
        if (seen.has(id)) throw new RgridError('bad_request', `entry ${e.kind} ${e.key} of account ${e.account} appears twice`);
        seen.add(id);
      }
      // Without `snapshot` the body is a whole snapshot on its own: part 0 and final, under a fresh id.
      const part = request.body.snapshot ?? { id: randomUUID(), part: 0, final: true };
      const result = await withTransaction(app.db, async (tx) => {
        if (!(await app.repos.workers.lockForSync(auth.workerId, tx))) throw resyncError(auth.workerId, 'not registered');
        const applied = await app.repos.entries.applySnapshotPart(auth.workerId, { snapshotId: part.id, part: part.part, final: part.final, accounts, entries }, tx);
        if (!applied.applied) throw resyncError(auth.workerId, applied.reason);
        if (applied.complete && !applied.finishedBefore) await app.repos.workers.markSnapshot(auth.workerId, tx);
        return applied;
      });
      if (result.complete && !result.finishedBefore) app.metrics.snapshots.inc();
      if (request.body.snapshot) {
        request.log.debug({ worker_id: auth.workerId, snapshot: part, entries: entries.length, complete: result.complete }, 'snapshot part applied');
      }
      return { accounts, entries: result.entries, removed: result.removed, server_time: new Date().toISOString() };
    },
  );

  app.post(
    '/workers/:worker_id/ops',
    { config: { roles }, schema: { operationId: 'applySyncOps', summary: 'Applies a batch of cache-index changes, at most once per op id', tags, params: Params, body: SyncOpsRequest, response: { 200: SyncOpsResponse } } },
    async (request) => {
      const auth = ownWorker(request, request.params.worker_id);
      const ops = request.body.ops;
      assertServed([...new Set(ops.map((o) => o.account))], auth.accounts, auth.workerId);
      for (const op of ops) {
        if (op.type !== 'upsert') continue;
        if (op.kind === 'image' && !op.script_sha256) throw new RgridError('bad_request', `op ${op.id}: an image upsert needs script_sha256`);
        // A lock is what a requirements file resolved to: an entry without requirements has none.
        if (op.lock_sha256 && !op.requirements_sha256) throw new RgridError('bad_request', `op ${op.id}: an upsert names a lock without requirements`);
      }
      const { applied, duplicates } = await withTransaction(app.db, async (tx) => {
        const worker = await app.repos.workers.lockForSync(auth.workerId, tx);
        if (!worker) throw resyncError(auth.workerId, 'not registered');
        if (worker.snapshotAt === null) throw resyncError(auth.workerId, 'no complete snapshot since registration');
        const fresh = await app.repos.entries.claimOpIds(auth.workerId, ops.map((o) => o.id), tx);
        // claimOpIds returns each new id once; a batch repeating an id applies its first occurrence.
        const toApply = ops.filter((o) => fresh.delete(o.id));
        await app.repos.entries.applyPlan(auth.workerId, planSyncOps(toApply), tx);
        return { applied: toApply.length, duplicates: ops.length - toApply.length };
      });
      app.metrics.syncOps.inc({ result: 'applied' }, applied);
      app.metrics.syncOps.inc({ result: 'duplicate' }, duplicates);
      return { applied, duplicates, server_time: new Date().toISOString() };
    },
  );

  /** What the control plane holds for a worker: the agent verifies its view, a scheduler inspects its account. */
  app.get(
    '/workers/:worker_id/entries',
    {
      config: { roles: ['worker', 'scheduler'] },
      schema: { operationId: 'listWorkerEntries', tags, params: Params, querystring: Type.Object({ account: Type.Optional(AccountId) }), response: { 200: WorkerEntriesResponse } },
    },
    async (request) => {
      const auth = request.auth;
      let account: string | null;
      if (auth.role === 'worker') {
        ownWorker(request, request.params.worker_id);
        account = request.query.account ?? null;
        if (account !== null) assertServed([account], auth.accounts, auth.workerId);
      } else if (auth.role === 'scheduler') {
        if (request.query.account !== undefined && request.query.account !== auth.account) throw new RgridError('forbidden', `this token belongs to account ${auth.account}`);
        account = auth.account;
      } else {
        throw new RgridError('forbidden', 'not allowed');
      }
      const rows = await app.repos.entries.listForWorker(request.params.worker_id, account);
      const served = auth.role === 'worker' ? auth.accounts : [account ?? ''];
      return {
        entries: rows
          .filter((r) => served.includes(r.account))
          .map(({ worker_id: _w, ...e }) => ({
            ...e,
            script_sha256: e.script_sha256 ?? null,
            deps_key: e.deps_key ?? null,
            lock_sha256: e.lock_sha256 ?? null,
            created_at: new Date(e.created_at).toISOString(),
            last_used_at: new Date(e.last_used_at).toISOString(),
          })),
      };
    },
  );
  done();
};
export default workerRoutes;
