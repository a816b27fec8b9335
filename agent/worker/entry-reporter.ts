/**
 * How the control plane learns which entries this worker holds, so placement can send work to the
 * worker with the image: through the outbox sync (agent/sync/), which owns registration and snapshots.
 * After a build the claim loop flushes the outbox before it reports the result, so a client that sees
 * the result can rely on placement knowing the image.
 */
import type { SyncLoop } from '../sync/sync-loop.js';

export interface EntryReporter {
  /** Registers the worker and reports its entries; returns the accounts it serves. */
  start(): Promise<string[]>;
  /** Entries changed (a build): report them before the result is. Never throws. */
  entriesChanged(): Promise<void>;
}

/** The outbox sync as the claim loop's reporter (see the module comment). */
export function createSyncReporter(sync: SyncLoop): EntryReporter {
  return {
    async start() {
      // A claim refused with resync_required lands here again: re-register and snapshot, not just flush.
      const status = await sync.resync();
      if (!status.registered) throw new Error(`not registered with the control plane: ${status.last_error ?? 'unknown reason'}`);
      return status.accounts;
    },
    async entriesChanged() {
      await sync.flush().catch(() => undefined);
    },
  };
}
