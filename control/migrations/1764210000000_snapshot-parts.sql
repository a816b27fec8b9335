-- Up Migration
-- Snapshots in parts (docs/control.md, "Snapshots in parts"). A worker whose full snapshot does not fit in
-- one request body sends it as numbered parts of one snapshot id; the entries it lists are written part
-- by part, and the worker's other entries of the snapshot's accounts are removed only when the final part
-- arrives. A snapshot sent in one request is a snapshot of one part.

-- The snapshot that last wrote an entry: the final part removes the entries of its accounts that none of
-- its parts wrote. NULL for entries written by sync ops (or before this migration).
ALTER TABLE cache_entries ADD COLUMN snapshot_id uuid;

-- The snapshots of each worker, newest last (seq). Parts are accepted for the newest snapshot of the
-- worker's current registration only, in order (next_part); a part of a snapshot that a newer one, or a
-- new registration, has superseded is refused and changes nothing. A few finished or superseded rows are
-- kept per worker, so that a late retry of their parts is recognised rather than taken for a new snapshot.
CREATE TABLE sync_snapshots (
  worker_id     text NOT NULL REFERENCES workers (worker_id) ON DELETE CASCADE,
  snapshot_id   uuid NOT NULL,
  seq           bigint GENERATED ALWAYS AS IDENTITY,
  -- workers.registered_at when the first part arrived: a registration since then supersedes the snapshot.
  registered_at timestamptz NOT NULL,
  accounts      text[] NOT NULL,
  -- Parts 0 .. next_part - 1 are applied.
  next_part     integer NOT NULL DEFAULT 0 CHECK (next_part >= 0),
  -- Entries written by its parts (a retried part counts once) and entries its final part removed.
  entries       bigint NOT NULL DEFAULT 0,
  removed       bigint NOT NULL DEFAULT 0,
  started_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz,
  PRIMARY KEY (worker_id, snapshot_id)
);
CREATE INDEX sync_snapshots_worker_seq_idx ON sync_snapshots (worker_id, seq);

-- Down Migration
DROP TABLE sync_snapshots;
ALTER TABLE cache_entries DROP COLUMN snapshot_id;
