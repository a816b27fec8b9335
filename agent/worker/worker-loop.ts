/**
 * The agent's claim loop, enabled when a control URL and a worker token are configured: register and
 * report entries through the sync, then long-poll for work with as many free run slots as there are,
 * check each claim (claim-check.ts) and run it (execute.ts), and back off (common/retry.ts, full jitter)
 * while the control plane is unreachable. Every request goes through the agent's one control-plane
 * client (agent/control/), which reads the credentials anew each time. A claim that fails the checks
 * touches nothing: it is reported as failed when its ids allow, dropped otherwise, and counted either
 * way. After each execution the blob cache is pruned (agent/prune/blob-pruner.ts). Stopping ends the
 * long poll at once, tells the control plane this worker is leaving (once, bounded by LEAVE_TIMEOUT_MS,
 * best effort: placement then skips it at once instead of after the dead-after window) and lets running
 * executions finish (the daemon's drain); abandoning kills their containers, and their claims run out and
 * are re-queued by the control plane.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { isRgridError, RgridError } from '../../common/errors.js';
import { backoffDelay, retryTransient } from '../../common/retry.js';
import type { ClaimedExecution } from '../../common/wire/dispatch-api.js';
import type { ControlPlaneClient } from '../control/client.js';
import { createBlobPruner } from '../prune/blob-pruner.js';
import type { Runner } from '../runner/run.js';
import type { SyncLoop } from '../sync/sync-loop.js';
import { createBlobCache, type BlobCache } from './blob-cache.js';
import { checkClaim, type ClaimVerdict } from './claim-check.js';
import { DEFAULT_RETRY, executeClaim, type RetryTuning } from './execute.js';
import { reportError } from './report.js';

export interface WorkerLoopOptions {
  /** Executions run at once. */
  capacity: number;
  blobTtlMs: number;
  blobMaxBytes: number;
  /** How long one claim request may be held by the control plane. */
  claimWaitMs?: number;
  /** Retries of output uploads and reports (defaults: DEFAULT_RETRY in execute.ts). */
  retry?: Partial<RetryTuning>;
}

export interface WorkerLoopDeps {
  options: WorkerLoopOptions;
  /** The agent's control-plane client, shared with the sync. */
  control: ControlPlaneClient;
  runner: Runner;
  logger: Logger;
  dataDir: string;
  /**
   * Registration and entry reports belong to the outbox sync: the loop asks it to (re-)register before
   * claiming, and to flush after a build, before the result is reported — a client that sees the result
   * can rely on placement knowing the image.
   */
  sync: Pick<SyncLoop, 'resync' | 'flush'>;
  /** The agent's metrics registry, for the refused-claims counter. */
  registry?: Registry;
}

export interface WorkerLoop {
  /**
   * Stops claiming and leaves placement; resolves when the executions in progress have finished and the
   * leave was answered or gave up (LEAVE_TIMEOUT_MS).
   */
  stop(): Promise<void>;
  /** Kills the runs in progress (the drain deadline passed). */
  abandon(): void;
  close(): Promise<void>;
}

/** Backoff of the claim loop while the control plane is away: full jitter up to 500 ms, doubling to 30 s. */
const CLAIM_BACKOFF = { initialMs: 500, maxMs: 30_000 };
/**
 * The most a stop waits for the control plane to answer the leave. Without an answer nothing is lost:
 * the worker leaves placement the old way, once it has been silent for the dead-after window.
 */
export const LEAVE_TIMEOUT_MS = 2500;

export function startWorkerLoop(deps: WorkerLoopDeps): WorkerLoop {
  const { options, logger } = deps;
  const log = logger.child({ component: 'worker' });
  const client = deps.control;
  const blobs: BlobCache = createBlobCache({ dataDir: deps.dataDir });
  const pruner = createBlobPruner({ blobs, settings: () => ({ ttlMs: options.blobTtlMs, maxBytes: options.blobMaxBytes }), logger: log });
  const refused = new Counter({
    name: 'rgrid_agent_claims_refused_total',
    help: 'Claims from the control plane that failed the checks, by what was done (reported: completed as failed; dropped: ids unusable)',
    labelNames: ['action'],
    registers: deps.registry ? [deps.registry] : [],
  });
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  const { sync } = deps;
  const runs = new Set<Promise<unknown>>();
  const claimAbort = new AbortController();
  const runAbort = new AbortController();
  let stopping = false;
  let registered = false;
  let resyncNeeded = false;
  let slotFreed: () => void = () => undefined;
  /** For the refusal text only; the client reads the id itself for every request. */
  const workerId = (): string => {
    try {
      return client.credentials().workerId;
    } catch {
      return 'unknown';
    }
  };

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      claimAbort.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });

  function track(work: Promise<unknown>): void {
    const tracked = work.finally(() => {
      runs.delete(tracked);
      slotFreed();
    });
    runs.add(tracked);
  }

  /** A claim that failed the checks: nothing of it reaches a file or a run (see the module comment). */
  function refuse(verdict: Extract<ClaimVerdict, { ok: false }>): void {
    const { report } = verdict;
    refused.inc({ action: report ? 'reported' : 'dropped' });
    log.warn({ reason: verdict.reason, execution_id: report?.execution_id ?? null }, report ? 'refused a claim; reporting it as failed' : 'refused a claim; dropped');
    if (!report) return;
    const body = { claim_id: report.claim_id, outcome: 'done' as const, failure: 'error' as const, error: reportError(`worker ${workerId()}: ${verdict.reason}`) };
    track(
      retryTransient((signal) => client.complete(report.execution_id, body, { signal }), {
        budgetMs: retry.completeBudgetMs, initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs, signal: runAbort.signal,
      }).catch((err: unknown) => log.warn({ msg: (err as Error).message, execution_id: report.execution_id }, 'reporting a refused claim failed')),
    );
  }

  function launch(claim: ClaimedExecution): void {
    log.info({ execution_id: claim.execution_id, attempt: claim.attempt, queue_ms: claim.queue_ms }, 'claimed');
    const executeDeps = {
      client, blobs, runner: deps.runner, logger: log, dataDir: deps.dataDir, blobMaxBytes: options.blobMaxBytes, retry,
      onBuilt: () => sync.flush().then(() => undefined, () => undefined),
    };
    const run = executeClaim(executeDeps, claim, runAbort.signal)
      .catch((err: unknown) => log.error({ err, execution_id: claim.execution_id }, 'execution ended without a report; its claim will expire'))
      .then(() => pruner.prune())
      .catch((err: unknown) => log.warn({ err }, 'blob cache prune failed'));
    track(run);
  }

  async function loop(): Promise<void> {
    // Output staging of executions of an earlier life of this agent: they cannot be reported any more.
    await rm(join(deps.dataDir, 'worker-outputs'), { recursive: true, force: true }).catch(() => undefined);
    let failures = 0;
    while (!stopping) {
      try {
        if (!registered) {
          // At start the sync registers and snapshots on its own first tick; a flush waits for that (or does
          // it) without a second snapshot. A claim refused with resync_required lands here again, and then
          // the control plane has lost this worker: register and snapshot anew.
          const status = resyncNeeded ? await sync.resync() : await sync.flush();
          resyncNeeded = false;
          if (!status.registered) throw new RgridError('unavailable', `not registered with the control plane: ${status.last_error ?? 'unknown reason'}`);
          const accounts = status.accounts;
          registered = true;
          log.info({ accounts, capacity: options.capacity }, 'registered with the control plane; claiming work');
        }
        const free = options.capacity - runs.size;
        if (free <= 0) {
          await new Promise<void>((resolve) => (slotFreed = resolve));
          continue;
        }
        const { claims } = await client.claim(free, options.claimWaitMs ?? 25_000, { signal: claimAbort.signal });
        failures = 0;
        for (const raw of claims) {
          const verdict = checkClaim(raw);
          if (verdict.ok) launch(verdict.claim);
          else refuse(verdict);
        }
      } catch (err) {
        if (stopping) break;
        failures++;
        if (isRgridError(err) && err.code === 'conflict' && err.detail?.resync_required === true) {
          registered = false;
          resyncNeeded = true;
        }
        const wait = backoffDelay(failures, CLAIM_BACKOFF);
        log.warn({ msg: (err as Error).message, retry_in_ms: wait }, 'control plane call failed');
        await sleep(wait);
      }
    }
  }

  /** Out of placement before the drain, so no new work is assigned to a worker that will not claim it. */
  async function leave(): Promise<void> {
    try {
      const left = await client.leave({ timeoutMs: LEAVE_TIMEOUT_MS });
      log.info({ leaving_at: left.leaving_at, reassigned: left.reassigned, runs: runs.size }, 'left placement; finishing the runs in progress');
    } catch (err) {
      log.warn({ msg: (err as Error).message }, 'could not tell the control plane this worker is leaving; it stays placeable until it looks dead');
    }
  }

  const looping = loop();
  return {
    async stop() {
      stopping = true;
      claimAbort.abort();
      slotFreed();
      // Not registered: the control plane does not know this worker (or could not be reached): nothing to leave.
      const leaving = registered ? leave() : Promise.resolve();
      await looping;
      await Promise.allSettled([leaving, ...runs]);
    },
    abandon() {
      runAbort.abort();
    },
    async close() {
      await pruner.stop();
      await blobs.close();
    },
  };
}
