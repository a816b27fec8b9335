/**
 * The agent's claim loop (issue 5), enabled when a control URL and a worker token are configured:
 * register and report entries, then long-poll for work with as many free run slots as there are, run
 * each claim (agent/worker/execute.ts), and back off with jitter while the control plane is unreachable.
 * Stopping ends the long poll at once and lets running executions finish (the daemon's drain);
 * abandoning kills their containers, and their claims run out and are re-queued by the control plane.
 */
import type { Logger } from 'pino';
import { isRgridError } from '../../common/errors.js';
import type { ClaimedExecution } from '../../common/wire/dispatch-api.js';
import type { Runner } from '../runner/run.js';
import { createBlobCache, type BlobCache } from './blob-cache.js';
import { ControlClient } from './control-client.js';
import type { EntryReporter } from './entry-reporter.js';
import { executeClaim } from './execute.js';

export interface WorkerLoopOptions {
  controlUrl: string;
  workerToken: string;
  workerId: string;
  /** Executions run at once. */
  capacity: number;
  blobTtlMs: number;
  blobMaxBytes: number;
  /** How long one claim request may be held by the control plane. */
  claimWaitMs?: number;
}

export interface WorkerLoopDeps {
  options: WorkerLoopOptions;
  runner: Runner;
  logger: Logger;
  dataDir: string;
  /** Registration and entry reports go through the outbox sync (see entry-reporter.ts). */
  reporter: EntryReporter;
}

export interface WorkerLoop {
  readonly active: number;
  /** Stops claiming; resolves when the executions in progress have finished. */
  stop(): Promise<void>;
  /** Kills the runs in progress (the drain deadline passed). */
  abandon(): void;
  close(): Promise<void>;
}

/** Exponential backoff with full jitter, capped (pure, unit-tested). */
export function backoffMs(failures: number, random: () => number = Math.random, baseMs = 500, capMs = 30_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export function startWorkerLoop(deps: WorkerLoopDeps): WorkerLoop {
  const { options, logger } = deps;
  const log = logger.child({ component: 'worker', worker_id: options.workerId });
  const client = new ControlClient(options);
  const blobs: BlobCache = createBlobCache({ dataDir: deps.dataDir, ttlMs: options.blobTtlMs, maxBytes: options.blobMaxBytes });
  const { reporter } = deps;
  const runs = new Set<Promise<unknown>>();
  const claimAbort = new AbortController();
  const runAbort = new AbortController();
  let stopping = false;
  let registered = false;
  let slotFreed: () => void = () => undefined;

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      claimAbort.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });

  function launch(claim: ClaimedExecution): void {
    log.info({ execution_id: claim.execution_id, attempt: claim.attempt, queue_ms: claim.queue_ms }, 'claimed');
    const run = executeClaim({ client, blobs, runner: deps.runner, logger: log, dataDir: deps.dataDir, onBuilt: () => reporter.entriesChanged() }, claim, runAbort.signal)
      .catch((err: unknown) => log.error({ err, execution_id: claim.execution_id }, 'execution ended without a report; its claim will expire'))
      .then(() => blobs.prune())
      .then((p) => p && p.removed > 0 && log.info(p, 'blob cache pruned'))
      .catch((err: unknown) => log.warn({ err }, 'blob cache prune failed'))
      .finally(() => {
        runs.delete(run);
        slotFreed();
      });
    runs.add(run);
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopping) {
      try {
        if (!registered) {
          const accounts = await reporter.start();
          registered = true;
          log.info({ accounts, capacity: options.capacity }, 'registered with the control plane; claiming work');
        }
        const free = options.capacity - runs.size;
        if (free <= 0) {
          await new Promise<void>((resolve) => (slotFreed = resolve));
          continue;
        }
        const { claims } = await client.claim(free, options.claimWaitMs ?? 25_000, claimAbort.signal);
        failures = 0;
        for (const claim of claims) launch(claim);
      } catch (err) {
        if (stopping) break;
        failures++;
        if (isRgridError(err) && err.code === 'conflict' && err.detail?.resync_required === true) registered = false;
        const wait = backoffMs(failures);
        log.warn({ msg: (err as Error).message, retry_in_ms: wait }, 'control plane call failed');
        await sleep(wait);
      }
    }
  }

  const looping = loop();
  return {
    get active() {
      return runs.size;
    },
    async stop() {
      stopping = true;
      claimAbort.abort();
      slotFreed();
      await looping;
      await Promise.allSettled([...runs]);
    },
    abandon() {
      runAbort.abort();
    },
    async close() {
      await blobs.close();
      await client.close().catch(() => client.destroy());
    },
  };
}
