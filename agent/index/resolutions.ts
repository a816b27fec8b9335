import type { Database, RootDatabase } from 'lmdb';
import { assertSha256Hex } from '../../common/digest.js';
import type { Lock } from '../../common/lock.js';

/**
 * The resolution cache (agent/builder/resolution.ts keeps it), two sub-databases of the index's LMDB
 * environment, so it survives restarts like the entries do:
 *
 *   resolutions  [account, resolution_key] → ResolutionRecord  (which lock a file resolved to, and when)
 *   locks        lock_sha256              → StoredLock         (the lock itself, shared by every record)
 *
 * Per account like the entries: one tenant's resolution is never another's answer. A record is written
 * with its lock in one transaction, so a record never names a lock the store does not hold. A lock a
 * record stopped naming (a refresh found a new set) stays until prune: images built on it are still
 * described by it.
 */
export interface ResolutionRecord {
  lock_sha256: string;
  requirements_sha256: string;
  base_image_id: string;
  /** Epoch ms of the last successful resolution (it produced lock_sha256). */
  resolved_at: number;
  /** Epoch ms of the last attempt, successful or not: the freshness window counts from here. */
  checked_at: number;
  /** The last refresh failed: the lock is the last good one. Null after a success. */
  failure: { at: number; message: string } | null;
}

export interface StoredLock {
  lock: Lock;
  /** Epoch ms the lock was last written or named by a new record: prune keeps it this long after. */
  used_at: number;
}

export interface ResolutionPruneOptions {
  now: number;
  /** Records not checked for longer than this go, and so do locks neither used for as long nor named. */
  maxAgeMs: number;
  /** Lock digests still used elsewhere (e.g. by dependency images): kept whatever their age. */
  keepLocks?: ReadonlySet<string>;
}

export interface ResolutionStore {
  get(account: string, resolutionKey: string): ResolutionRecord | undefined;
  lock(lockSha256: string): Lock | undefined;
  /** When the lock was last written (undefined: not held). */
  lockUsedAt(lockSha256: string): number | undefined;
  /** Writes the record and its lock in one transaction. */
  put(account: string, resolutionKey: string, record: ResolutionRecord, lock: Lock): Promise<void>;
  /** Writes the record alone; its lock must already be held (a failed refresh keeps the last good lock). */
  putRecord(account: string, resolutionKey: string, record: ResolutionRecord): Promise<void>;
  /** Writes a lock no record names (a fully locked file is its own lock). */
  putLock(lock: Lock, usedAt: number): Promise<void>;
  list(): Array<{ account: string; resolution_key: string; record: ResolutionRecord }>;
  lockCount(): number;
  /** Bounds the store: see ResolutionPruneOptions. Resolves to what was removed. */
  prune(options: ResolutionPruneOptions): Promise<{ records: number; locks: number }>;
}

type RecordKey = [string, string];

export function createResolutionStore(root: RootDatabase): ResolutionStore {
  const records: Database<ResolutionRecord, RecordKey> = root.openDB<ResolutionRecord, RecordKey>({ name: 'resolutions' });
  const locks: Database<StoredLock, string> = root.openDB<StoredLock, string>({ name: 'locks' });

  const keyOf = (account: string, resolutionKey: string): RecordKey => {
    assertSha256Hex(resolutionKey, 'resolution key');
    return [account, resolutionKey];
  };
  const lockKey = (lockSha256: string): string => {
    assertSha256Hex(lockSha256, 'lock_sha256');
    return lockSha256;
  };
  const isDigest = (value: string): boolean => /^[0-9a-f]{64}$/.test(value);

  return {
    get: (account, resolutionKey) => records.get(keyOf(account, resolutionKey)),
    lock: (sha) => (isDigest(sha) ? locks.get(sha)?.lock : undefined),
    lockUsedAt: (sha) => (isDigest(sha) ? locks.get(sha)?.used_at : undefined),
    async put(account, resolutionKey, record, lock) {
      if (record.lock_sha256 !== lock.sha256) throw new Error('a resolution record must name the lock written with it');
      const key = keyOf(account, resolutionKey);
      await root.transaction(() => {
        locks.putSync(lockKey(lock.sha256), { lock, used_at: record.checked_at });
        records.putSync(key, record);
      });
    },
    async putRecord(account, resolutionKey, record) {
      const key = keyOf(account, resolutionKey);
      await root.transaction(() => {
        if (locks.get(lockKey(record.lock_sha256)) === undefined) throw new Error('a resolution record must name a lock the store holds');
        records.putSync(key, record);
      });
    },
    async putLock(lock, usedAt) {
      await locks.put(lockKey(lock.sha256), { lock, used_at: usedAt });
    },
    list: () => [...records.getRange({})].map(({ key, value }) => ({ account: key[0], resolution_key: key[1], record: value })),
    lockCount: () => locks.getCount(),
    async prune({ now, maxAgeMs, keepLocks = new Set<string>() }) {
      // One transaction: a record written meanwhile cannot lose the lock it names.
      return root.transaction(() => {
        // Keys are collected first and removed after: no cursor walks over its own deletions.
        const named = new Set<string>();
        const oldRecords: RecordKey[] = [];
        for (const { key, value } of records.getRange({})) {
          if (now - value.checked_at > maxAgeMs) oldRecords.push(key);
          else named.add(value.lock_sha256);
        }
        const oldLocks: string[] = [];
        for (const { key, value } of locks.getRange({})) {
          if (!named.has(key) && !keepLocks.has(key) && now - value.used_at > maxAgeMs) oldLocks.push(key);
        }
        for (const key of oldRecords) records.removeSync(key);
        for (const key of oldLocks) locks.removeSync(key);
        return { records: oldRecords.length, locks: oldLocks.length };
      });
    },
  };
}
