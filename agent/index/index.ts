import { randomUUID } from 'node:crypto';
import { open, type Database, type RootDatabase } from 'lmdb';
import { createOutboxStore, type OutboxStore } from './outbox.js';
import { createPushOutboxStore, type PushOutboxStore } from './push-outbox.js';
import { createResolutionStore, type ResolutionStore } from './resolutions.js';
import { refId, type EntryKind, type EntryRef, type IndexEntry } from './types.js';

/**
 * The agent's LMDB index (docs/architecture.md): one environment at `<data_dir>/index`, named sub-databases
 *
 *   entries.image  [account, image_key] → IndexEntry (kind "image")
 *   entries.deps   [account, deps_key]  → IndexEntry (kind "deps")
 *   meta           string              → value (`agent_id`, `schema_version`, outbox counters)
 *   outbox, outbox.touch                 → the sync outbox (outbox.ts): every write below appends its
 *                                          op in the same transaction (putBuilt → upsert, touch →
 *                                          coalesced touch, remove → delete)
 *   pushes                               → the push outbox (push-outbox.ts): built images still to be
 *                                          pushed to the registry or recorded, written with the entry
 *   resolutions, locks                   → the resolution cache (resolutions.ts): which lock a
 *                                          requirements file resolved to, and the locks
 *
 * Keys are lmdb-js ordered-binary arrays, so all entries of one account form one contiguous range.
 *
 * Durability: every write is one LMDB transaction (entry and outbox op together), so the index is
 * consistent whatever the moment the process dies: a transaction is in the data file whole or not at
 * all. `putBuilt`, `touch` and `remove` are awaited by their callers — a built entry is committed before
 * anyone hears of it, and a removal commits synchronously (see `remove`). A hit's use (last_used_at,
 * use_count) is recorded with `recordUse`, which the hit does NOT wait for (agent/builder/image-cache.ts):
 * the use only feeds the pruner's LRU/TTL choice and the control plane's last-used time, never whether a
 * hit is right. Waiting for it put LMDB's write thread — its commit and two wake-ups of this thread — on
 * every hit's tail. Uses are gathered for up to USE_BATCH_MS and written in one transaction (each key
 * once, with its number of uses): one commit and one fsync per batch instead of per hit. A SIGKILL can so
 * lose the uses of the last few milliseconds — each an entry looking one use older, nothing else.
 * Readers that report use counts (`ls`, `inspect`, the pruner) first await `settled()`, which writes a
 * gathered batch at once: whoever heard "hit" and then asks sees the use; `close()` writes it too.
 * The fsync follows asynchronously (lmdb-js overlappingSync + separateFlushed; `flushed()` waits for
 * it): with the same boot, lmdb-js reopens at the latest committed transaction; after an OS crash or
 * power loss it reopens at the latest flushed one, so at most the last few milliseconds of writes are
 * lost and integrity is kept (MDB_NOMETASYNC likewise only defers the meta page). Measured on the 2-core
 * test VM under I/O load: commit p99 ~0.8 ms this way, ~3–8 ms when every write waits for its own
 * fsync. Writes issued in one event turn are batched into one commit by lmdb-js as well.
 */
export const INDEX_SCHEMA_VERSION = 1;

/**
 * How long hits' uses are gathered before their one transaction: short, so that a SIGKILL loses few uses
 * (nobody waits for the batch: `settled()` writes it at once); long enough that a busy agent commits a
 * few hundred use batches a second rather than one per hit.
 */
export const USE_BATCH_MS = 5;

export interface ListFilter {
  kind?: EntryKind;
  account?: string;
}

export interface AgentIndex {
  /** Stable identity of this agent's data dir; labels its build leftovers so only it cleans them up. */
  readonly agentId: string;
  get(ref: EntryRef): IndexEntry | undefined;
  list(filter?: ListFilter): IndexEntry[];
  /** Script images built FROM the given deps layer (same account). The pruner keeps such a layer. */
  dependentsOf(deps: EntryRef): IndexEntry[];
  /**
   * Writes a freshly built entry and touches related entries (e.g. the deps layer it was built on) in
   * one transaction. An existing entry for the same ref is replaced (a self-healed rebuild).
   */
  putBuilt(entry: IndexEntry, alsoTouch?: readonly EntryRef[], options?: { queuePush?: boolean }): Promise<void>;
  /**
   * Records a use of each ref in one transaction: last_used_at = now, use_count += 1. Refs that no longer
   * exist are skipped. Resolves, once committed, to the updated entries (undefined for skipped ones).
   */
  touch(refs: readonly EntryRef[], now?: number): Promise<Array<IndexEntry | undefined>>;
  /**
   * The same for a use nobody waits for (a hit): gathered with the other uses of the next USE_BATCH_MS
   * into one transaction. Resolves once that transaction committed; rejects if it failed.
   */
  recordUse(refs: readonly EntryRef[], now?: number): Promise<void>;
  /**
   * Removes an entry. With `ifImageId`, only when it still points at that image (so a stale view never
   * removes an entry that a concurrent rebuild just replaced). Resolves to whether it removed something.
   */
  remove(ref: EntryRef, options?: { ifImageId?: string }): Promise<boolean>;
  /** The durable sync outbox fed by the writes above. */
  readonly outbox: OutboxStore;
  /** The durable push outbox (images to push to the registry), fed by putBuilt's `queuePush`. */
  readonly pushes: PushOutboxStore;
  /** The resolution cache's records and locks (agent/builder/resolution.ts). */
  readonly resolutions: ResolutionStore;
  /**
   * For a full sync snapshot: every entry, read in one transaction that also seals every op so far;
   * `through` is the highest op seq whose effect the entries already contain.
   */
  syncSnapshot(): { entries: IndexEntry[]; through: number };
  /**
   * Writes the uses gathered by `recordUse` now, and resolves when every `putBuilt`, `touch` and
   * `recordUse` issued before the call has committed (or failed; its caller hears of the failure).
   * Readers of use counts call it first: a use a hit did not wait for is then counted.
   */
  settled(): Promise<void>;
  /** Resolves when everything committed so far is fsynced. */
  flushed(): Promise<void>;
  close(): Promise<void>;
}

export interface IndexDeps {
  /** Directory of the LMDB environment. */
  path: string;
  now?: () => number;
  /** The agent id to adopt when the index is new (the data dir's identity outlives a lost index). */
  agentId?: string;
}

export function createIndex(deps: IndexDeps): AgentIndex {
  const now = deps.now ?? Date.now;
  const root: RootDatabase = open({ path: deps.path, maxDbs: 12, overlappingSync: true, separateFlushed: true, noMetaSync: true });
  const tables: Record<EntryKind, Database<IndexEntry, [string, string]>> = {
    image: root.openDB<IndexEntry, [string, string]>({ name: 'entries.image' }),
    deps: root.openDB<IndexEntry, [string, string]>({ name: 'entries.deps' }),
  };
  const meta = root.openDB<string | number, string>({ name: 'meta' });

  // Created once per data dir and kept: the same agent after a restart recognizes its own leftovers.
  let agentId = meta.get('agent_id');
  if (typeof agentId !== 'string') {
    agentId = deps.agentId ?? randomUUID();
    meta.transactionSync(() => {
      meta.putSync('agent_id', agentId!);
      meta.putSync('schema_version', INDEX_SCHEMA_VERSION);
    });
  }
  const id: string = agentId;
  const outbox = createOutboxStore(root, meta);
  const pushes = createPushOutboxStore(root);
  const resolutions = createResolutionStore(root);

  const keyOf = (ref: EntryRef): [string, string] => [ref.account, ref.key];

  // Asynchronous writes not yet committed (settled() waits for those issued before it is called).
  const inFlight = new Set<Promise<void>>();
  function tracked<T>(start: () => Promise<T>): Promise<T> {
    let write: Promise<T>;
    try {
      write = start();
    } catch (err) {
      write = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const done = write.then(() => undefined, () => undefined);
    inFlight.add(done);
    void done.then(() => inFlight.delete(done));
    return write;
  }

  // Uses gathered for the next batch (recordUse): per key, the uses and the latest time.
  interface Use { ref: EntryRef; uses: number; at: number }
  let gathered: { uses: Map<string, Use>; timer: NodeJS.Timeout; written: Promise<unknown>; write: () => void } | undefined;

  function gatherUse(ref: EntryRef, at: number): Promise<unknown> {
    if (!gathered) {
      let outcome!: { resolve: (v: unknown) => void; reject: (err: unknown) => void };
      const written = new Promise<unknown>((resolve, reject) => (outcome = { resolve, reject }));
      const batch = {
        uses: new Map<string, Use>(),
        written,
        timer: setTimeout(() => batch.write(), USE_BATCH_MS),
        write: () => {
          clearTimeout(batch.timer);
          if (gathered === batch) gathered = undefined;
          tracked(() => root.transaction(() => writeUses([...batch.uses.values()]))).then(outcome.resolve, outcome.reject);
        },
      };
      // Registered now, so that settled() called before the batch is written waits for it.
      void tracked(() => written);
      gathered = batch;
    }
    const id = refId(ref);
    const known = gathered.uses.get(id);
    if (known) {
      known.uses++;
      known.at = Math.max(known.at, at);
    } else gathered.uses.set(id, { ref, uses: 1, at });
    return gathered.written;
  }

  /** Inside a write transaction: each use added to its entry, and to its key's coalesced outbox op. */
  function writeUses(uses: readonly Use[]): Array<IndexEntry | undefined> {
    return uses.map(({ ref, uses: count, at }) => {
      const current = tables[ref.kind].get(keyOf(ref));
      if (!current) return undefined;
      const updated = { ...current, last_used_at: Math.max(at, current.last_used_at), use_count: current.use_count + count };
      tables[ref.kind].putSync(keyOf(ref), updated);
      outbox.enqueueTouch(ref, updated.last_used_at, count);
      return updated;
    });
  }

  /** Writes the gathered uses now, then waits for every write issued so far. */
  async function settle(): Promise<void> {
    gathered?.write();
    await Promise.all([...inFlight]);
  }

  function list(filter: ListFilter = {}): IndexEntry[] {
    const kinds: EntryKind[] = filter.kind ? [filter.kind] : ['image', 'deps'];
    const out: IndexEntry[] = [];
    for (const kind of kinds) {
      // [account] sorts before every [account, key]; [account + '\u0001'] after all of them ('\0' is not allowed).
      const range = filter.account !== undefined ? { start: [filter.account], end: [`${filter.account}\u0001`] } : {};
      for (const { value } of tables[kind].getRange(range)) out.push(value);
    }
    return out;
  }

  function removeNow(ref: EntryRef, options: { ifImageId?: string }): boolean {
    return root.transactionSync(() => {
      const current = tables[ref.kind].get(keyOf(ref));
      if (!current) return false;
      if (options.ifImageId !== undefined && current.image_id !== options.ifImageId) return false;
      tables[ref.kind].removeSync(keyOf(ref));
      outbox.enqueueDelete(ref, now());
      pushes.dropInTxn(ref);
      return true;
    });
  }

  return {
    agentId: id,
    get: (ref) => tables[ref.kind].get(keyOf(ref)),
    list,
    dependentsOf: (depsRef) =>
      list({ kind: 'image', account: depsRef.account }).filter((e) => e.deps_key === depsRef.key),
    outbox,
    pushes,
    resolutions,
    syncSnapshot() {
      return root.transactionSync(() => ({ entries: list(), through: outbox.sealAllInTxn() }));
    },
    async putBuilt(entry, alsoTouch = [], options = {}) {
      const at = now();
      // Inside a transaction callback the *Sync calls join that transaction (one commit for all).
      await tracked(() => root.transaction(() => {
        tables[entry.kind].putSync(keyOf(entry), entry);
        outbox.enqueueUpsert(entry, at);
        if (options.queuePush) pushes.enqueueInTxn(entry, at);
        for (const ref of alsoTouch) {
          const current = tables[ref.kind].get(keyOf(ref));
          if (!current) continue;
          tables[ref.kind].putSync(keyOf(ref), { ...current, last_used_at: at, use_count: current.use_count + 1 });
          outbox.enqueueTouch(ref, at);
        }
      }));
    },
    touch(refs, at = now()) {
      return tracked(() => root.transaction(() => writeUses(refs.map((ref) => ({ ref, uses: 1, at })))));
    },
    async recordUse(refs, at = now()) {
      const batches = refs.map((ref) => gatherUse(ref, at));
      await Promise.all(batches);
    },
    remove(ref, options = {}) {
      // Committed synchronously, before remove() returns: the pruner decides and removes in one event-loop
      // turn (leases.ts), and an ensure arriving right after must already miss — an async commit would
      // leave a window in which it could still read the entry and answer a hit on an image being deleted.
      try {
        return Promise.resolve(removeNow(ref, options));
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
    },
    settled: settle,
    async flushed() {
      await root.flushed;
    },
    async close() {
      // Touches nobody awaited (hits answered) still commit before the environment closes.
      await settle();
      await root.close();
    },
  };
}
