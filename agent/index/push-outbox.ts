import type { Database, RootDatabase } from 'lmdb';
import type { EntryKind, EntryRef, IndexEntry } from './types.js';

/**
 * The durable push outbox: images this agent built that the registry or the control plane does not know
 * yet, one sub-database of the index's LMDB environment,
 *
 *   pushes  [kind, account, key] → PushJob
 *
 * A job is written in the SAME transaction as the built entry (index.putBuilt with `queuePush`), before
 * anything is pushed: a kill -9 anywhere after the build leaves the job, and the background pusher
 * (agent/registry/push-outbox-runner.ts) resumes it after the restart. A job goes `push` → `record` (the
 * registry has it; the control plane must still learn the digest) → gone. Removing the entry (prune,
 * reconcile) drops its job in the same transaction: an image that is gone is not pushed.
 */
export interface PushJob extends EntryRef {
  image_id: string;
  /** What the control plane's record needs besides the digest (common/wire/registry-api.ts). */
  runtime: string;
  base_image_id: string;
  requirements_sha256: string | null;
  script_sha256: string | null;
  deps_key: string | null;
  state: 'push' | 'record';
  /** Set once pushed (state `record`). */
  manifest_digest: string | null;
  size_bytes: number | null;
  queued_at: number;
  attempts: number;
}

export interface PushOutboxStore {
  /** Inside a write transaction (putBuilt's). */
  enqueueInTxn(entry: IndexEntry, at: number): void;
  /** Inside a write transaction (remove's). */
  dropInTxn(ref: EntryRef): void;
  get(ref: EntryRef): PushJob | undefined;
  list(): PushJob[];
  depth(): number;
  /** The push succeeded: only the record is left. Does nothing when the job is gone or is for another image. */
  markPushed(ref: EntryRef, imageId: string, digest: string, size: number | null): Promise<void>;
  /** A failed attempt (for the backoff and the logs). */
  markAttempt(ref: EntryRef, imageId: string): Promise<void>;
  /** Done (recorded) or hopeless (image gone): removed, only when it still is the job for `imageId`. */
  remove(ref: EntryRef, imageId: string): Promise<void>;
}

type JobKey = [EntryKind, string, string];
const keyOf = (ref: EntryRef): JobKey => [ref.kind, ref.account, ref.key];

export function createPushOutboxStore(root: RootDatabase): PushOutboxStore {
  const jobs: Database<PushJob, JobKey> = root.openDB<PushJob, JobKey>({ name: 'pushes' });

  async function update(ref: EntryRef, imageId: string, change: (job: PushJob) => PushJob | null): Promise<void> {
    await root.transaction(() => {
      const job = jobs.get(keyOf(ref));
      // A rebuild replaced the job meanwhile: the answer about the old image does not apply to it.
      if (!job || job.image_id !== imageId) return;
      const next = change(job);
      if (next) jobs.putSync(keyOf(ref), next);
      else jobs.removeSync(keyOf(ref));
    });
  }

  return {
    enqueueInTxn(entry, at) {
      jobs.putSync(keyOf(entry), {
        kind: entry.kind, account: entry.account, key: entry.key, image_id: entry.image_id, runtime: entry.runtime,
        base_image_id: entry.base_image_id, requirements_sha256: entry.requirements_sha256,
        script_sha256: entry.kind === 'image' ? entry.script_sha256 : null,
        deps_key: entry.kind === 'image' ? entry.deps_key : null,
        state: 'push', manifest_digest: null, size_bytes: null, queued_at: at, attempts: 0,
      });
    },
    dropInTxn(ref) {
      jobs.removeSync(keyOf(ref));
    },
    get: (ref) => jobs.get(keyOf(ref)),
    list: () => [...jobs.getRange({})].map((r) => r.value),
    depth: () => jobs.getCount(),
    markPushed: (ref, imageId, digest, size) => update(ref, imageId, (job) => ({ ...job, state: 'record', manifest_digest: digest, size_bytes: size })),
    markAttempt: (ref, imageId) => update(ref, imageId, (job) => ({ ...job, attempts: job.attempts + 1 })),
    remove: (ref, imageId) => update(ref, imageId, () => null),
  };
}
