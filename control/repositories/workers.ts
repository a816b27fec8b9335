import { RgridError } from '../../common/errors.js';
import type { Db, Queryable } from '../db/pool.js';
import type { HeartbeatRequest, RegisterWorkerRequest } from '../../common/wire/control-api.js';

export interface WorkerRow {
  worker_id: string;
  host: string;
  capacity: number;
  labels: Record<string, string>;
  engine: Record<string, unknown>;
  disk_total_bytes: number | null;
  disk_used_bytes: number | null;
  running: number;
  load1: number | null;
  agent_version: string | null;
  registered_at: Date;
  last_seen_at: Date;
  snapshot_at: Date | null;
  /** The token its agent last authenticated with (null: not reported since the upgrade that added it). */
  token_id: string | null;
  /** When its agent said it is stopping (null: not leaving); placement skips it from then on. */
  leaving_at: Date | null;
}

/** Who a worker id belongs to (bound by its first worker token). */
export interface WorkerBinding {
  worker_id: string;
  account: string;
  bound_at: Date;
  bound_by_token: string | null;
}

/** One grant of a worker to another account; revoked grants stay as the audit record. */
export interface WorkerShare {
  share_id: string;
  worker_id: string;
  account: string;
  granted_at: Date;
  granted_by: string;
  reason: string;
  revoked_at: Date | null;
  revoked_by: string | null;
  revoke_reason: string | null;
}

const SHARE_COLUMNS = `share_id, worker_id, account_id AS account, granted_at, granted_by, reason, revoked_at, revoked_by, revoke_reason`;

export function createWorkerRepository(db: Db) {
  return {
    /**
     * Registration starts a new sync session: the row is created or refreshed and `snapshot_at` is
     * cleared, so deltas are refused until the agent has sent the full snapshot that follows. It also
     * clears `leaving_at`: an agent that registers has started (again) and takes work.
     */
    async register(workerId: string, body: RegisterWorkerRequest, tokenId: string, q: Queryable = db): Promise<{ known: boolean }> {
      const { rows } = await q.query<{ inserted: boolean }>(
        `INSERT INTO workers (worker_id, host, capacity, labels, engine, disk_total_bytes, disk_used_bytes, running, load1, agent_version, token_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host, capacity = EXCLUDED.capacity,
           labels = EXCLUDED.labels, engine = EXCLUDED.engine, disk_total_bytes = EXCLUDED.disk_total_bytes,
           disk_used_bytes = EXCLUDED.disk_used_bytes, running = EXCLUDED.running, load1 = EXCLUDED.load1,
           agent_version = EXCLUDED.agent_version, token_id = EXCLUDED.token_id, registered_at = now(), last_seen_at = now(),
           snapshot_at = NULL, leaving_at = NULL
         RETURNING (xmax = 0) AS inserted`,
        [
          workerId, body.host, body.capacity, JSON.stringify(body.labels ?? {}), JSON.stringify(body.engine ?? {}),
          body.disk?.total_bytes ?? null, body.disk?.used_bytes ?? null, body.load?.running ?? 0, body.load?.load1 ?? null,
          body.agent_version ?? null, tokenId,
        ],
      );
      return { known: rows[0]?.inserted === false };
    },

    /**
     * Returns undefined for a worker the control plane does not know (it must register again). Records the
     * token the agent uses: placement follows the accounts that token serves.
     */
    async heartbeat(workerId: string, body: HeartbeatRequest, tokenId: string, q: Queryable = db): Promise<{ snapshotAt: Date | null } | undefined> {
      const { rows } = await q.query<{ snapshot_at: Date | null }>(
        `UPDATE workers SET last_seen_at = now(), running = $2, load1 = $3,
           disk_total_bytes = coalesce($4, disk_total_bytes), disk_used_bytes = coalesce($5, disk_used_bytes), token_id = $6
         WHERE worker_id = $1 RETURNING snapshot_at`,
        [workerId, body.load.running, body.load.load1 ?? null, body.disk?.total_bytes ?? null, body.disk?.used_bytes ?? null, tokenId],
      );
      return rows[0] ? { snapshotAt: rows[0].snapshot_at } : undefined;
    },

    /**
     * Locks the worker's row for the rest of the transaction: sync batches of one worker apply one after
     * the other (in arrival order), never interleaved. Also counts as a sign of life.
     */
    async lockForSync(workerId: string, q: Queryable): Promise<{ snapshotAt: Date | null } | undefined> {
      const { rows } = await q.query<{ snapshot_at: Date | null }>(
        `UPDATE workers SET last_seen_at = now() WHERE worker_id = $1 RETURNING snapshot_at`,
        [workerId],
      );
      return rows[0] ? { snapshotAt: rows[0].snapshot_at } : undefined;
    },

    async markSnapshot(workerId: string, q: Queryable): Promise<void> {
      await q.query('UPDATE workers SET snapshot_at = now() WHERE worker_id = $1', [workerId]);
    },

    async get(workerId: string, q: Queryable = db): Promise<WorkerRow | undefined> {
      const { rows } = await q.query<WorkerRow>('SELECT * FROM workers WHERE worker_id = $1', [workerId]);
      return rows[0];
    },

    async binding(workerId: string, q: Queryable = db): Promise<WorkerBinding | undefined> {
      const { rows } = await q.query<WorkerBinding>(
        'SELECT worker_id, account_id AS account, bound_at, bound_by_token FROM worker_bindings WHERE worker_id = $1',
        [workerId],
      );
      return rows[0];
    },

    /** Every grant of this worker, standing ones first, then the revoked ones newest first. */
    async shares(workerId: string, q: Queryable = db): Promise<WorkerShare[]> {
      const { rows } = await q.query<WorkerShare>(
        `SELECT ${SHARE_COLUMNS} FROM worker_shares WHERE worker_id = $1
         ORDER BY revoked_at IS NOT NULL, coalesce(revoked_at, granted_at) DESC, account_id`,
        [workerId],
      );
      return rows;
    },

    /**
     * Grants a share of `workerId` to `account` (inside the caller's transaction, the binding row locked so
     * grants of one worker apply one at a time). Returns the standing grant and whether it is new; undefined
     * when the worker id has no owner yet; conflict when `account` is the owner.
     */
    async grantShare(
      workerId: string, account: string, grantedBy: string, reason: string, q: Queryable,
    ): Promise<{ share: WorkerShare; created: boolean } | undefined> {
      const { rows: bound } = await q.query<{ owner: string }>(
        'SELECT account_id AS owner FROM worker_bindings WHERE worker_id = $1 FOR UPDATE', [workerId],
      );
      const owner = bound[0]?.owner;
      if (owner === undefined) return undefined;
      if (owner === account) throw new RgridError('conflict', `worker ${workerId} belongs to account ${account} already; a share is for another account`);
      const { rows: standing } = await q.query<WorkerShare>(
        `SELECT ${SHARE_COLUMNS} FROM worker_shares WHERE worker_id = $1 AND account_id = $2 AND revoked_at IS NULL`,
        [workerId, account],
      );
      if (standing[0]) return { share: standing[0], created: false };
      await q.query('INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING', [account]);
      const { rows } = await q.query<WorkerShare>(
        `INSERT INTO worker_shares (worker_id, account_id, granted_by, reason) VALUES ($1, $2, $3, $4) RETURNING ${SHARE_COLUMNS}`,
        [workerId, account, grantedBy, reason],
      );
      return { share: rows[0]!, created: true };
    },

    /** Ends the standing share of `workerId` to `account`; undefined when there is none. */
    async revokeShare(workerId: string, account: string, revokedBy: string, reason: string | null, q: Queryable): Promise<WorkerShare | undefined> {
      await q.query('SELECT 1 FROM worker_bindings WHERE worker_id = $1 FOR UPDATE', [workerId]);
      const { rows } = await q.query<WorkerShare>(
        `UPDATE worker_shares SET revoked_at = now(), revoked_by = $3, revoke_reason = $4
         WHERE worker_id = $1 AND account_id = $2 AND revoked_at IS NULL RETURNING ${SHARE_COLUMNS}`,
        [workerId, account, revokedBy, reason],
      );
      return rows[0];
    },

    async list(q: Queryable = db): Promise<WorkerRow[]> {
      const { rows } = await q.query<WorkerRow>('SELECT * FROM workers ORDER BY worker_id');
      return rows;
    },
  };
}
export type WorkerRepository = ReturnType<typeof createWorkerRepository>;
