/**
 * Cleanup: entries and manifests unused past the TTL, workers silent past the
 * retention, applied op ids past their retention, and blobs no manifest of their account references.
 *
 * Everything runs in one transaction under an advisory lock, so two replicas never clean at once. A dry
 * run executes the very same DELETE ... RETURNING statements and rolls back: what it reports is exactly
 * what a real run would remove at that instant. Byte files are unlinked only for blobs no account
 * references any more, while holding the blob's advisory lock that uploads also take.
 *
 * Registry images (control/registry/lifecycle.ts): expired build leases and failures go in the same
 * transaction; the manifests of images unused past the TTL are deleted from the registry after it has
 * committed (a dry run only lists them), each row removed once its manifest is gone.
 */
import type { Db } from './db/pool.js';
import type { BlobStorage } from './storage/blob-storage.js';
import { deleteUnusedManifests, removeExpiredBuildState, unusedRegistryImages, type RegistryCleanupSettings, type UnusedImage } from './registry/lifecycle.js';

export const CLEANUP_LOCK_ID = 7_243_001;
/** Namespace of the per-blob advisory locks shared with uploads (two-int form: namespace, hashtext). */
export const BLOB_LOCK_NAMESPACE = 7243;
const MAX_ITEMS = 1000;

export interface CleanupSettings extends RegistryCleanupSettings {
  entryTtlMs: number;
  workerRetentionMs: number;
  opRetentionMs: number;
  blobGraceMs: number;
}

export interface Section<T> {
  count: number;
  items: T[];
  truncated: boolean;
}

export interface CleanupReport {
  dry_run: boolean;
  /** true when another process held the cleanup lock and `wait` was false. */
  skipped: boolean;
  at: string;
  settings: { entry_ttl_ms: number; worker_retention_ms: number; op_retention_ms: number; blob_grace_ms: number };
  entries: Section<{ worker_id: string; account: string; kind: string; key: string; last_used_at: string }>;
  workers: Section<{ worker_id: string; last_seen_at: string }>;
  manifests: Section<{ account: string; input_sha256: string }>;
  blobs: Section<{ account: string; sha256: string; size_bytes: number }> & { bytes: number };
  blob_files: Section<string>;
  applied_ops: { count: number };
  registry_images: {
    /** The registry cleaned (--registry); null: its images are left alone. */
    registry: string | null;
    /** Manifests deleted (or found already gone) and their rows removed; in a dry run, those that would be. */
    deleted: Section<UnusedImage>;
    /** Rows kept because the registry did not take the delete (down, deletes disabled, credentials): the next cleanup retries. */
    failed: Section<UnusedImage & { error: string }>;
    expired_leases: number;
    expired_failures: number;
    completions: number;
  };
}

function section<T>(rows: T[]): Section<T> {
  return { count: rows.length, items: rows.slice(0, MAX_ITEMS), truncated: rows.length > MAX_ITEMS };
}

const empty = <T>(): Section<T> => ({ count: 0, items: [], truncated: false });
const secs = (ms: number): number => ms / 1000;

export async function runCleanup(
  db: Db,
  storage: BlobStorage,
  settings: CleanupSettings,
  opts: { dryRun: boolean; wait: boolean },
): Promise<CleanupReport> {
  const client = await db.connect();
  const report: CleanupReport = {
    dry_run: opts.dryRun,
    skipped: false,
    at: new Date().toISOString(),
    settings: { entry_ttl_ms: settings.entryTtlMs, worker_retention_ms: settings.workerRetentionMs, op_retention_ms: settings.opRetentionMs, blob_grace_ms: settings.blobGraceMs },
    entries: empty(), workers: empty(), manifests: empty(), blobs: { ...empty(), bytes: 0 }, blob_files: empty(), applied_ops: { count: 0 },
    registry_images: { registry: settings.registry, deleted: empty(), failed: empty(), expired_leases: 0, expired_failures: 0, completions: 0 },
  };
  let unused: UnusedImage[] = [];
  try {
    await client.query('BEGIN');
    const lock = await client.query<{ ok: boolean }>(
      opts.wait ? 'SELECT pg_advisory_xact_lock($1) IS NULL AS ok' : 'SELECT pg_try_advisory_xact_lock($1) AS ok',
      [CLEANUP_LOCK_ID],
    );
    if (!opts.wait && !lock.rows[0]?.ok) {
      await client.query('ROLLBACK');
      return { ...report, skipped: true };
    }
    const at = await client.query<{ now: Date }>('SELECT now()');
    report.at = at.rows[0]!.now.toISOString();

    const entries = await client.query<CleanupReport['entries']['items'][number]>(
      `DELETE FROM cache_entries WHERE last_used_at < now() - make_interval(secs => $1)
       RETURNING worker_id, account_id AS account, kind, key, last_used_at`,
      [secs(settings.entryTtlMs)],
    );
    report.entries = section(entries.rows);
    const workers = await client.query<CleanupReport['workers']['items'][number]>(
      `DELETE FROM workers WHERE last_seen_at < now() - make_interval(secs => $1) RETURNING worker_id, last_seen_at`,
      [secs(settings.workerRetentionMs)],
    );
    report.workers = section(workers.rows);
    const ops = await client.query('DELETE FROM sync_applied_ops WHERE applied_at < now() - make_interval(secs => $1)', [secs(settings.opRetentionMs)]);
    report.applied_ops = { count: ops.rowCount ?? 0 };
    const manifests = await client.query<CleanupReport['manifests']['items'][number]>(
      `DELETE FROM input_manifests WHERE last_used_at < now() - make_interval(secs => $1) RETURNING account_id AS account, input_sha256`,
      [secs(settings.entryTtlMs)],
    );
    report.manifests = section(manifests.rows);
    // A blob is kept while a manifest of its account names it; a fresh upload gets a grace period
    // because clients upload blobs just before (or after) recording the manifest.
    const blobs = await client.query<{ account: string; sha256: string; size_bytes: number }>(
      `DELETE FROM blobs b WHERE b.created_at < now() - make_interval(secs => $1) AND b.last_used_at < now() - make_interval(secs => $1)
         AND NOT EXISTS (SELECT 1 FROM input_manifest_files f WHERE f.account_id = b.account_id AND f.sha256 = b.sha256)
       RETURNING account_id AS account, sha256, size_bytes`,
      [secs(settings.blobGraceMs)],
    );
    report.blobs = { ...section(blobs.rows), bytes: blobs.rows.reduce((s, r) => s + r.size_bytes, 0) };
    const candidates = [...new Set(blobs.rows.map((r) => r.sha256))].sort();
    const orphans: string[] = [];
    for (const sha of candidates) {
      // Same lock as an upload of this sha256: an upload cannot put the file back between our check
      // and the unlink, and it waits for our commit before re-creating the file.
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [BLOB_LOCK_NAMESPACE, sha]);
      const still = await client.query('SELECT 1 FROM blobs WHERE sha256 = $1 LIMIT 1', [sha]);
      if (still.rowCount === 0) orphans.push(sha);
    }
    report.blob_files = section(orphans);
    const expired = await removeExpiredBuildState(client, settings);
    report.registry_images = { ...report.registry_images, ...expired };
    unused = await unusedRegistryImages(client, settings);
    if (opts.dryRun) {
      report.registry_images.deleted = section(unused);
      await client.query('ROLLBACK');
    } else {
      for (const sha of orphans) await storage.delete(sha);
      await client.query('COMMIT');
    }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  if (!opts.dryRun && unused.length > 0) {
    // After the commit, with the connection handed back: see control/registry/lifecycle.ts for why.
    const { deleted, failed } = await deleteUnusedManifests(db, unused, settings);
    report.registry_images.deleted = section(deleted);
    report.registry_images.failed = section(failed);
  }
  return report;
}
