import { describe, expect, it } from 'vitest';
import type { IndexEntry } from '../../agent/index/types.js';
import { selectPrune, type PruneSelectionInput } from '../../agent/prune/select.js';

const DAY = 86_400_000;
const NOW = 100 * DAY;
let n = 0;
const e = (over: Partial<IndexEntry>): IndexEntry => ({
  kind: 'image', account: 'acme', key: String(++n).padStart(64, '0'), image_id: `sha256:${n}`, image_tag: 't', runtime: 'py', base_image_id: 'b',
  script_sha256: 's', requirements_sha256: null, deps_key: null, size_bytes: 100, created_at: 0, last_used_at: NOW, use_count: 1, ...over,
});
const input = (entries: IndexEntry[], over: Partial<PruneSelectionInput> = {}): PruneSelectionInput => ({
  entries, now: NOW, ttlMs: 30 * DAY, minAgeMs: DAY, highPercent: 85, lowPercent: 80, protectedReason: () => undefined, ...over,
});

describe('prune selection', () => {
  it('TTL: unused past the TTL goes; min age, protection and live children keep entries', () => {
    const old = NOW - 31 * DAY;
    const expired = e({ last_used_at: old });
    const young = e({ last_used_at: old, created_at: NOW - 1000 });
    const inUse = e({ last_used_at: old });
    const deps = e({ kind: 'deps', last_used_at: old });
    const liveChild = e({ deps_key: deps.key, last_used_at: NOW });
    const deps2 = e({ kind: 'deps', last_used_at: old });
    const expiredChild = e({ deps_key: deps2.key, last_used_at: old });
    const { victims } = selectPrune(
      input([deps2, expired, young, inUse, deps, liveChild, expiredChild], { protectedReason: (x) => (x === inUse ? 'in_use' : undefined) }),
    );
    // deps2 goes with its only child, after it; deps stays for its live child.
    expect(victims.map((v) => [v.entry.key, v.reason])).toEqual([
      [expired.key, 'ttl'], [expiredChild.key, 'ttl'], [deps2.key, 'ttl'],
    ]);
  });

  it('disk: nothing below the high mark; above it LRU first until the low mark is reached', () => {
    const a = e({ last_used_at: NOW - 5000 });
    const b = e({ last_used_at: NOW - 9000, size_bytes: 60 });
    const c = e({ last_used_at: NOW - 7000 });
    const d = e({ last_used_at: NOW - 1000 });
    expect(selectPrune(input([a, b, c, d], { disk: { used_bytes: 84, total_bytes: 100 } })).victims).toEqual([]);
    // 1000 total, 900 used: 100 bytes to free → b (LRU) then c.
    const sel = selectPrune(input([a, b, c, d], { disk: { used_bytes: 900, total_bytes: 1000 }, highPercent: 85, lowPercent: 80 }));
    expect(sel.diskBytesToFree).toBe(100);
    expect(sel.victims.map((v) => [v.entry.key, v.reason])).toEqual([[b.key, 'disk'], [c.key, 'disk']]);
  });

  it('disk: a layer becomes removable once its images are chosen, and comes after them', () => {
    const deps = e({ kind: 'deps', last_used_at: NOW - 9000, size_bytes: 500 });
    const child = e({ deps_key: deps.key, last_used_at: NOW - 8000 });
    const other = e({ last_used_at: NOW - 1000, size_bytes: 50 });
    const sel = selectPrune(input([deps, child, other], { disk: { used_bytes: 1000, total_bytes: 1000 } }));
    expect(sel.victims.map((v) => v.entry.key)).toEqual([child.key, other.key, deps.key]);
  });
});
