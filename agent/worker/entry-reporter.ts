/**
 * How the control plane learns which entries this worker holds, so placement can send work to the
 * worker with the image. The daemon uses the outbox sync (createSyncReporter): registration and the
 * snapshot happen there, and after a build the claim loop flushes the outbox before it reports the
 * result, so a client that sees the result can rely on placement knowing the image. The snapshot
 * reporter below talks to the control plane directly; it serves a claim loop run without the fleet
 * components (tests of the loop alone).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { AgentIndex } from '../index/index.js';
import type { ControlClient } from './control-client.js';
import type { SyncLoop } from '../sync/sync-loop.js';
import { toCacheEntry } from '../sync/wire-ops.js';

export interface EntryReporter {
  /** Registers the worker and reports its entries; returns the accounts it serves. */
  start(capacity: number, version: string): Promise<string[]>;
  /** Entries changed (a build): report them. Never throws; coalesces calls made while one runs. */
  entriesChanged(): Promise<void>;
}

export function createSnapshotReporter(deps: { client: ControlClient; index: AgentIndex; logger: Logger }): EntryReporter {
  const { client, index, logger } = deps;
  let accounts: string[] = [];
  let running: Promise<void> | undefined;
  let again = false;

  async function send(): Promise<void> {
    const entries = index.list().filter((e) => accounts.includes(e.account)).map(toCacheEntry);
    const res = await client.snapshot(entries, accounts);
    logger.debug({ entries: res.entries, removed: res.removed }, 'entries reported to the control plane');
  }

  return {
    async start(capacity, version) {
      const reg = await client.register({ host: hostname(), capacity, load: { running: 0 }, agent_version: version });
      accounts = reg.accounts;
      await send();
      return accounts;
    },
    entriesChanged() {
      if (running) {
        again = true;
        return running;
      }
      running = (async () => {
        do {
          again = false;
          await send().catch((err: unknown) => logger.warn({ msg: (err as Error).message }, 'reporting entries failed; the next build reports them'));
        } while (again);
      })().finally(() => (running = undefined));
      return running;
    },
  };
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
