-- Up Migration
-- A worker that is stopping (its agent got SIGTERM) says so before it drains: from then on placement does
-- not pick it and work assigned to it but not yet claimed is placed again, while the claims it holds are
-- renewed and completed as before (docs/dispatch.md, "Stopping"). NULL: not leaving. Only a registration
-- (an agent that starts again) clears it; heartbeats, renewals, results and sync batches leave it alone.
ALTER TABLE workers ADD COLUMN leaving_at timestamptz;

-- Down Migration
ALTER TABLE workers DROP COLUMN leaving_at;
