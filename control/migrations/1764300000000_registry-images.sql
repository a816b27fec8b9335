-- Up Migration
-- Images shared between workers through an OCI registry (docs/architecture.md, "Images in the registry").

-- Where a run's image came from on its worker: local (a hit), pulled (from the registry), built.
ALTER TABLE executions ADD COLUMN image_origin text CHECK (image_origin IN ('local', 'pulled', 'built'));

-- One row per (account, kind, key) pushed to the registry: the manifest digest the builder pushed is what
-- every puller asks for (never the tag). The first push is authoritative: a later push of the same key
-- does not replace the digest. The descriptive columns let placement match a submission (runtime, script,
-- requirements) to images in the registry without knowing the key.
CREATE TABLE registry_images (
  account_id          text NOT NULL,
  kind                text NOT NULL CHECK (kind IN ('image', 'deps')),
  key                 text NOT NULL,
  registry            text NOT NULL,
  manifest_digest     text NOT NULL,
  size_bytes          bigint CHECK (size_bytes >= 0),
  runtime             text NOT NULL,
  base_image_id       text NOT NULL,
  requirements_sha256 text,
  script_sha256       text,
  deps_key            text,
  pushed_by           text NOT NULL,
  pushed_at           timestamptz NOT NULL DEFAULT now(),
  last_pulled_at      timestamptz,
  PRIMARY KEY (account_id, kind, key)
);
CREATE INDEX registry_images_script ON registry_images (account_id, runtime, script_sha256) WHERE kind = 'image';
CREATE INDEX registry_images_requirements ON registry_images (account_id, runtime, requirements_sha256) WHERE kind = 'deps';

-- The grid-wide build lease: at most one worker builds a missing (account, kind, key) at a time. A lease
-- that is not renewed expires and the next worker that asks takes it over (attempt + 1).
CREATE TABLE build_leases (
  account_id          text NOT NULL,
  kind                text NOT NULL CHECK (kind IN ('image', 'deps')),
  key                 text NOT NULL,
  lease_id            uuid NOT NULL UNIQUE,
  holder              text NOT NULL,
  registry            text NOT NULL,
  runtime             text NOT NULL,
  base_image_id       text NOT NULL,
  requirements_sha256 text,
  script_sha256       text,
  deps_key            text,
  attempt             integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
  acquired_at         timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz NOT NULL,
  PRIMARY KEY (account_id, kind, key)
);

-- A build that failed (bad requirements): every worker asking for the key within the failure window gets
-- this answer instead of building again.
CREATE TABLE build_failures (
  account_id  text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('image', 'deps')),
  key         text NOT NULL,
  error       text NOT NULL,
  message     text NOT NULL,
  log_tail    text NOT NULL,
  failed_by   text NOT NULL,
  failed_at   timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  PRIMARY KEY (account_id, kind, key)
);

-- The outcome of every completed lease, kept for a while (cleanup removes it with the applied op ids) so
-- that an agent repeating a complete after an outage (it never saw the answer) is told ok, and a
-- different outcome for the same lease is a conflict.
CREATE TABLE build_completions (
  lease_id         uuid PRIMARY KEY,
  holder           text NOT NULL,
  outcome          text NOT NULL CHECK (outcome IN ('pushed', 'failed', 'released')),
  manifest_digest  text,
  completed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX build_completions_completed_at ON build_completions (completed_at);

-- Down Migration
DROP TABLE build_completions;
DROP TABLE build_failures;
DROP TABLE build_leases;
DROP TABLE registry_images;
ALTER TABLE executions DROP COLUMN image_origin;
