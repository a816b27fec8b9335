/**
 * Dispatch's process-wide parts: the execution service (control/dispatch/execution-service.ts, the one
 * writer of execution state), wake-ups for long polls (PostgreSQL LISTEN/NOTIFY on one held connection,
 * so a submit on any replica wakes the claim waiting on another), the lease clock tick and the sweep
 * that re-queues expired claims and work stranded on dead workers. Waiters also wake on a short timer,
 * so a lost notification (the LISTEN connection dropped and came back) costs a second, never a stuck claim.
 */
import fp from 'fastify-plugin';
import type pg from 'pg';
import { createExecutionService, type ExecutionService } from './execution-service.js';
import { clockTickMs } from './lease-clock.js';
import { CHANNEL } from './notify.js';

/** Fallback poll period of every waiter. */
export const POLL_MS = 1000;

export interface Dispatch {
  /** Resolves on a notification for one of `keys`, after `ms`, when the app closes or when `signal` aborts. */
  wait(keys: readonly string[], ms: number, signal?: AbortSignal): Promise<void>;
  readonly closing: boolean;
  readonly executions: ExecutionService;
}

declare module 'fastify' {
  interface FastifyInstance {
    dispatch: Dispatch;
  }
}

/** Runs `fn` unless a run of it is still going (a slow database must not pile rounds up). */
function single(fn: () => Promise<unknown>, onError: (err: unknown) => void): { run(): void; idle(): Promise<unknown> } {
  let running: Promise<unknown> | undefined;
  return {
    run() {
      running ??= fn().catch(onError).finally(() => (running = undefined));
    },
    idle: () => running ?? Promise.resolve(),
  };
}

export default fp(
  (app, _opts, done) => {
    const waiters = new Map<string, Set<() => void>>();
    let closing = false;
    let listener: pg.PoolClient | undefined;
    const timers: NodeJS.Timeout[] = [];
    const executions = createExecutionService({ db: app.db, repos: app.repos, config: app.config, log: app.log, placement: app.placement });

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

    const clock = single(() => executions.tickClock(), (err) => app.log.error({ err }, 'lease clock tick failed; next tick retries'));
    const sweeper = single(() => executions.sweep(), (err) => app.log.error({ err }, 'dispatch sweep failed; next round retries'));

    app.decorate<Dispatch>('dispatch', {
      get closing() {
        return closing;
      },
      wait(keys, ms, signal) {
        if (closing || ms <= 0 || signal?.aborted) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const finish = (): void => {
            clearTimeout(t);
            signal?.removeEventListener('abort', finish);
            for (const key of keys) waiters.get(key)?.delete(finish);
            resolve();
          };
          const t = setTimeout(finish, ms);
          signal?.addEventListener('abort', finish, { once: true });
          for (const key of keys) {
            let set = waiters.get(key);
            if (!set) waiters.set(key, (set = new Set()));
            set.add(finish);
          }
        });
      },
      executions,
    });

    app.addHook('onReady', async () => {
      // Before the first sweep, and before this replica answers a renewal: leases are extended by any
      // time during which no replica was up (control/dispatch/lease-clock.ts). A failed first tick is
      // retried by the timer; until one succeeds the sweep (which ticks first) does not run either.
      await executions.tickClock().catch((err: unknown) => app.log.error({ err }, 'lease clock tick failed at start; the timer retries'));
      await listen();
      // Every replica ticks, sweeping or not: it serves renewals, so it counts as up.
      timers.push(setInterval(() => clock.run(), clockTickMs(app.config.claimLeaseMs)));
      const interval = app.config.dispatchSweepIntervalMs;
      if (interval > 0) timers.push(setInterval(() => sweeper.run(), interval));
      for (const t of timers) t.unref();
    });
    // preClose runs before the server waits for in-flight requests: held long polls answer now.
    app.addHook('preClose', (hookDone) => {
      closing = true;
      for (const set of waiters.values()) for (const fn of [...set]) fn();
      hookDone();
    });
    app.addHook('onClose', async () => {
      for (const t of timers) clearInterval(t);
      await Promise.all([clock.idle(), sweeper.idle()]);
      const client = listener;
      listener = undefined;
      client?.release(true);
    });
    done();
  },
  { name: 'rgrid-dispatch', dependencies: ['rgrid-database'] },
);
