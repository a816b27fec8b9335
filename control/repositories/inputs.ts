import type { Db, Queryable } from '../db/pool.js';

export interface ManifestFileRow {
  name: string;
  sha256: string;
  size: number;
}

/** Blob visibility rows (per account) and input manifests. The bytes live in BlobStorage. */
export function createInputRepository(db: Db) {
  return {
    async hasBlob(account: string, sha256: string, q: Queryable = db): Promise<{ size_bytes: number } | undefined> {
      const { rows } = await q.query<{ size_bytes: number }>(
        'SELECT size_bytes FROM blobs WHERE account_id = $1 AND sha256 = $2',
        [account, sha256],
      );
      return rows[0];
    },

    /** Returns true when the row is new for this account. */
    async recordBlob(account: string, sha256: string, size: number, ref: string, q: Queryable = db): Promise<boolean> {
      const { rows } = await q.query<{ inserted: boolean }>(
        `INSERT INTO blobs (account_id, sha256, size_bytes, storage_ref) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id, sha256) DO UPDATE SET last_used_at = now()
         RETURNING (xmax = 0) AS inserted`,
        [account, sha256, size, ref],
      );
      return rows[0]?.inserted === true;
    },

    /**
     * What an account's blob rows add up to: its usage against the blob quota. A blob shared with other
     * accounts counts for each (each uploaded it). The primary key (account_id, sha256) serves the scan.
     */
    async usage(account: string, q: Queryable = db): Promise<{ bytes: number; count: number }> {
      const { rows } = await q.query<{ bytes: number; count: number }>(
        'SELECT coalesce(sum(size_bytes), 0)::bigint AS bytes, count(*)::int AS count FROM blobs WHERE account_id = $1',
        [account],
      );
      return rows[0] ?? { bytes: 0, count: 0 };
    },

    async touchBlob(account: string, sha256: string, q: Queryable = db): Promise<void> {
      await q.query('UPDATE blobs SET last_used_at = now() WHERE account_id = $1 AND sha256 = $2', [account, sha256]);
    },

    /** Records a manifest (idempotent: the same input_sha256 always has the same files). */
    async recordManifest(account: string, inputSha256: string, files: readonly ManifestFileRow[], q: Queryable): Promise<boolean> {
      const total = files.reduce((s, f) => s + f.size, 0);
      const { rows } = await q.query<{ inserted: boolean }>(
        `INSERT INTO input_manifests (account_id, input_sha256, file_count, total_size) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id, input_sha256) DO UPDATE SET last_used_at = now()
         RETURNING (xmax = 0) AS inserted`,
        [account, inputSha256, files.length, total],
      );
      const inserted = rows[0]?.inserted === true;
      if (inserted && files.length > 0) {
        await q.query(
          `INSERT INTO input_manifest_files (account_id, input_sha256, name, sha256, size_bytes)
           SELECT $1, $2, f.name, f.sha256, f.size FROM unnest($3::text[], $4::text[], $5::bigint[]) AS f(name, sha256, size)`,
          [account, inputSha256, files.map((f) => f.name), files.map((f) => f.sha256), files.map((f) => f.size)],
        );
      }
      return inserted;
    },

    async getManifest(account: string, inputSha256: string, q: Queryable = db): Promise<ManifestFileRow[] | undefined> {
      const head = await q.query('SELECT 1 FROM input_manifests WHERE account_id = $1 AND input_sha256 = $2', [account, inputSha256]);
      if (head.rowCount === 0) return undefined;
      const { rows } = await q.query<ManifestFileRow>(
        `SELECT name, sha256, size_bytes AS size FROM input_manifest_files
         WHERE account_id = $1 AND input_sha256 = $2 ORDER BY convert_to(name, 'UTF8')`,
        [account, inputSha256],
      );
      return rows;
    },

    /** The distinct blobs of `sha256s` this account has not stored. */
    async missingBlobs(account: string, sha256s: readonly string[], q: Queryable = db): Promise<string[]> {
      const { rows } = await q.query<{ sha256: string }>(
        `SELECT DISTINCT s.sha256 FROM unnest($2::text[]) AS s(sha256)
         WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = $1 AND b.sha256 = s.sha256)
         ORDER BY 1`,
        [account, sha256s],
      );
      return rows.map((r) => r.sha256);
    },
  };
}
export type InputRepository = ReturnType<typeof createInputRepository>;
