/**
 * The one writer of an execution's state (docs/dispatch.md). Routes call it; nothing else changes an
 * execution's status:
 *
 *   submit ──▶ assigned | queued ──claim──▶ running ──complete(done)──▶ succeeded | failed
 *                  ▲                          │  ╲──renew (extends the lease)
 *                  └──── complete(retry) / lease expired (sweep) ─┘ ──▶ failed "lost" when out of attempts
 *
 * plus `record`, which stores an execution run outside dispatch; only a finished one, so that no row
 * can sit in queued/assigned/running with nothing that would ever end it.
 */
import type { FastifyBaseLogger } from 'fastify';
import { TERMINAL_STATUSES } from '../../common/executions.js';
import type pg from 'pg';
import { RgridError } from '../../common/errors.js';
import type { CreateExecutionRequest, Execution, ExecutionFailure } from '../../common/wire/control-api.js';
import type { ClaimedExecution, CompleteRequest, SubmitExecutionRequest } from '../../common/wire/dispatch-api.js';
import type { ControlConfig } from '../config.js';
import { withTransaction, type Db } from '../db/pool.js';
import type { Repositories } from '../plugins/database.js';
import type { Placement } from '../placement/index.js';
import { clockTickMs, downtimeAfterMs, tickLeaseClock, type TickResult } from './lease-clock.js';
import { notify } from './notify.js';
import {
  claim, finish, giveUp, insertSubmitted, lockAssignedTo, lockClaim, lockExpiredClaims, lockStrandedAssignments, markLeaving, renew, requeue, touchWorker,
  type RequeueRow,
} from './repository.js';
import { lockReportOf } from './lock-report.js';
import { ceilingsOf, checkRunRequest, readOverrides } from './run-limits.js';

/** Submissions of one account are placed one at a time, so a burst sees its own assignments. */
const PLACEMENT_LOCK_NAMESPACE = 0x5247_4450; // "RGDP"
const FINISHED = new Set<string>(TERMINAL_STATUSES);
/** Work a leave re-places in its own transaction; any more is left to the sweep, which treats a leaving worker's queue as stranded. */
const LEAVE_REPLACE_LIMIT = 200;
/**
 * Failures that are the script's own result: final whatever the worker asks. A script that fills the
 * output limit would fill it again on the next worker, so retrying it would only loop.
 */
const RESULT_FAILURES: ReadonlySet<ExecutionFailure> = new Set(['nonzero_exit', 'timeout', 'memory_limit', 'output_limit', 'build_failed']);

/** The worker a request acts as, the token it uses and the accounts that token serves. */
export interface WorkerPrincipal {
  workerId: string;
  tokenId: string;
  accounts: readonly string[];
}

export interface ExecutionServiceDeps {
  db: Db;
  repos: Pick<Repositories, 'inputs' | 'executions'>;
  config: ControlConfig;
  log: FastifyBaseLogger;
  placement: Pick<Placement, 'choose'>;
}

export function claimLost(executionId: string): RgridError {
  return new RgridError('conflict', `the claim on execution ${executionId} is no longer held (lease expired or re-queued)`, { claim_lost: true });
}

export function createExecutionService({ db, repos, config, log, placement }: ExecutionServiceDeps) {
  const downtimeMs = downtimeAfterMs(clockTickMs(config.claimLeaseMs));

  /** Places an execution leaving a claim or a dead worker's queue again, or fails it when out of attempts. */
  async function replace(tx: pg.PoolClient, row: RequeueRow, lostBy: string | null, reason: string): Promise<void> {
    if (lostBy !== null && row.attempts >= row.max_attempts) {
      await giveUp(tx, row, `${reason}; gave up after ${row.attempts} attempt(s)`);
      await notify(tx, [`x:${row.execution_id}`]);
      return;
    }
    const avoid = lostBy === null ? row.lost_by : [...row.lost_by, lostBy];
    const workerId = await placement.choose(tx, {
      account: row.account, runtime: row.runtime, scriptSha256: row.script_sha256, requirementsSha256: row.requirements_sha256, avoid,
    });
    await requeue(tx, row, workerId, lostBy);
    await notify(tx, [workerId ? `w:${workerId}` : '*']);
    log.info({ execution_id: row.execution_id, from: row.worker_id, to: workerId, attempts: row.attempts, reason }, 'execution re-queued');
  }

  async function tickClock(): Promise<TickResult> {
    const result = await withTransaction(db, (tx) => tickLeaseClock(tx, downtimeMs, config.claimLeaseMs));
    if (result.gapMs > downtimeMs) {
      log.warn({ gap_ms: Math.round(result.gapMs), extended_claims: result.extended }, 'no control-plane replica was up for a while: leases extended by that time');
    }
    return result;
  }

  return {
    async submit(account: string, body: SubmitExecutionRequest): Promise<Execution> {
      if ((body.requirements_sha256 ?? null) !== null && !body.requirements_blob_sha256) {
        throw new RgridError('bad_request', 'requirements_sha256 needs requirements_blob_sha256 (the uploaded requirements file)');
      }
      const { maxAttempts } = checkRunRequest(account, body, ceilingsOf(config, await readOverrides(db, account)), config.maxAttempts);
      // The worker fetches these: refuse now rather than fail on the worker later.
      const needed = [body.script_sha256, ...(body.requirements_blob_sha256 ? [body.requirements_blob_sha256] : [])];
      const missing = await repos.inputs.missingBlobs(account, needed);
      if (missing.length > 0) throw new RgridError('bad_request', `blobs not uploaded: ${missing.join(', ')}`, { missing_blobs: missing });
      if (body.input_sha256) {
        const files = await repos.inputs.getManifest(account, body.input_sha256);
        if (!files) throw new RgridError('bad_request', `no input manifest ${body.input_sha256}; record it with POST /v1/manifests`);
        const absent = await repos.inputs.missingBlobs(account, files.map((f) => f.sha256));
        if (absent.length > 0) throw new RgridError('bad_request', `input blobs not uploaded: ${absent.join(', ')}`, { missing_blobs: absent });
      }
      return withTransaction(db, async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [PLACEMENT_LOCK_NAMESPACE, account]);
        const workerId = await placement.choose(tx, {
          account, runtime: body.runtime, scriptSha256: body.script_sha256, requirementsSha256: body.requirements_sha256 ?? null,
        });
        const created = await insertSubmitted(tx, account, body, workerId, maxAttempts);
        await notify(tx, [workerId ? `w:${workerId}` : '*']);
        return created;
      });
    },

    /** Stores an execution run outside dispatch (for its cache-hit flags and timings): finished ones only. */
    async record(account: string, body: CreateExecutionRequest): Promise<Execution> {
      if (body.status === undefined || !FINISHED.has(body.status)) {
        throw new RgridError(
          'bad_request',
          'POST /v1/executions records a finished execution (status succeeded, failed or cancelled); submit work with POST /v1/executions/submit',
        );
      }
      return repos.executions.create(account, body);
    },

    /** Refuses a worker the control plane does not know (it must register first); counts as a sign of life. */
    async assertRegistered(worker: WorkerPrincipal): Promise<void> {
      if (!(await touchWorker(db, worker.workerId, worker.tokenId))) {
        throw new RgridError('conflict', `worker ${worker.workerId} is not registered; register first`, { resync_required: true });
      }
    },

    touch(worker: WorkerPrincipal): Promise<boolean> {
      return touchWorker(db, worker.workerId, worker.tokenId);
    },

    /** One claim round: up to `max` executions of the accounts the worker serves (empty when none wait). */
    async claim(worker: WorkerPrincipal, max: number): Promise<ClaimedExecution[]> {
      const lease = config.claimLeaseMs;
      const rows = await claim(db, worker.workerId, worker.accounts, max, lease);
      return Promise.all(rows.map(async (r) => ({
        ...r,
        inputs: r.input_sha256 ? ((await repos.inputs.getManifest(r.account, r.input_sha256)) ?? []) : [],
        lease_ms: lease,
        lease_expires_at: r.lease_expires_at.toISOString(),
        queue_ms: Number(r.queue_ms ?? 0),
      })));
    },

    async renew(worker: WorkerPrincipal, executionId: string, claimId: string): Promise<Date> {
      await touchWorker(db, worker.workerId, worker.tokenId);
      const expires = await renew(db, worker.workerId, worker.accounts, executionId, claimId, config.claimLeaseMs);
      if (!expires) throw claimLost(executionId);
      return expires;
    },

    async complete(worker: WorkerPrincipal, executionId: string, body: CompleteRequest): Promise<Execution> {
      const result = await withTransaction(db, async (tx) => {
        const row = await lockClaim(tx, worker.workerId, worker.accounts, executionId, body.claim_id);
        if (!row) throw claimLost(executionId);
        // Checked before anything is written: a report that does not fit changes nothing, the claim stays held.
        const lock = lockReportOf(body, row.requirements_sha256);
        const isResult = body.failure !== undefined && body.failure !== null && RESULT_FAILURES.has(body.failure);
        if (body.outcome === 'retry' && !isResult) {
          await replace(tx, row, worker.workerId, `worker ${worker.workerId} handed it back: ${body.error ?? 'no reason given'}`);
          return repos.executions.get(row.account, executionId, tx);
        }
        const finished = await finish(tx, executionId, body, lock, config.logMaxBytes);
        await notify(tx, [`x:${executionId}`]);
        return finished;
      });
      if (!result) throw new RgridError('not_found', `no execution ${executionId}`);
      return result;
    },

    /**
     * The worker's agent is stopping (docs/dispatch.md, "Stopping"): it is marked leaving, so placement
     * skips it and it claims nothing new, and the work waiting in its queue is placed again at once (no
     * attempt was made). Its running claims are left alone: it renews and completes them while it drains.
     * Idempotent; undefined for a worker the control plane does not know.
     */
    async leave(worker: WorkerPrincipal): Promise<{ leavingAt: Date; reassigned: number } | undefined> {
      return withTransaction(db, async (tx) => {
        const leavingAt = await markLeaving(tx, worker.workerId);
        if (!leavingAt) return undefined;
        const rows = await lockAssignedTo(tx, worker.workerId, LEAVE_REPLACE_LIMIT);
        for (const row of rows) await replace(tx, row, null, `worker ${worker.workerId} is leaving`);
        return { leavingAt, reassigned: rows.length };
      });
    },

    /** Records that this replica is up, extending leases first when no replica was (control/dispatch/lease-clock.ts). */
    tickClock,

    /** Re-queues expired claims and work stranded on dead or leaving workers; ticks the lease clock first. */
    async sweep(): Promise<{ expired: number; stranded: number }> {
      await tickClock();
      const expired = await withTransaction(db, async (tx) => {
        const rows = await lockExpiredClaims(tx, 100);
        for (const row of rows) await replace(tx, row, row.worker_id, `worker ${row.worker_id ?? '?'} stopped renewing its claim`);
        return rows.length;
      });
      const stranded = await withTransaction(db, async (tx) => {
        const rows = await lockStrandedAssignments(tx, config.workerDeadAfterMs, 100);
        for (const row of rows) await replace(tx, row, null, `worker ${row.worker_id ?? '?'} went silent, is leaving or no longer serves the account before claiming`);
        return rows.length;
      });
      return { expired, stranded };
    },
  };
}
export type ExecutionService = ReturnType<typeof createExecutionService>;
