-- Up Migration
-- Dispatch (docs/dispatch.md): executions submitted for dispatch are placed on a worker's queue, claimed by the
-- agent under a lease it renews, re-queued when the lease runs out, and finished with logs and outputs.
-- Executions recorded through POST /v1/executions (finished runs reported after the fact) keep dispatch = false and are never claimed.

ALTER TABLE executions
  ADD COLUMN dispatch                 boolean NOT NULL DEFAULT false,
  -- The raw requirements file as the client sent it (a blob); its canonical digest is requirements_sha256.
  ADD COLUMN requirements_blob_sha256 text,
  ADD COLUMN timeout_s                double precision,
  ADD COLUMN memory_mb                integer,
  ADD COLUMN max_attempts             integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  -- Identifies one claim (one attempt): renewals and results of an older attempt are refused.
  ADD COLUMN claim_id                 uuid,
  -- When the execution last entered a queue (placement or re-queue): the queue timing starts here.
  ADD COLUMN queued_at                timestamptz,
  ADD COLUMN started_at               timestamptz,
  -- Workers that lost a claim on it: re-placement prefers any other live worker.
  ADD COLUMN lost_by                  text[] NOT NULL DEFAULT '{}',
  -- Why a finished execution failed; NULL when it succeeded.
  ADD COLUMN failure                  text CHECK (failure IN ('nonzero_exit', 'timeout', 'memory_limit', 'build_failed',
                                                              'input_unavailable', 'lost', 'error')),
  ADD COLUMN downloaded_blobs         integer,
  ADD COLUMN outputs                  jsonb NOT NULL DEFAULT '[]',
  ADD COLUMN stdout                   text,
  ADD COLUMN stderr                   text,
  ADD COLUMN logs_truncated           boolean NOT NULL DEFAULT false;

-- A worker's queue, oldest first (the claim scans only this worker's assigned rows).
CREATE INDEX executions_worker_queue_idx ON executions (worker_id, created_at, execution_id)
  WHERE dispatch AND status = 'assigned';
-- Executions no live worker could take at submit time: any worker serving the account may claim them.
CREATE INDEX executions_unplaced_idx ON executions (account_id, created_at, execution_id)
  WHERE dispatch AND status = 'queued';
-- The lease sweep: running claims whose lease ran out.
CREATE INDEX executions_claim_expiry_idx ON executions (claim_expires_at)
  WHERE dispatch AND status = 'running';

-- Down Migration
DROP INDEX executions_claim_expiry_idx;
DROP INDEX executions_unplaced_idx;
DROP INDEX executions_worker_queue_idx;
ALTER TABLE executions
  DROP COLUMN dispatch, DROP COLUMN requirements_blob_sha256, DROP COLUMN timeout_s, DROP COLUMN memory_mb,
  DROP COLUMN max_attempts, DROP COLUMN claim_id, DROP COLUMN queued_at, DROP COLUMN started_at, DROP COLUMN lost_by,
  DROP COLUMN failure, DROP COLUMN downloaded_blobs, DROP COLUMN outputs, DROP COLUMN stdout, DROP COLUMN stderr,
  DROP COLUMN logs_truncated;
