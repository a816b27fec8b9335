import { randomUUID } from 'node:crypto';
import type { Database, RootDatabase } from 'lmdb';
import type { EntryKind, EntryRef, IndexEntry } from './types.js';

/**
 * The durable sync outbox (docs/architecture.md, the sync), two sub-databases of the index's LMDB environment:
 *
 *   outbox        seq (integer, ascending)   → OutboxOp
 *   outbox.touch  [kind, account, key]       → seq of the key's open (coalescing) touch op
 *
 * and three `meta` values: `outbox_epoch` (random, new with every new index: op ids stay unique for the
 * control plane even when a lost index restarts the sequence), `outbox_seq` (last seq used) and
 * `outbox_sealed` (ops with seq ≤ sealed have been handed to a sender and are immutable from then on).
 *
 * Ops are appended by the index's own write transactions (`enqueue*` are called inside them), so an
 * index change and its op commit together: a crash can neither lose an op nor invent one.
 *
 * Touch coalescing: a hit increments the count of its key's open touch op, in the hit's transaction.
 * An op is open while its seq > sealed; once a batch containing it is sealed (about to be sent), the next
 * hit opens a new op. A sent op is never changed afterwards, so an acknowledged-but-unanswered batch can
 * be resent with the same ids (the control plane drops repeats) without losing or doubling hits. Bound:
 * touch ops per hot key ≤ batches sent while it is hot + 1.
 */
export type OutboxOpType = 'upsert' | 'delete' | 'touch';

export interface OutboxOp {
  seq: number;
  type: OutboxOpType;
  kind: EntryKind;
  account: string;
  key: string;
  /** Epoch ms when the op was created (oldest op age). */
  at: number;
  /** upsert: the entry as written. */
  entry?: IndexEntry;
  /** touch: hits folded into this op, and the latest hit's time. */
  count?: number;
  last_used_at?: number;
}

type Meta = Database<string | number, string>;

export interface OutboxStore {
  readonly epoch: string;
  /** Inside a write transaction. */
  enqueueUpsert(entry: IndexEntry, at: number): void;
  enqueueDelete(ref: EntryRef, at: number): void;
  /** `count` uses of one key at once (touches gathered into one transaction: index.ts). */
  enqueueTouch(ref: EntryRef, at: number, count?: number): void;
  depth(): number;
  oldestAt(): number | undefined;
  /** Seals and returns the first `limit` ops (in seq order). */
  takeBatch(limit: number): OutboxOp[];
  /** Inside a transaction: seals every op so far and returns the highest seq (all of it is in the index). */
  sealAllInTxn(): number;
  /** Deletes acknowledged ops (and their coalescing pointers). */
  ack(seqs: readonly number[]): Promise<void>;
  ackThrough(seq: number): Promise<void>;
  /** Ops appended by type since the process started (metrics). */
  readonly enqueued: Record<OutboxOpType, number>;
}

export function createOutboxStore(root: RootDatabase, meta: Meta): OutboxStore {
  const ops = root.openDB<OutboxOp, number>({ name: 'outbox' });
  const touchPointers = root.openDB<number, [string, string, string]>({ name: 'outbox.touch' });
  let epoch = meta.get('outbox_epoch');
  if (typeof epoch !== 'string') {
    epoch = randomUUID();
    meta.putSync('outbox_epoch', epoch);
  }
  const enqueued: Record<OutboxOpType, number> = { upsert: 0, delete: 0, touch: 0 };
  const num = (name: string): number => {
    const v = meta.get(name);
    return typeof v === 'number' ? v : 0;
  };
  const pointerKey = (ref: EntryRef): [string, string, string] => [ref.kind, ref.account, ref.key];

  function append(op: Omit<OutboxOp, 'seq'>): number {
    const seq = num('outbox_seq') + 1;
    meta.putSync('outbox_seq', seq);
    ops.putSync(seq, { ...op, seq });
    enqueued[op.type]++;
    return seq;
  }

  function seal(through: number): void {
    if (through > num('outbox_sealed')) meta.putSync('outbox_sealed', through);
  }

  function dropSync(seq: number): void {
    const op = ops.get(seq);
    if (!op) return;
    ops.removeSync(seq);
    const pk = pointerKey(op);
    if (touchPointers.get(pk) === seq) touchPointers.removeSync(pk);
  }

  return {
    epoch,
    enqueued,
    enqueueUpsert(entry, at) {
      append({ type: 'upsert', kind: entry.kind, account: entry.account, key: entry.key, at, entry });
    },
    enqueueDelete(ref, at) {
      append({ type: 'delete', kind: ref.kind, account: ref.account, key: ref.key, at });
    },
    enqueueTouch(ref, at, count = 1) {
      const pk = pointerKey(ref);
      const open = touchPointers.get(pk);
      if (open !== undefined && open > num('outbox_sealed')) {
        const op = ops.get(open);
        if (op && op.type === 'touch') {
          ops.putSync(open, { ...op, count: (op.count ?? 0) + count, last_used_at: Math.max(op.last_used_at ?? 0, at) });
          return;
        }
      }
      const seq = append({ type: 'touch', kind: ref.kind, account: ref.account, key: ref.key, at, count, last_used_at: at });
      touchPointers.putSync(pk, seq);
    },
    depth: () => ops.getCount(),
    oldestAt() {
      for (const { value } of ops.getRange({ limit: 1 })) return value.at;
      return undefined;
    },
    takeBatch(limit) {
      return root.transactionSync(() => {
        const batch = [...ops.getRange({ limit })].map((r) => r.value);
        const last = batch.at(-1);
        if (last) seal(last.seq);
        return batch;
      });
    },
    sealAllInTxn() {
      const last = num('outbox_seq');
      seal(last);
      return last;
    },
    async ack(seqs) {
      await root.transaction(() => {
        for (const seq of seqs) dropSync(seq);
      });
    },
    async ackThrough(through) {
      await root.transaction(() => {
        for (const { key } of ops.getRange({ end: through + 1 })) dropSync(key);
      });
    },
  };
}
