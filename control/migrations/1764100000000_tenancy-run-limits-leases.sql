-- Up Migration
-- Tenancy, run limits and lease accounting (docs/operations.md "Tenancy and run limits", docs/dispatch.md).

-- A worker id belongs to one account: the account of its first worker token. Before this migration a
-- token of any account naming an existing worker id made that worker serve the account too, so another
-- tenant could borrow a worker (and with it the other accounts' blobs and work) by naming it.
CREATE TABLE worker_bindings (
  worker_id      text PRIMARY KEY,
  account_id     text NOT NULL REFERENCES accounts (account_id),
  bound_at       timestamptz NOT NULL DEFAULT now(),
  -- The token whose creation bound the worker id; NULL when this migration bound it from older tokens.
  bound_by_token uuid
);
CREATE INDEX worker_bindings_account_idx ON worker_bindings (account_id);

-- A worker serving another account is an operator's explicit decision, granted and revoked through the
-- admin API. Rows are never deleted: a revocation is recorded on the grant, so the table is the audit log.
CREATE TABLE worker_shares (
  share_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  worker_id     text NOT NULL REFERENCES worker_bindings (worker_id),
  account_id    text NOT NULL REFERENCES accounts (account_id),
  granted_at    timestamptz NOT NULL DEFAULT now(),
  granted_by    text NOT NULL,
  reason        text NOT NULL,
  revoked_at    timestamptz,
  revoked_by    text,
  revoke_reason text,
  CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
-- At most one standing grant of a worker to an account.
CREATE UNIQUE INDEX worker_shares_active_idx ON worker_shares (worker_id, account_id) WHERE revoked_at IS NULL;
CREATE INDEX worker_shares_account_idx ON worker_shares (account_id) WHERE revoked_at IS NULL;

-- Existing installations keep working: each worker id is bound to the account of its oldest token, and
-- every other account with a live token of that worker gets a grant recorded as made by this migration
-- (visible, and revocable, like any other).
INSERT INTO worker_bindings (worker_id, account_id, bound_at)
SELECT DISTINCT ON (worker_id) worker_id, account_id, created_at
FROM tokens WHERE role = 'worker'
ORDER BY worker_id, created_at, token_id;

INSERT INTO worker_shares (worker_id, account_id, granted_by, reason)
SELECT DISTINCT t.worker_id, t.account_id, 'migration',
  'the worker had a live token of this account before worker ids were bound to one account'
FROM tokens t JOIN worker_bindings b ON b.worker_id = t.worker_id
WHERE t.role = 'worker' AND t.account_id <> b.account_id
  AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());

-- The one definition of which accounts a live worker token serves; token lookups (auth) and placement
-- (the live workers serving an account) both read it, so they cannot disagree:
--   the owner's token serves the owner and every account the worker is shared to;
--   a token of an account the worker is shared to serves that account only, while the grant stands.
CREATE VIEW live_worker_token_accounts AS
  SELECT t.token_id, t.worker_id, t.account_id
  FROM tokens t JOIN worker_bindings b ON b.worker_id = t.worker_id AND b.account_id = t.account_id
  WHERE t.role = 'worker' AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
  UNION ALL
  SELECT t.token_id, t.worker_id, s.account_id
  FROM tokens t
    JOIN worker_bindings b ON b.worker_id = t.worker_id AND b.account_id = t.account_id
    JOIN worker_shares s ON s.worker_id = t.worker_id AND s.revoked_at IS NULL
  WHERE t.role = 'worker' AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
  UNION ALL
  SELECT t.token_id, t.worker_id, t.account_id
  FROM tokens t JOIN worker_shares s ON s.worker_id = t.worker_id AND s.account_id = t.account_id AND s.revoked_at IS NULL
  WHERE t.role = 'worker' AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());

-- The token a worker's agent last authenticated with (register, heartbeat, claim, renew). Placement puts
-- an account's work only on workers whose agent's token serves that account: with a worker shared to
-- several accounts, the owner's token and a shared account's token serve different sets. NULL until the
-- agent next reports after this migration (then any live token of the worker counts, as before).
ALTER TABLE workers ADD COLUMN token_id uuid;

-- Per-account run ceilings set by the operator; a NULL column falls back to the configured default.
CREATE TABLE account_run_limits (
  account_id   text PRIMARY KEY REFERENCES accounts (account_id),
  memory_mb    integer CHECK (memory_mb >= 16),
  timeout_s    double precision CHECK (timeout_s > 0),
  max_attempts integer CHECK (max_attempts BETWEEN 1 AND 20),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  updated_by   text NOT NULL,
  reason       text
);

-- When some control-plane replica last proved it was up (every replica writes it about once a second).
-- A gap in it is time during which no renewal could be accepted: leases are extended by that gap.
CREATE TABLE dispatch_clock (
  id            boolean PRIMARY KEY DEFAULT true CHECK (id),
  last_alive_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dispatch_clock DEFAULT VALUES;

-- A script that wrote more output than allowed has a result (failed), like a timeout.
ALTER TABLE executions DROP CONSTRAINT executions_failure_check;
ALTER TABLE executions ADD CONSTRAINT executions_failure_check
  CHECK (failure IN ('nonzero_exit', 'timeout', 'memory_limit', 'output_limit', 'build_failed', 'input_unavailable', 'lost', 'error'));

-- Down Migration
ALTER TABLE executions DROP CONSTRAINT executions_failure_check;
ALTER TABLE executions ADD CONSTRAINT executions_failure_check
  CHECK (failure IN ('nonzero_exit', 'timeout', 'memory_limit', 'build_failed', 'input_unavailable', 'lost', 'error'));
DROP TABLE dispatch_clock;
DROP TABLE account_run_limits;
ALTER TABLE workers DROP COLUMN token_id;
DROP VIEW live_worker_token_accounts;
DROP TABLE worker_shares;
DROP TABLE worker_bindings;
