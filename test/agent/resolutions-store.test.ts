import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import type { ResolutionRecord } from '../../agent/index/resolutions.js';
import { lockFromPipReport, type Lock } from '../../common/lock.js';

/** The resolution cache's LMDB store (agent/index/resolutions.ts) and its prune, on a real index. */
const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

function lockOf(name: string, version: string): Lock {
  const file = `${name}-${version}-py3-none-any.whl`;
  return lockFromPipReport({
    version: '1',
    install: [{ metadata: { name, version }, download_info: { url: `file:///w/${file}`, archive_info: { hash: `sha256=${sha(file)}` } } }],
  });
}

const record = (lock: Lock, checkedAt: number): ResolutionRecord => ({
  lock_sha256: lock.sha256,
  requirements_sha256: sha('rgtest-a'),
  base_image_id: `sha256:${'b'.repeat(64)}`,
  resolved_at: checkedAt,
  checked_at: checkedAt,
  failure: null,
});

describe('resolution store', () => {
  let dir: string;
  let index: AgentIndex;
  const open = (): AgentIndex => createIndex({ path: join(dir, 'index') });
  const key1 = sha('key-1');
  const key2 = sha('key-2');
  const L1 = lockOf('rgtest-a', '1.0');
  const L2 = lockOf('rgtest-a', '2.0');
  const L3 = lockOf('rgtest-c', '1.0');
  const DAY = 86_400_000;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-resolutions-'));
    index = open();
  });
  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps records per account with their locks, across a reopen', async () => {
    await index.resolutions.put('acme', key1, record(L1, 1000), L1);
    await index.resolutions.put('globex', key1, record(L2, 2000), L2);
    await index.close();
    index = open();
    expect(index.resolutions.get('acme', key1)).toEqual(record(L1, 1000));
    expect(index.resolutions.get('globex', key1)).toEqual(record(L2, 2000));
    expect(index.resolutions.get('other', key1)).toBeUndefined();
    expect(index.resolutions.lock(L1.sha256)).toEqual(L1);
    expect(index.resolutions.lockUsedAt(L2.sha256)).toBe(2000);
    expect(index.resolutions.list().map((r) => r.account).sort()).toEqual(['acme', 'globex']);
  });

  it('never writes a record naming a lock it does not hold', async () => {
    await expect(index.resolutions.put('acme', key1, record(L1, 1000), L2)).rejects.toThrow(/must name the lock/);
    await expect(index.resolutions.putRecord('acme', key1, record(L1, 1000))).rejects.toThrow(/must name a lock the store holds/);
    expect(index.resolutions.get('acme', key1)).toBeUndefined();
    await index.resolutions.putLock(L1, 1000);
    await index.resolutions.putRecord('acme', key1, { ...record(L1, 5000), failure: { at: 5000, message: 'ERROR: x' } });
    expect(index.resolutions.get('acme', key1)?.failure).toEqual({ at: 5000, message: 'ERROR: x' });
  });

  it('refuses keys and digests that are not sha256 hex', async () => {
    await expect(index.resolutions.put('acme', '../x', record(L1, 1), L1)).rejects.toThrow(/resolution key/);
    expect(() => index.resolutions.get('acme', 'nope')).toThrow(/resolution key/);
    expect(index.resolutions.lock('../../etc/passwd')).toBeUndefined();
  });

  it('prune drops records not checked for the age, and locks neither named, kept, nor used for as long', async () => {
    const now = 100 * DAY;
    // Old record on L1: goes, and L1 with it (nothing else names it, and it is old).
    await index.resolutions.put('acme', key1, record(L1, now - 31 * DAY), L1);
    // Fresh record on L2: stays, with L2 even though L2 was first stored long ago.
    await index.resolutions.putLock(L2, now - 90 * DAY);
    await index.resolutions.putRecord('acme', key2, record(L2, now - DAY));
    // L3: no record; kept while used recently, dropped when old unless the caller still uses it.
    await index.resolutions.putLock(L3, now - DAY);
    expect(await index.resolutions.prune({ now, maxAgeMs: 30 * DAY })).toEqual({ records: 1, locks: 1 });
    expect(index.resolutions.get('acme', key1)).toBeUndefined();
    expect(index.resolutions.get('acme', key2)).toBeDefined();
    expect(index.resolutions.lock(L1.sha256)).toBeUndefined();
    expect(index.resolutions.lock(L2.sha256)).toEqual(L2);
    expect(index.resolutions.lock(L3.sha256)).toEqual(L3);

    const later = now + 40 * DAY;
    expect(await index.resolutions.prune({ now: later, maxAgeMs: 30 * DAY, keepLocks: new Set([L3.sha256]) })).toEqual({ records: 1, locks: 1 });
    expect(index.resolutions.lock(L2.sha256)).toBeUndefined();
    expect(index.resolutions.lock(L3.sha256)).toEqual(L3);
    expect(await index.resolutions.prune({ now: later, maxAgeMs: 30 * DAY })).toEqual({ records: 0, locks: 1 });
    expect(index.resolutions.lockCount()).toBe(0);
    expect(index.resolutions.list()).toEqual([]);
  });
});
