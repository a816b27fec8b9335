-- Up Migration
-- The control plane's first schema (docs/control.md, "Schema"). Read by node-pg-migrate from the source tree (see
-- control/db/migrate.ts); each migration runs in its own transaction.

CREATE TABLE accounts (
  account_id  text PRIMARY KEY,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens, stored as the sha256 of the secret: a database dump does not hand out credentials.
-- role 'admin' never appears here (the admin token comes from the environment or a credential file).
CREATE TABLE tokens (
  token_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  token_sha256 text NOT NULL UNIQUE,
  role         text NOT NULL CHECK (role IN ('scheduler', 'client', 'worker')),
  account_id   text NOT NULL REFERENCES accounts (account_id),
  worker_id    text,
  description  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz,
  revoked_at   timestamptz,
  CHECK ((role = 'worker') = (worker_id IS NOT NULL))
);
-- The accounts a worker serves are those of its live worker tokens.
CREATE INDEX tokens_worker_idx ON tokens (worker_id, account_id) WHERE worker_id IS NOT NULL;
-- Placement: the live workers serving an account.
CREATE INDEX tokens_account_idx ON tokens (account_id, role, worker_id);

CREATE TABLE workers (
  worker_id        text PRIMARY KEY,
  host             text NOT NULL,
  capacity         integer NOT NULL,
  labels           jsonb NOT NULL DEFAULT '{}',
  engine           jsonb NOT NULL DEFAULT '{}',
  disk_total_bytes bigint,
  disk_used_bytes  bigint,
  running          integer NOT NULL DEFAULT 0,
  load1            double precision,
  agent_version    text,
  registered_at    timestamptz NOT NULL DEFAULT now(),
  last_seen_at     timestamptz NOT NULL DEFAULT now(),
  -- NULL until a full snapshot arrived after the last registration: deltas before it are refused.
  snapshot_at      timestamptz
);
-- Placement scans live workers (last_seen_at within the dead-after window); cleanup finds silent ones.
CREATE INDEX workers_last_seen_idx ON workers (last_seen_at);

-- Image entries (kind 'image', key = image_key) and dependency-layer entries (kind 'deps', key =
-- deps_key) per account and per worker. One table so a sync batch touches one relation; the partial
-- indexes below keep the two lookups of resolve separate and index-only.
-- requirements_sha256 '' means "no requirements" so the lookups stay plain equality on a btree.
CREATE TABLE cache_entries (
  worker_id           text NOT NULL REFERENCES workers (worker_id) ON DELETE CASCADE,
  account_id          text NOT NULL REFERENCES accounts (account_id),
  kind                text NOT NULL CHECK (kind IN ('image', 'deps')),
  key                 text NOT NULL,
  image_id            text NOT NULL,
  runtime             text NOT NULL,
  requirements_sha256 text NOT NULL,
  script_sha256       text,
  deps_key            text,
  size_bytes          bigint NOT NULL,
  created_at          timestamptz NOT NULL,
  last_used_at        timestamptz NOT NULL,
  use_count           bigint NOT NULL DEFAULT 0,
  synced_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (worker_id, account_id, kind, key),
  CHECK (kind = 'deps' OR script_sha256 IS NOT NULL)
);
-- resolve: which workers hold the script image of (account, runtime, requirements, script).
CREATE INDEX cache_entries_image_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256, script_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at) WHERE kind = 'image';
-- resolve: which workers hold the dependency layer of (account, runtime, requirements).
CREATE INDEX cache_entries_deps_lookup_idx
  ON cache_entries (account_id, runtime, requirements_sha256)
  INCLUDE (worker_id, key, image_id, size_bytes, last_used_at) WHERE kind = 'deps';
-- cleanup: entries unused past the TTL.
CREATE INDEX cache_entries_last_used_idx ON cache_entries (last_used_at);

-- Op ids already applied per worker: a retried batch is skipped op by op, so the sync's at-least-once
-- delivery applies each op once (docs/control.md, "Endpoints": sync ops).
CREATE TABLE sync_applied_ops (
  worker_id  text NOT NULL REFERENCES workers (worker_id) ON DELETE CASCADE,
  op_id      text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (worker_id, op_id)
);
CREATE INDEX sync_applied_ops_applied_at_idx ON sync_applied_ops (applied_at);

-- Input blobs: the bytes are content-addressed and shared on disk (storage_ref); visibility is per
-- account, so an account only sees a blob after it uploaded the bytes itself.
CREATE TABLE blobs (
  account_id   text NOT NULL REFERENCES accounts (account_id),
  sha256       text NOT NULL,
  size_bytes   bigint NOT NULL,
  storage_ref  text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, sha256)
);
-- cleanup: is a byte file still referenced by any account?
CREATE INDEX blobs_sha256_idx ON blobs (sha256);
CREATE INDEX blobs_last_used_idx ON blobs (last_used_at);

CREATE TABLE input_manifests (
  account_id   text NOT NULL REFERENCES accounts (account_id),
  input_sha256 text NOT NULL,
  file_count   integer NOT NULL,
  total_size   bigint NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, input_sha256)
);
CREATE INDEX input_manifests_last_used_idx ON input_manifests (last_used_at);

CREATE TABLE input_manifest_files (
  account_id   text NOT NULL,
  input_sha256 text NOT NULL,
  name         text NOT NULL,
  sha256       text NOT NULL,
  size_bytes   bigint NOT NULL,
  PRIMARY KEY (account_id, input_sha256, name),
  FOREIGN KEY (account_id, input_sha256) REFERENCES input_manifests (account_id, input_sha256) ON DELETE CASCADE
);
-- cleanup: does any manifest of this account reference the blob?
CREATE INDEX input_manifest_files_blob_idx ON input_manifest_files (account_id, sha256);

-- Executions with the three cache-hit flags and timings. status/attempts/claimed_by/claim_expires_at
-- leave room for dispatch with claims (added by the next migration); this one only records and reads them.
CREATE TABLE executions (
  execution_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id           text NOT NULL REFERENCES accounts (account_id),
  status               text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled')),
  runtime              text NOT NULL,
  script_sha256        text NOT NULL,
  requirements_sha256  text,
  input_sha256         text,
  worker_id            text,
  exit_code            integer,
  script_cache_hit     boolean,
  dependency_cache_hit boolean,
  input_cache_hit      boolean,
  timings              jsonb NOT NULL DEFAULT '{}',
  error                text,
  attempts             integer NOT NULL DEFAULT 0,
  claimed_by           text,
  claim_expires_at     timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  finished_at          timestamptz
);
-- list by account, newest first, keyset-paginated on (created_at, execution_id).
CREATE INDEX executions_account_created_idx ON executions (account_id, created_at DESC, execution_id DESC);
-- hit rates in /metrics over a recent window.
CREATE INDEX executions_created_idx ON executions (created_at);

-- Down Migration
DROP TABLE executions;
DROP TABLE input_manifest_files;
DROP TABLE input_manifests;
DROP TABLE blobs;
DROP TABLE sync_applied_ops;
DROP TABLE cache_entries;
DROP TABLE workers;
DROP TABLE tokens;
DROP TABLE accounts;
