/**
 * How the control plane learns which entries this worker holds, so placement can send work to the
 * worker with the image. INTERIM (issue 5, until issue 4's outbox sync is merged): register once, then
 * send a full snapshot of the index (PUT /v1/workers/:id/snapshot) at start and after every execution
 * that built something — the simplest honest use of the endpoints the control plane already has.
 * Touches (last use) are not reported; placement does not need them. At merge the lead swaps this for
 * the outbox-based sync behind the same interface.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { CacheEntry } from '../../common/wire/control-api.js';
import type { AgentIndex } from '../index/index.js';
import type { IndexEntry } from '../index/types.js';
import type { ControlClient } from './control-client.js';

export interface EntryReporter {
  /** Registers the worker and reports its entries; returns the accounts it serves. */
  start(capacity: number, version: string): Promise<string[]>;
  /** Entries changed (a build): report them. Never throws; coalesces calls made while one runs. */
  entriesChanged(): Promise<void>;
}

export function toCacheEntry(e: IndexEntry): CacheEntry {
  return {
    kind: e.kind,
    account: e.account,
    key: e.key,
    image_id: e.image_id,
    runtime: e.runtime,
    requirements_sha256: e.requirements_sha256,
    script_sha256: e.kind === 'image' ? e.script_sha256 : null,
    deps_key: e.kind === 'image' ? e.deps_key : null,
    size_bytes: e.size_bytes,
    created_at: new Date(e.created_at).toISOString(),
    last_used_at: new Date(e.last_used_at).toISOString(),
    use_count: e.use_count,
  };
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
