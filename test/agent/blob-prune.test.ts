/**
 * Blob pruning by the agent's one removal planner (agent/prune/plan.ts): TTL, then least recently used
 * under the size bound, never a pinned blob — planned purely, and carried out on a real blob cache.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createBlobPruner, selectBlobPrune } from '../../agent/prune/blob-pruner.js';
import { planRemovals } from '../../agent/prune/plan.js';
import { createBlobCache, type BlobCache } from '../../agent/worker/blob-cache.js';

const rec = (sha256: string, size: number, lastUsed: number) => ({ sha256, size, created_at: 0, last_used_at: lastUsed });

describe('selectBlobPrune', () => {
  const blobs = [rec('a', 10, 1), rec('b', 10, 50), rec('c', 10, 60), rec('d', 10, 70)];
  const plan = (over: { ttlMs?: number; maxBytes?: number; pinned?: (s: string) => boolean }) =>
    selectBlobPrune(blobs, { now: 100, ttlMs: over.ttlMs ?? 1000, maxBytes: over.maxBytes ?? 100, pinned: over.pinned ?? (() => false) }).map((v) => [v.blob.sha256, v.reason]);

  it('removes nothing within the TTL and the bound', () => {
    expect(plan({})).toEqual([]);
  });
  it('removes what is unused past the TTL', () => {
    expect(plan({ ttlMs: 45 })).toEqual([['a', 'ttl'], ['b', 'ttl']]);
  });
  it('then the least recently used until the cache fits its bound, counting what the TTL freed', () => {
    expect(plan({ maxBytes: 20 })).toEqual([['a', 'size'], ['b', 'size']]);
    expect(plan({ ttlMs: 60, maxBytes: 20 })).toEqual([['a', 'ttl'], ['b', 'size']]);
  });
  it('never a pinned blob, whatever the TTL or the bound says', () => {
    expect(plan({ ttlMs: 0, maxBytes: 0, pinned: (s) => s === 'a' || s === 'c' })).toEqual([['b', 'ttl'], ['d', 'ttl']]);
    expect(plan({ maxBytes: 20, pinned: (s) => s === 'a' })).toEqual([['b', 'size'], ['c', 'size']]);
  });
});

describe('planRemovals', () => {
  it('lets an item go once what depends on it is chosen (a second round)', () => {
    // "layer" may go only after "image"; LRU order puts the layer first.
    type Item = { id: string; used: number };
    const items: Item[] = [{ id: 'layer', used: 1 }, { id: 'image', used: 2 }, { id: 'other', used: 3 }];
    const removable = (i: Item, chosen: ReadonlySet<Item>): boolean => i.id !== 'layer' || [...chosen].some((c) => c.id === 'image');
    const base = { items, now: 10, ttlMs: 100, lastUsedAt: (i: Item) => i.used, sizeBytes: () => 10, removable, bytesToFree: 30 };
    expect(planRemovals(base).map((v) => v.item.id)).toEqual(['image', 'other']);
    expect(planRemovals({ ...base, rounds: 2 }).map((v) => v.item.id)).toEqual(['image', 'other', 'layer']);
  });
});

describe('the blob pruner on a real blob cache', () => {
  const dirs: string[] = [];
  const caches: BlobCache[] = [];
  afterEach(async () => {
    await Promise.all(caches.splice(0).map((c) => c.close()));
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('removes least recently used blobs down to the bound, never one a run has pinned, and keeps their files in step', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-blob-prune-'));
    dirs.push(dir);
    let clock = 1_000;
    const blobs = createBlobCache({ dataDir: dir, now: () => clock });
    caches.push(blobs);
    const contents = ['first', 'second', 'third', 'fourth'].map((s) => Buffer.from(`${s} blob\n`));
    const shas: string[] = [];
    for (const data of contents) {
      const sha = createHash('sha256').update(data).digest('hex');
      shas.push(sha);
      await blobs.ensure(sha, () => Promise.resolve(Readable.from([data])), { size: data.length, maxBytes: 100 });
      clock += 1000;
    }
    const total = contents.reduce((n, c) => n + c.length, 0);
    const unpin = blobs.pin([shas[0]!]);
    // Room for two blobs: the oldest unpinned ones go.
    const pruner = createBlobPruner({ blobs, settings: () => ({ ttlMs: 86_400_000, maxBytes: total - contents[1]!.length - contents[2]!.length }), logger: pino({ level: 'silent' }), now: () => clock });
    expect(await pruner.prune()).toEqual({ removed: 2, bytes: contents[1]!.length + contents[2]!.length });
    expect(blobs.list().map((b) => b.sha256).sort()).toEqual([shas[0], shas[3]].sort());
    expect(existsSync(blobs.pathOf(shas[1]!))).toBe(false);
    expect(existsSync(blobs.pathOf(shas[0]!))).toBe(true);
    // A pinned blob is refused by the cache itself too, whatever a plan said.
    expect(await blobs.remove(shas[0]!)).toBe(false);
    unpin();
    expect(await blobs.remove(shas[0]!)).toBe(true);
    await pruner.stop();
  });

  it('serves requests made during a prune with one follow-up prune', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-blob-prune-'));
    dirs.push(dir);
    const blobs = createBlobCache({ dataDir: dir });
    caches.push(blobs);
    let plans = 0;
    const counting: BlobCache = { ...blobs, list: () => (plans++, blobs.list()) };
    const pruner = createBlobPruner({ blobs: counting, settings: () => ({ ttlMs: 1000, maxBytes: 1000 }), logger: pino({ level: 'silent' }) });
    await Promise.all([pruner.prune(), pruner.prune(), pruner.prune(), pruner.prune()]);
    expect(plans).toBe(2);
  });
});
