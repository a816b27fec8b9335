/**
 * The registry index and the grid-wide build lease in PostgreSQL (docs/architecture.md, "Images in the
 * registry"). Every change of one (account, kind, key) runs in one transaction under that key's advisory
 * lock, so two workers asking at once cannot both be granted the lease, and a waiter is woken (NOTIFY,
 * delivered at commit) only by a change that really happened.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { BuildAcquireRequest, BuildAcquireResponse, BuildCompleteRequest, RecordPushRequest } from '../../common/wire/registry-api.js';
import { RgridError } from '../../common/errors.js';
import { notify } from '../dispatch/notify.js';

/** Namespace of the per-key advisory locks (two-int form: namespace, hashtext). */
export const BUILD_LOCK_NAMESPACE = 7244;

export interface ImageRef {
  account: string;
  kind: 'image' | 'deps';
  key: string;
}

/** The wake-up key of the long polls waiting on one (account, kind, key). */
export const buildWaitKey = (r: ImageRef): string => `b:${r.account}:${r.kind}:${r.key}`;

/** What happened, for metrics and logs. */
export type AcquireEvent = 'pushed' | 'failed' | 'building' | 'granted' | 'taken_over' | 'regranted';

const secs = (ms: number): number => ms / 1000;
const iso = (d: Date): string => d.toISOString();

async function lockKey(tx: pg.PoolClient, r: ImageRef): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [BUILD_LOCK_NAMESPACE, `${r.account} ${r.kind} ${r.key}`]);
}

const KEY_WHERE = 'account_id = $1 AND kind = $2 AND key = $3';
const keyArgs = (r: ImageRef): unknown[] => [r.account, r.kind, r.key];

/** The acquire of docs/architecture.md: pushed, then a live failure, then the lease (granted, taken over or held). */
export async function acquire(
  tx: pg.PoolClient, workerId: string, req: BuildAcquireRequest, leaseMs: number,
): Promise<{ answer: BuildAcquireResponse; event: AcquireEvent }> {
  const ref: ImageRef = { account: req.account, kind: req.kind, key: req.key };
  await lockKey(tx, ref);
  const pushed = await tx.query<{ registry: string; manifest_digest: string; size_bytes: number | null; pushed_by: string }>(
    `UPDATE registry_images SET last_pulled_at = now() WHERE ${KEY_WHERE} AND registry = $4 RETURNING registry, manifest_digest, size_bytes, pushed_by`,
    [...keyArgs(ref), req.registry],
  );
  const image = pushed.rows[0];
  if (image) {
    return { answer: { state: 'pushed', registry: image.registry, manifest_digest: image.manifest_digest, size_bytes: image.size_bytes, pushed_by: image.pushed_by }, event: 'pushed' };
  }
  const failed = await tx.query<{ error: string; message: string; log_tail: string; failed_by: string; failed_at: Date }>(
    `SELECT error, message, log_tail, failed_by, failed_at FROM build_failures WHERE ${KEY_WHERE} AND expires_at > now()`,
    keyArgs(ref),
  );
  const failure = failed.rows[0];
  if (failure) return { answer: { state: 'failed', ...failure, failed_at: iso(failure.failed_at) }, event: 'failed' };

  const held = await tx.query<{ lease_id: string; holder: string; attempt: number; expires_at: Date; live: boolean }>(
    `SELECT lease_id, holder, attempt, expires_at, expires_at > now() AS live FROM build_leases WHERE ${KEY_WHERE} FOR UPDATE`,
    keyArgs(ref),
  );
  const lease = held.rows[0];
  if (lease && lease.holder !== workerId && lease.live) {
    return { answer: { state: 'building', holder: lease.holder, lease_expires_at: iso(lease.expires_at) }, event: 'building' };
  }
  const description = [req.registry, req.runtime, req.base_image_id, req.requirements_sha256, req.script_sha256, req.deps_key];
  let row: { lease_id: string; attempt: number; expires_at: Date };
  let event: AcquireEvent;
  if (!lease) {
    const res = await tx.query<typeof row>(
      `INSERT INTO build_leases (account_id, kind, key, lease_id, holder, registry, runtime, base_image_id, requirements_sha256, script_sha256, deps_key, attempt, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, now() + make_interval(secs => $12)) RETURNING lease_id, attempt, expires_at`,
      [...keyArgs(ref), randomUUID(), workerId, ...description, secs(leaseMs)],
    );
    row = res.rows[0]!;
    event = 'granted';
  } else if (lease.holder === workerId && lease.live) {
    // The same worker asking again (it lost our answer): its own lease back, renewed.
    const res = await tx.query<typeof row>(
      `UPDATE build_leases SET expires_at = now() + make_interval(secs => $2) WHERE lease_id = $1 RETURNING lease_id, attempt, expires_at`,
      [lease.lease_id, secs(leaseMs)],
    );
    row = res.rows[0]!;
    event = 'regranted';
  } else {
    // The holder stopped renewing (it died, or lost the control plane) or released it: a new lease id,
    // so the old one's renewals and completes are refused from now on.
    const res = await tx.query<typeof row>(
      `UPDATE build_leases SET lease_id = $2, holder = $3, registry = $4, runtime = $5, base_image_id = $6, requirements_sha256 = $7, script_sha256 = $8,
         deps_key = $9, attempt = attempt + 1, acquired_at = now(), expires_at = now() + make_interval(secs => $10)
       WHERE lease_id = $1 RETURNING lease_id, attempt, expires_at`,
      [lease.lease_id, randomUUID(), workerId, ...description, secs(leaseMs)],
    );
    row = res.rows[0]!;
    event = 'taken_over';
  }
  return { answer: { state: 'lease', lease_id: row.lease_id, lease_ms: leaseMs, lease_expires_at: iso(row.expires_at), attempt: row.attempt }, event };
}

/** The lease's new expiry, or null when it is not this worker's lease any more (taken over, completed). */
export async function renew(db: pg.Pool, workerId: string, accounts: readonly string[], leaseId: string, leaseMs: number): Promise<Date | null> {
  const res = await db.query<{ expires_at: Date }>(
    `UPDATE build_leases SET expires_at = now() + make_interval(secs => $4) WHERE lease_id = $1 AND holder = $2 AND account_id = ANY($3) RETURNING expires_at`,
    [leaseId, workerId, accounts, secs(leaseMs)],
  );
  return res.rows[0]?.expires_at ?? null;
}

export const leaseLost = (leaseId: string): RgridError =>
  new RgridError('conflict', `build lease ${leaseId} is not this worker's any more (taken over after it expired, or completed)`, { lease_lost: true });

const UPSERT_IMAGE_CONFLICT = `ON CONFLICT (account_id, kind, key) DO UPDATE SET
    registry = EXCLUDED.registry, manifest_digest = EXCLUDED.manifest_digest, size_bytes = EXCLUDED.size_bytes, runtime = EXCLUDED.runtime,
    base_image_id = EXCLUDED.base_image_id, requirements_sha256 = EXCLUDED.requirements_sha256, script_sha256 = EXCLUDED.script_sha256,
    deps_key = EXCLUDED.deps_key, pushed_by = EXCLUDED.pushed_by, pushed_at = now(), last_pulled_at = NULL
  WHERE registry_images.registry <> EXCLUDED.registry`;
// The first push to a registry stays authoritative (the ON CONFLICT updates nothing for the same
// registry). A row naming another registry is replaced: workers that moved to a new registry would
// otherwise be told to build the key again and again, since a row of another registry counts as absent.

/**
 * Completes a lease with its outcome. A repeat of the same complete (the agent never saw our answer) is
 * ok; a lease that is not this worker's, or a different outcome for a completed lease, is a conflict.
 * Returns whether anything changed (false for a repeat) and the key, to wake its waiters.
 */
export async function complete(
  tx: pg.PoolClient, workerId: string, accounts: readonly string[], leaseId: string, body: BuildCompleteRequest, failureTtlMs: number,
): Promise<{ changed: boolean; ref: ImageRef | null }> {
  const digest = body.outcome === 'pushed' ? body.manifest_digest : null;
  const found = await tx.query<{ account: string; kind: 'image' | 'deps'; key: string }>(
    'SELECT account_id AS account, kind, key FROM build_leases WHERE lease_id = $1 AND holder = $2 AND account_id = ANY($3)',
    [leaseId, workerId, accounts],
  );
  const ref = found.rows[0];
  if (ref) await lockKey(tx, ref);
  // Under the key's lock, the lease is still there unless a concurrent complete of it just committed.
  const lease = ref
    ? (await tx.query('SELECT 1 FROM build_leases WHERE lease_id = $1 AND holder = $2 FOR UPDATE', [leaseId, workerId])).rowCount === 1
    : false;
  if (!ref || !lease) {
    const done = await tx.query<{ holder: string; outcome: string; manifest_digest: string | null }>(
      'SELECT holder, outcome, manifest_digest FROM build_completions WHERE lease_id = $1',
      [leaseId],
    );
    const previous = done.rows[0];
    if (previous && previous.holder === workerId && previous.outcome === body.outcome && previous.manifest_digest === digest) return { changed: false, ref: null };
    throw leaseLost(leaseId);
  }
  const args = keyArgs(ref);
  if (body.outcome === 'pushed') {
    await tx.query(
      `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id, requirements_sha256, script_sha256, deps_key, pushed_by)
       SELECT account_id, kind, key, registry, $2, $3, runtime, base_image_id, requirements_sha256, script_sha256, deps_key, holder FROM build_leases WHERE lease_id = $1
       ${UPSERT_IMAGE_CONFLICT}`,
      [leaseId, body.manifest_digest, body.size_bytes],
    );
    // A build of the key succeeded: an older failure no longer speaks for it.
    await tx.query(`DELETE FROM build_failures WHERE ${KEY_WHERE}`, args);
  } else if (body.outcome === 'failed') {
    await tx.query(
      `INSERT INTO build_failures (account_id, kind, key, error, message, log_tail, failed_by, failed_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now() + make_interval(secs => $8))
       ON CONFLICT (account_id, kind, key) DO UPDATE SET error = EXCLUDED.error, message = EXCLUDED.message, log_tail = EXCLUDED.log_tail,
         failed_by = EXCLUDED.failed_by, failed_at = EXCLUDED.failed_at, expires_at = EXCLUDED.expires_at`,
      [...args, body.error, body.message, body.log_tail, workerId, secs(failureTtlMs)],
    );
  }
  if (body.outcome === 'released') {
    // Kept as an expired lease under a new id: the next worker that asks takes it over as the next
    // attempt (and the released id is refused like any lost lease).
    await tx.query('UPDATE build_leases SET lease_id = $2, expires_at = now() WHERE lease_id = $1', [leaseId, randomUUID()]);
  } else {
    await tx.query('DELETE FROM build_leases WHERE lease_id = $1', [leaseId]);
  }
  await tx.query('INSERT INTO build_completions (lease_id, holder, outcome, manifest_digest) VALUES ($1, $2, $3, $4)', [leaseId, workerId, body.outcome, digest]);
  await notify(tx, [buildWaitKey(ref)]);
  return { changed: true, ref };
}

/** Records a push made without a lease; the digest recorded for the key (the first one) is returned. */
export async function recordPush(tx: pg.PoolClient, workerId: string, req: RecordPushRequest): Promise<{ recorded: boolean; manifest_digest: string }> {
  const ref: ImageRef = { account: req.account, kind: req.kind, key: req.key };
  await lockKey(tx, ref);
  await tx.query(
    `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id, requirements_sha256, script_sha256, deps_key, pushed_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ${UPSERT_IMAGE_CONFLICT}`,
    [...keyArgs(ref), req.registry, req.manifest_digest, req.size_bytes, req.runtime, req.base_image_id, req.requirements_sha256, req.script_sha256, req.deps_key, workerId],
  );
  const now = await tx.query<{ manifest_digest: string }>(`SELECT manifest_digest FROM registry_images WHERE ${KEY_WHERE}`, keyArgs(ref));
  const digest = now.rows[0]!.manifest_digest;
  const recorded = digest === req.manifest_digest;
  if (recorded) {
    await tx.query(`DELETE FROM build_failures WHERE ${KEY_WHERE}`, keyArgs(ref));
    await notify(tx, [buildWaitKey(ref)]);
  }
  return { recorded, manifest_digest: digest };
}
