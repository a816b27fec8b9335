import type { CacheEntry, SyncOp } from '../../common/wire/control-api.js';
import type { OutboxOp } from '../index/outbox.js';
import type { IndexEntry } from '../index/types.js';

/**
 * Index entries and outbox ops in the control plane's wire shapes (common/wire/control-api.ts). Op ids
 * are `<outbox epoch>:<seq>`: unique per index, and a resent op keeps its id, so the control plane's
 * idempotency (sync_applied_ops) drops a repeat.
 */
export function toCacheEntry(e: IndexEntry): CacheEntry {
  return {
    kind: e.kind,
    account: e.account,
    key: e.key,
    image_id: e.image_id,
    runtime: e.runtime,
    requirements_sha256: e.requirements_sha256,
    // The central table keeps script_sha256/deps_key for script images only (a deps row's key is its deps_key).
    script_sha256: e.kind === 'image' ? e.script_sha256 : null,
    deps_key: e.kind === 'image' ? e.deps_key : null,
    lock_sha256: e.lock_sha256 ?? null,
    size_bytes: Math.max(0, Math.round(e.size_bytes)),
    created_at: new Date(e.created_at).toISOString(),
    last_used_at: new Date(e.last_used_at).toISOString(),
    use_count: e.use_count,
  };
}

export function opId(epoch: string, seq: number): string {
  return `${epoch}:${seq}`;
}

export function toSyncOp(epoch: string, op: OutboxOp): SyncOp {
  const target = { id: opId(epoch, op.seq), kind: op.kind, account: op.account, key: op.key };
  if (op.type === 'upsert') {
    if (!op.entry) throw new Error(`outbox op ${op.seq}: upsert without entry`);
    return { ...toCacheEntry(op.entry), ...target, type: 'upsert' };
  }
  if (op.type === 'delete') return { ...target, type: 'delete' };
  return { ...target, type: 'touch', count: op.count ?? 1, last_used_at: new Date(op.last_used_at ?? op.at).toISOString() };
}
