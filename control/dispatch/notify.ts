/**
 * Dispatch's wake-up channel: PostgreSQL NOTIFY on one channel, so a change made through any replica
 * wakes the long polls held by every replica (control/dispatch/plugin.ts listens). Sent inside the
 * writing transaction: PostgreSQL delivers it at commit, never for a change that was rolled back.
 */
import type pg from 'pg';

export const CHANNEL = 'rgrid_dispatch';

/** Notification keys: `w:<worker>` new work for a worker, `*` unplaced work, `x:<execution>` finished. */
export async function notify(q: pg.PoolClient | pg.Pool, keys: readonly string[]): Promise<void> {
  for (const key of new Set(keys)) await q.query('SELECT pg_notify($1, $2)', [CHANNEL, key]);
}
