/**
 * Dispatch's process-wide parts: wake-ups for long polls (PostgreSQL LISTEN/NOTIFY on one held
 * connection, so a submit on any replica wakes the claim waiting on another) and the sweep that
 * re-queues expired claims and work stranded on dead workers. Waiters also wake on a short timer, so a
 * lost notification (the LISTEN connection dropped and came back) costs a second, never a stuck claim.
 */
import fp from 'fastify-plugin';
import type pg from 'pg';
import { withTransaction } from '../db/pool.js';
import { chooseWorker } from './choose-worker.js';
import { giveUp, lockExpiredClaims, lockStrandedAssignments, requeue, type RequeueRow } from './repository.js';

export const CHANNEL = 'rgrid_dispatch';
/** Fallback poll period of every waiter. */
export const POLL_MS = 1000;

export interface Dispatch {
  /** Resolves on a notification for one of `keys`, after `ms`, or when the app closes. */
  wait(keys: readonly string[], ms: number): Promise<void>;
  readonly closing: boolean;
  /** Places an execution that left a claim or a dead worker's queue again, or fails it when out of attempts. */
  replace(tx: pg.PoolClient, row: RequeueRow, lostBy: string | null, reason: string): Promise<void>;
  sweep(): Promise<{ expired: number; stranded: number }>;
}

declare module 'fastify' {
  interface FastifyInstance {
    dispatch: Dispatch;
  }
}

/** Notification keys: `w:<worker>` new work for a worker, `*` unplaced work, `x:<execution>` finished. */
export async function notify(q: pg.PoolClient | pg.Pool, keys: readonly string[]): Promise<void> {
  for (const key of new Set(keys)) await q.query('SELECT pg_notify($1, $2)', [CHANNEL, key]);
}

export default fp(
  (app, _opts, done) => {
    const waiters = new Map<string, Set<() => void>>();
    let closing = false;
    let listener: pg.PoolClient | undefined;
    let timer: NodeJS.Timeout | undefined;
    let sweeping: Promise<unknown> | undefined;

    const wake = (key: string): void => {
      for (const fn of waiters.get(key) ?? []) fn();
    };

    async function listen(): Promise<void> {
      if (closing) return;
      try {
        const client = await app.db.connect();
        client.on('notification', (msg) => {
          if (msg.channel === CHANNEL && msg.payload) wake(msg.payload);
        });
        client.on('error', () => {
          // The connection broke: drop it and listen again shortly; waiters keep polling meanwhile. A
          // connection already handed back (the app closed, then the server went away) is not released twice.
          if (listener !== client) return;
          listener = undefined;
          client.release(true);
          if (!closing) setTimeout(() => void listen(), POLL_MS).unref();
        });
        listener = client;
        await client.query(`LISTEN ${CHANNEL}`);
      } catch (err) {
        const broken = listener;
        listener = undefined;
        broken?.release(true);
        app.log.warn({ err }, 'dispatch LISTEN failed; long polls fall back to polling');
        setTimeout(() => void listen(), 5 * POLL_MS).unref();
      }
    }

    async function replace(tx: pg.PoolClient, row: RequeueRow, lostBy: string | null, reason: string): Promise<void> {
      if (lostBy !== null && row.attempts >= row.max_attempts) {
        await giveUp(tx, row, `${reason}; gave up after ${row.attempts} attempt(s)`);
        await notify(tx, [`x:${row.execution_id}`]);
        return;
      }
      const avoid = lostBy === null ? row.lost_by : [...row.lost_by, lostBy];
      const workerId = await chooseWorker(app.db, tx, {
        account: row.account, runtime: row.runtime, scriptSha256: row.script_sha256, requirementsSha256: row.requirements_sha256, avoid,
      }, app.config);
      await requeue(tx, row, workerId, lostBy);
      await notify(tx, [workerId ? `w:${workerId}` : '*']);
      app.log.info({ execution_id: row.execution_id, from: row.worker_id, to: workerId, attempts: row.attempts, reason }, 'execution re-queued');
    }

    async function sweep(): Promise<{ expired: number; stranded: number }> {
      const expired = await withTransaction(app.db, async (tx) => {
        const rows = await lockExpiredClaims(tx, 100);
        for (const row of rows) await replace(tx, row, row.worker_id, `worker ${row.worker_id ?? '?'} stopped renewing its claim`);
        return rows.length;
      });
      const stranded = await withTransaction(app.db, async (tx) => {
        const rows = await lockStrandedAssignments(tx, app.config.workerDeadAfterMs, 100);
        for (const row of rows) await replace(tx, row, null, `worker ${row.worker_id ?? '?'} went silent before claiming`);
        return rows.length;
      });
      return { expired, stranded };
    }

    app.decorate<Dispatch>('dispatch', {
      get closing() {
        return closing;
      },
      wait(keys, ms) {
        if (closing || ms <= 0) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const finish = (): void => {
            clearTimeout(t);
            for (const key of keys) waiters.get(key)?.delete(finish);
            resolve();
          };
          const t = setTimeout(finish, ms);
          for (const key of keys) {
            let set = waiters.get(key);
            if (!set) waiters.set(key, (set = new Set()));
            set.add(finish);
          }
        });
      },
      replace,
      sweep,
    });

    app.addHook('onReady', async () => {
      await listen();
      const interval = app.config.dispatchSweepIntervalMs;
      if (interval > 0) {
        timer = setInterval(() => {
          sweeping ??= sweep()
            .catch((err: unknown) => app.log.error({ err }, 'dispatch sweep failed; next round retries'))
            .finally(() => (sweeping = undefined));
        }, interval);
        timer.unref();
      }
    });
    // preClose runs before the server waits for in-flight requests: held long polls answer now.
    app.addHook('preClose', (hookDone) => {
      closing = true;
      for (const set of waiters.values()) for (const fn of [...set]) fn();
      hookDone();
    });
    app.addHook('onClose', async () => {
      if (timer) clearInterval(timer);
      await sweeping;
      const client = listener;
      listener = undefined;
      client?.release(true);
    });
    done();
  },
  { name: 'rgrid-dispatch', dependencies: ['rgrid-database'] },
);
