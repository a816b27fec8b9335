/**
 * SQL of dispatch (docs/dispatch.md), called by the execution service only. The per-worker queues are the
 * executions rows themselves: status 'assigned' with worker_id = the worker is that worker's queue,
 * 'queued' means no live worker could take it yet (any worker serving the account may claim it),
 * 'running' is a claim with a lease. Claims take rows with FOR UPDATE SKIP LOCKED, so replicas and
 * concurrent long polls never hand one execution out twice.
 */
import { storableLog } from '../../common/names.js';
import type { Queryable } from '../db/pool.js';
import { COLUMNS, toWire, type Row } from '../repositories/executions.js';
import type { Execution, ExecutionFailure, OutputFile } from '../../common/wire/control-api.js';
import type { CompleteRequest, SubmitExecutionRequest } from '../../common/wire/dispatch-api.js';
import type { LockReport } from './lock-report.js';

export interface ClaimRow {
  execution_id: string;
  claim_id: string;
  account: string;
  runtime: string;
  script_sha256: string;
  requirements_sha256: string | null;
  requirements_blob_sha256: string | null;
  input_sha256: string | null;
  timeout_s: number | null;
  memory_mb: number | null;
  attempt: number;
  lease_expires_at: Date;
  queue_ms: number;
}

/** What re-placement needs to know about an execution leaving a claim or a dead worker's queue. */
export interface RequeueRow {
  execution_id: string;
  account: string;
  runtime: string;
  script_sha256: string;
  requirements_sha256: string | null;
  worker_id: string | null;
  attempts: number;
  max_attempts: number;
  lost_by: string[];
}

const REQUEUE_COLUMNS = `execution_id, account_id AS account, runtime, script_sha256, requirements_sha256, worker_id,
  attempts, max_attempts, lost_by`;

/** `maxAttempts` is the submission's own, already checked against its account's run limits. */
export async function insertSubmitted(
  q: Queryable, account: string, body: SubmitExecutionRequest, workerId: string | null, maxAttempts: number,
): Promise<Execution> {
  const { rows } = await q.query<Row>(
    `INSERT INTO executions (account_id, status, runtime, script_sha256, requirements_sha256, requirements_blob_sha256,
       input_sha256, worker_id, timeout_s, memory_mb, max_attempts, dispatch, queued_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true, now())
     RETURNING ${COLUMNS}`,
    [
      account, workerId ? 'assigned' : 'queued', body.runtime, body.script_sha256, body.requirements_sha256 ?? null,
      body.requirements_blob_sha256 ?? null, body.input_sha256 ?? null, workerId, body.timeout_s ?? null, body.memory_mb ?? null,
      maxAttempts,
    ],
  );
  return toWire(rows[0]!);
}

/** Executions assigned or running per worker: the load dispatch balances (heartbeats lag behind it). */
export async function outstanding(q: Queryable, workerIds: readonly string[]): Promise<Map<string, number>> {
  const { rows } = await q.query<{ worker_id: string; n: number }>(
    `SELECT worker_id, count(*)::int AS n FROM executions
     WHERE dispatch AND status IN ('assigned', 'running') AND worker_id = ANY($1::text[]) GROUP BY worker_id`,
    [workerIds],
  );
  return new Map(rows.map((r) => [r.worker_id, r.n]));
}

/**
 * A claim or a renewal is a sign of life, and names the token the agent uses (placement follows the
 * accounts it serves); returns false for a worker the control plane does not know.
 */
export async function touchWorker(q: Queryable, workerId: string, tokenId: string): Promise<boolean> {
  const res = await q.query('UPDATE workers SET last_seen_at = now(), token_id = $2 WHERE worker_id = $1', [workerId, tokenId]);
  return res.rowCount === 1;
}

/**
 * Marks the worker as leaving (its agent is stopping: docs/dispatch.md, "Stopping"), locking its row for
 * the caller's transaction; a second call keeps the first time. Undefined for a worker the control plane
 * does not know. Also a sign of life: the agent is draining, not dead. Only a registration clears it.
 */
export async function markLeaving(q: Queryable, workerId: string): Promise<Date | undefined> {
  const { rows } = await q.query<{ leaving_at: Date }>(
    'UPDATE workers SET leaving_at = coalesce(leaving_at, now()), last_seen_at = now() WHERE worker_id = $1 RETURNING leaving_at',
    [workerId],
  );
  return rows[0]?.leaving_at;
}

/** Work waiting in the queue of `workerId` (assigned, not claimed), locked for this transaction; others' locks are skipped. */
export async function lockAssignedTo(q: Queryable, workerId: string, limit: number): Promise<RequeueRow[]> {
  const { rows } = await q.query<RequeueRow>(
    `SELECT ${REQUEUE_COLUMNS} FROM executions
     WHERE dispatch AND status = 'assigned' AND worker_id = $1
     ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
    [workerId, limit],
  );
  return rows;
}

/**
 * Takes up to `max` executions: the worker's own queue first, then unplaced work of its accounts. A
 * leaving worker takes nothing new, not even through a long poll it opened before it left: it is draining.
 */
export async function claim(q: Queryable, workerId: string, accounts: readonly string[], max: number, leaseMs: number): Promise<ClaimRow[]> {
  const { rows } = await q.query<ClaimRow>(
    `WITH picked AS (
       SELECT execution_id FROM executions
       WHERE dispatch AND account_id = ANY($2::text[])
         AND ((status = 'assigned' AND worker_id = $1) OR status = 'queued')
         AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = $1 AND w.leaving_at IS NOT NULL)
       ORDER BY (status = 'assigned') DESC, created_at, execution_id
       LIMIT $3 FOR UPDATE SKIP LOCKED
     )
     UPDATE executions e SET status = 'running', worker_id = $1, claimed_by = $1, claim_id = gen_random_uuid(),
       claim_expires_at = now() + make_interval(secs => $4::float8 / 1000), attempts = e.attempts + 1,
       started_at = now(), updated_at = now(),
       timings = e.timings || jsonb_build_object('queue_ms', round(extract(epoch FROM now() - coalesce(e.queued_at, e.created_at)) * 1000))
     FROM picked WHERE e.execution_id = picked.execution_id
     RETURNING e.execution_id, e.claim_id, e.account_id AS account, e.runtime, e.script_sha256, e.requirements_sha256,
       e.requirements_blob_sha256, e.input_sha256, e.timeout_s, e.memory_mb, e.attempts AS attempt,
       e.claim_expires_at AS lease_expires_at, (e.timings->>'queue_ms')::float8 AS queue_ms`,
    [workerId, accounts, max, leaseMs],
  );
  return rows;
}

/**
 * A claim is held by its worker while the execution's account is still one the worker's token serves:
 * after a share of the worker is revoked, renewals and results of that account's claims are refused.
 */
export async function renew(
  q: Queryable, workerId: string, accounts: readonly string[], executionId: string, claimId: string, leaseMs: number,
): Promise<Date | undefined> {
  const { rows } = await q.query<{ expires: Date }>(
    `UPDATE executions SET claim_expires_at = now() + make_interval(secs => $4::float8 / 1000)
     WHERE execution_id = $2 AND claim_id = $3 AND worker_id = $1 AND status = 'running' AND account_id = ANY($5::text[])
     RETURNING claim_expires_at AS expires`,
    [workerId, executionId, claimId, leaseMs, accounts],
  );
  return rows[0]?.expires;
}

/** Locks the row of a live claim of this worker (inside a transaction); undefined when it was lost. */
export async function lockClaim(
  q: Queryable, workerId: string, accounts: readonly string[], executionId: string, claimId: string,
): Promise<RequeueRow | undefined> {
  const { rows } = await q.query<RequeueRow>(
    `SELECT ${REQUEUE_COLUMNS} FROM executions
     WHERE execution_id = $2 AND claim_id = $3 AND worker_id = $1 AND status = 'running' AND account_id = ANY($4::text[])
     FOR UPDATE`,
    [workerId, executionId, claimId, accounts],
  );
  return rows[0];
}

/** Keeps the last `maxBytes` bytes of a log (the end of a failing script's output is what explains it). */
export function capLog(text: string | undefined, maxBytes: number): { text: string; truncated: boolean } {
  if (text === undefined) return { text: '', truncated: false };
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return { text, truncated: false };
  // Cutting inside a multi-byte character leaves U+FFFD at the start; acceptable for a log tail.
  return { text: bytes.subarray(bytes.length - maxBytes).toString('utf8'), truncated: true };
}

/** The status a result maps to: exit 0 without a failure succeeded; everything else failed with a reason. */
export function resultStatus(body: Pick<CompleteRequest, 'exit_code' | 'failure'>): { status: 'succeeded' | 'failed'; failure: ExecutionFailure | null } {
  if (body.failure) return { status: 'failed', failure: body.failure };
  if (body.exit_code === 0) return { status: 'succeeded', failure: null };
  return { status: 'failed', failure: body.exit_code === undefined || body.exit_code === null ? 'error' : 'nonzero_exit' };
}

/** `lock`: the run's lock fields as lockReportOf checked them (lock-report.ts). */
export async function finish(q: Queryable, executionId: string, body: CompleteRequest, lock: LockReport, logMaxBytes: number): Promise<Execution> {
  const { status, failure } = resultStatus(body);
  // Logs are a record of what the script printed: never refused. NUL (which PostgreSQL cannot store in
  // text) and unpaired surrogates become U+FFFD before the cap counts bytes.
  const out = capLog(body.stdout === undefined ? undefined : storableLog(body.stdout), logMaxBytes);
  const err = capLog(body.stderr === undefined ? undefined : storableLog(body.stderr), logMaxBytes);
  const outputs: OutputFile[] = body.outputs ?? [];
  const { rows } = await q.query<Row>(
    `UPDATE executions SET status = $2, failure = $3, exit_code = $4, error = $5, script_cache_hit = $6,
       dependency_cache_hit = $7, input_cache_hit = $8, downloaded_blobs = $9, image_origin = $15,
       lock_sha256 = $16, resolved = $17::text[], resolution = $18,
       timings = timings || $10::jsonb || jsonb_build_object('total_ms', round(extract(epoch FROM now() - created_at) * 1000)),
       outputs = $11::jsonb, stdout = $12, stderr = $13, logs_truncated = $14, claim_expires_at = NULL,
       finished_at = now(), updated_at = now()
     WHERE execution_id = $1 RETURNING ${COLUMNS}`,
    [
      executionId, status, failure, body.exit_code ?? null, body.error ?? null, body.script_cache_hit ?? null,
      body.dependency_cache_hit ?? null, body.input_cache_hit ?? null, body.downloaded_blobs ?? null,
      JSON.stringify(body.timings ?? {}), JSON.stringify(outputs), out.text, err.text,
      out.truncated || err.truncated || body.logs_truncated === true, body.image_origin ?? null,
      lock.lock_sha256, lock.resolved, lock.resolution,
    ],
  );
  return toWire(rows[0]!);
}

/** Back into a queue (placed on `workerId`, or unplaced with null); the worker that lost it is remembered. */
export async function requeue(q: Queryable, row: RequeueRow, workerId: string | null, lostBy: string | null): Promise<void> {
  await q.query(
    `UPDATE executions SET status = $2, worker_id = $3, claimed_by = NULL, claim_id = NULL, claim_expires_at = NULL,
       queued_at = now(), updated_at = now(),
       lost_by = CASE WHEN $4::text IS NULL OR $4 = ANY(lost_by) THEN lost_by ELSE lost_by || $4::text END
     WHERE execution_id = $1`,
    [row.execution_id, workerId ? 'assigned' : 'queued', workerId, lostBy],
  );
}

/** Attempts exhausted: a final failure that says why. */
export async function giveUp(q: Queryable, row: RequeueRow, error: string): Promise<void> {
  await q.query(
    `UPDATE executions SET status = 'failed', failure = 'lost', error = $2, claim_id = NULL, claim_expires_at = NULL,
       finished_at = now(), updated_at = now(),
       lost_by = CASE WHEN worker_id IS NULL OR worker_id = ANY(lost_by) THEN lost_by ELSE lost_by || worker_id END
     WHERE execution_id = $1`,
    [row.execution_id, error],
  );
}

/** Running claims whose lease ran out, locked for this transaction (other replicas skip them). */
export async function lockExpiredClaims(q: Queryable, limit: number): Promise<RequeueRow[]> {
  const { rows } = await q.query<RequeueRow>(
    `SELECT ${REQUEUE_COLUMNS} FROM executions
     WHERE dispatch AND status = 'running' AND claim_expires_at < now()
     ORDER BY claim_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows;
}

/**
 * Work waiting in the queue of a worker that went silent, is leaving (its agent is stopping), or no longer
 * serves the account (its share was revoked, its tokens revoked or expired): it is placed again (no
 * attempt was made).
 */
export async function lockStrandedAssignments(q: Queryable, deadAfterMs: number, limit: number): Promise<RequeueRow[]> {
  const { rows } = await q.query<RequeueRow>(
    `SELECT ${REQUEUE_COLUMNS} FROM executions e
     WHERE e.dispatch AND e.status = 'assigned'
       AND (NOT EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = e.worker_id AND w.leaving_at IS NULL
                        AND w.last_seen_at > now() - make_interval(secs => $1::float8 / 1000))
            OR NOT EXISTS (SELECT 1 FROM workers w JOIN live_worker_token_accounts v ON v.worker_id = w.worker_id
                           WHERE w.worker_id = e.worker_id AND v.account_id = e.account_id
                             AND (w.token_id IS NULL OR v.token_id = w.token_id)))
     ORDER BY e.created_at LIMIT $2 FOR UPDATE OF e SKIP LOCKED`,
    [deadAfterMs, limit],
  );
  return rows;
}

export async function logs(q: Queryable, account: string, executionId: string): Promise<{ status: string; stdout: string | null; stderr: string | null; truncated: boolean } | undefined> {
  const { rows } = await q.query<{ status: string; stdout: string | null; stderr: string | null; truncated: boolean }>(
    'SELECT status, stdout, stderr, logs_truncated AS truncated FROM executions WHERE execution_id = $1 AND account_id = $2',
    [executionId, account],
  );
  return rows[0];
}
