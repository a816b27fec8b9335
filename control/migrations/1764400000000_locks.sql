-- Up Migration
-- Locks (docs/control.md, "Locks"): a worker resolves a requirements file to an exact set of pinned, hashed
-- distributions (common/lock.ts) and keys the dependency layer on it. The control plane cannot resolve;
-- it records which lock each cached layer and each run used, and placement prefers holders of the newest
-- lock known for a requirements file. Every column is NULL for rows from before locks (keyed on the text).

-- The lock a dependency layer installs; on an image entry, the lock of the layer it is built on.
ALTER TABLE cache_entries ADD COLUMN lock_sha256 text CHECK (lock_sha256 ~ '^[0-9a-f]{64}$');

-- The newest lock of (account, runtime, requirements): one probe of this index, whatever the number of
-- holders, since entries of both kinds carry the lock.
CREATE INDEX cache_entries_newest_lock_idx
  ON cache_entries (account_id, runtime, requirements_sha256, created_at DESC, lock_sha256 DESC)
  WHERE lock_sha256 IS NOT NULL;

-- The two lookups of resolve also read each holder's lock: the column joins their INCLUDE lists, so they
-- stay index-only.
DROP INDEX cache_entries_image_lookup_idx;
CREATE INDEX cache_entries_image_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256, script_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at, lock_sha256) WHERE kind = 'image';
DROP INDEX cache_entries_deps_lookup_idx;
CREATE INDEX cache_entries_deps_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at, lock_sha256) WHERE kind = 'deps';

-- The exact dependency set a run used: the lock's digest, its pins (`name==version`, sorted; at most the
-- 2000 distributions a lock may hold, each pin at most 200 characters) and how the lock was obtained.
ALTER TABLE executions
  ADD COLUMN lock_sha256 text CHECK (lock_sha256 ~ '^[0-9a-f]{64}$'),
  ADD COLUMN resolved    text[] CHECK (array_ndims(resolved) = 1 AND cardinality(resolved) <= 2000
                                       AND octet_length(array_to_string(resolved, '')) <= 2000 * 200),
  ADD COLUMN resolution  text CHECK (resolution IN ('locked', 'cached', 'resolved', 'stale'));

-- Down Migration
ALTER TABLE executions DROP COLUMN resolution, DROP COLUMN resolved, DROP COLUMN lock_sha256;
DROP INDEX cache_entries_deps_lookup_idx;
CREATE INDEX cache_entries_deps_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at) WHERE kind = 'deps';
DROP INDEX cache_entries_image_lookup_idx;
CREATE INDEX cache_entries_image_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256, script_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at) WHERE kind = 'image';
DROP INDEX cache_entries_newest_lock_idx;
ALTER TABLE cache_entries DROP COLUMN lock_sha256;
