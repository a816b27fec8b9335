/**
 * Keeps a claim alive while the worker runs it, uploads its outputs and reports its result: a renewal
 * every third of the lease, one at a time (a hung request cannot pile up more behind it), and sooner
 * after one failed. A renewal that
 * fails because the control plane is away is only logged — the run goes on, and the next renewal may
 * reach it again; a 409 means the control plane gave the execution up (the lease ran out, it was
 * re-queued), and then `lost` aborts so the run stops and nothing is reported.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { isRgridError } from '../../common/errors.js';
import { backoffDelay } from '../../common/retry.js';
import type { ClaimedExecution } from '../../common/wire/dispatch-api.js';
import type { ControlPlaneClient } from '../control/client.js';

export interface ClaimKeeper {
  /** Aborts when the control plane answered a renewal with 409 (the claim is no longer this worker's). */
  readonly lost: AbortSignal;
  stop(): void;
}

/** A third of the lease, so two renewals may fail before it runs out; within [200 ms, 60 s]. */
export function renewalIntervalMs(leaseMs: number): number {
  return Math.min(60_000, Math.max(200, Math.floor(leaseMs / 3)));
}

export function keepClaim(
  client: Pick<ControlPlaneClient, 'renew'>,
  claim: Pick<ClaimedExecution, 'execution_id' | 'claim_id' | 'lease_ms'>,
  log: Logger,
  /** The wait between renewals; tests record it instead of waiting. */
  wait: (ms: number, signal: AbortSignal) => Promise<unknown> = (ms, signal) => delay(ms, undefined, { signal }),
): ClaimKeeper {
  const lost = new AbortController();
  const stopped = new AbortController();
  const every = renewalIntervalMs(claim.lease_ms);
  let failures = 0;
  async function loop(): Promise<void> {
    while (!stopped.signal.aborted) {
      try {
        // After a failed renewal the next comes sooner (full jitter from 250 ms, never later than the
        // usual interval): the lease left when the control plane comes back may be short.
        await wait(failures > 0 ? backoffDelay(failures, { initialMs: 250, maxMs: every }) : every, stopped.signal);
      } catch {
        return;
      }
      try {
        await client.renew(claim.execution_id, claim.claim_id, { signal: stopped.signal, timeoutMs: every });
        if (failures > 0) log.info({ failed_renewals: failures }, 'claim renewed again');
        failures = 0;
      } catch (err) {
        if (stopped.signal.aborted) return;
        if (isRgridError(err) && err.code === 'conflict') {
          log.warn('claim lost (lease expired or re-queued); stopping the run');
          lost.abort();
          return;
        }
        failures++;
        log.warn({ failed_renewals: failures, msg: (err as Error).message }, 'claim renewal failed; the run goes on');
      }
    }
  }
  void loop();
  return { lost: lost.signal, stop: () => stopped.abort() };
}
