/**
 * The registry's share of cleanup (control/cleanup.ts): expired build leases, failures past their window
 * and old lease outcomes go inside the cleanup transaction; a registry image unused past the entry TTL
 * has its manifest deleted from the registry and then its row removed.
 *
 * The registry calls run after the cleanup transaction has committed, never inside it. Inside, each call
 * (up to its timeout, and a registry that is down makes every call wait that long) would keep the
 * transaction, its pool connection and the cleanup lock open, and every row lock taken so far would
 * hold back the agents' writes to those rows for as long. The price is a short window between reading a
 * candidate and deleting its manifest in which a worker may be told `pushed` for it; its pull then finds
 * the manifest gone and it builds instead (the pull is by digest and verified: it can fail, never
 * deliver a wrong image). The row is removed only for the very digest whose manifest was deleted.
 */
import type pg from 'pg';
import { isRgridError } from '../../common/errors.js';
import type { Db } from '../db/pool.js';
import { deleteManifest } from './registry-client.js';

export interface RegistryCleanupSettings {
  entryTtlMs: number;
  opRetentionMs: number;
  registry: string | null;
  registryAuthFile: string | null;
}

export interface UnusedImage {
  account: string;
  kind: 'image' | 'deps';
  key: string;
  manifest_digest: string;
  last_used_at: string;
}

export interface ExpiredBuildState {
  expired_leases: number;
  expired_failures: number;
  completions: number;
}

const secs = (ms: number): number => ms / 1000;

/** Leases nobody renews, failures past their window, lease outcomes older than the op retention. */
export async function removeExpiredBuildState(client: pg.PoolClient, settings: RegistryCleanupSettings): Promise<ExpiredBuildState> {
  const leases = await client.query('DELETE FROM build_leases WHERE expires_at <= now()');
  const failures = await client.query('DELETE FROM build_failures WHERE expires_at <= now()');
  const completions = await client.query('DELETE FROM build_completions WHERE completed_at < now() - make_interval(secs => $1)', [secs(settings.opRetentionMs)]);
  return { expired_leases: leases.rowCount ?? 0, expired_failures: failures.rowCount ?? 0, completions: completions.rowCount ?? 0 };
}

/**
 * Rows of the configured registry whose newest use (push, pull answered by acquire, or the newest
 * `last_used_at` of the key on any worker) is older than the entry TTL, with no live build lease.
 */
export async function unusedRegistryImages(client: pg.PoolClient, settings: RegistryCleanupSettings): Promise<UnusedImage[]> {
  if (settings.registry === null) return [];
  const res = await client.query<Omit<UnusedImage, 'last_used_at'> & { last_used_at: Date }>(
    `SELECT r.account_id AS account, r.kind, r.key, r.manifest_digest, greatest(r.pushed_at, r.last_pulled_at, u.last_used_at) AS last_used_at
     FROM registry_images r
     LEFT JOIN LATERAL (SELECT max(e.last_used_at) AS last_used_at FROM cache_entries e
                        WHERE e.account_id = r.account_id AND e.kind = r.kind AND e.key = r.key) u ON true
     WHERE r.registry = $1
       AND greatest(r.pushed_at, r.last_pulled_at, u.last_used_at) < now() - make_interval(secs => $2)
       AND NOT EXISTS (SELECT 1 FROM build_leases l WHERE l.account_id = r.account_id AND l.kind = r.kind AND l.key = r.key AND l.expires_at > now())
     ORDER BY r.account_id, r.kind, r.key`,
    [settings.registry, secs(settings.entryTtlMs)],
  );
  return res.rows.map((r) => ({ ...r, last_used_at: r.last_used_at.toISOString() }));
}

export interface ManifestDeletion {
  deleted: UnusedImage[];
  /** Kept for the next cleanup: the registry did not take the delete. */
  failed: Array<UnusedImage & { error: string }>;
}

/**
 * Deletes each image's manifest from the registry, then its row. The first failure ends the round: the
 * registry is down, refuses deletes or our credentials, and every further call would wait or fail the
 * same way; the rest are reported as not tried and stay for the next cleanup.
 */
export async function deleteUnusedManifests(db: Db, images: readonly UnusedImage[], settings: RegistryCleanupSettings): Promise<ManifestDeletion> {
  const result: ManifestDeletion = { deleted: [], failed: [] };
  const registry = settings.registry;
  if (registry === null) return result;
  let stopped: string | undefined;
  for (const image of images) {
    if (stopped !== undefined) {
      result.failed.push({ ...image, error: `not tried: ${stopped}` });
      continue;
    }
    try {
      await deleteManifest(registry, image.account, image.manifest_digest, { authFile: settings.registryAuthFile });
    } catch (err) {
      if (!isRgridError(err)) throw err;
      stopped = err.message;
      result.failed.push({ ...image, error: err.message });
      continue;
    }
    await db.query('DELETE FROM registry_images WHERE account_id = $1 AND kind = $2 AND key = $3 AND registry = $4 AND manifest_digest = $5', [
      image.account, image.kind, image.key, registry, image.manifest_digest,
    ]);
    result.deleted.push(image);
  }
  return result;
}
