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
}

export function createWorkerRepository(db: Db) {
  return {
    /**
     * Registration starts a new sync session: the row is created or refreshed and `snapshot_at` is
     * cleared, so deltas are refused until the agent has sent the full snapshot that follows.
     */
    async register(workerId: string, body: RegisterWorkerRequest, q: Queryable = db): Promise<{ known: boolean }> {
      const { rows } = await q.query<{ inserted: boolean }>(
        `INSERT INTO workers (worker_id, host, capacity, labels, engine, disk_total_bytes, disk_used_bytes, running, load1, agent_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host, capacity = EXCLUDED.capacity,
           labels = EXCLUDED.labels, engine = EXCLUDED.engine, disk_total_bytes = EXCLUDED.disk_total_bytes,
           disk_used_bytes = EXCLUDED.disk_used_bytes, running = EXCLUDED.running, load1 = EXCLUDED.load1,
           agent_version = EXCLUDED.agent_version, registered_at = now(), last_seen_at = now(), snapshot_at = NULL
         RETURNING (xmax = 0) AS inserted`,
        [
          workerId, body.host, body.capacity, JSON.stringify(body.labels ?? {}), JSON.stringify(body.engine ?? {}),
          body.disk?.total_bytes ?? null, body.disk?.used_bytes ?? null, body.load?.running ?? 0, body.load?.load1 ?? null,
          body.agent_version ?? null,
        ],
      );
      return { known: rows[0]?.inserted === false };
    },

    /** Returns undefined for a worker the control plane does not know (it must register again). */
    async heartbeat(workerId: string, body: HeartbeatRequest, q: Queryable = db): Promise<{ snapshotAt: Date | null } | undefined> {
      const { rows } = await q.query<{ snapshot_at: Date | null }>(
        `UPDATE workers SET last_seen_at = now(), running = $2, load1 = $3,
           disk_total_bytes = coalesce($4, disk_total_bytes), disk_used_bytes = coalesce($5, disk_used_bytes)
         WHERE worker_id = $1 RETURNING snapshot_at`,
        [workerId, body.load.running, body.load.load1 ?? null, body.disk?.total_bytes ?? null, body.disk?.used_bytes ?? null],
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

    async list(q: Queryable = db): Promise<WorkerRow[]> {
      const { rows } = await q.query<WorkerRow>('SELECT * FROM workers ORDER BY worker_id');
      return rows;
    },
  };
}
export type WorkerRepository = ReturnType<typeof createWorkerRepository>;
