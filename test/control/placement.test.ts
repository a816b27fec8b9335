import { describe, expect, it } from 'vitest';
import { DEPS_WEIGHT, IMAGE_WEIGHT, LOAD_WEIGHT, loadRatio, rankPlacement, sizeFactor, spreadFactor, topK } from '../../control/placement.js';

const MB = 1024 * 1024;
const w = (worker_id: string, running = 0, capacity = 4) => ({ worker_id, running, capacity });

describe('placement scoring', () => {
  it('weights size like ImageLocality, with presence alone worth half', () => {
    expect(sizeFactor(0)).toBe(0.5);
    expect(sizeFactor(23 * MB)).toBe(0.5);
    expect(sizeFactor(1000 * MB)).toBe(1);
    expect(sizeFactor(5000 * MB)).toBe(1);
    expect(sizeFactor(511.5 * MB)).toBeCloseTo(0.75, 5);
  });

  it('scales presence down as more live workers hold it', () => {
    expect(spreadFactor(1, 1000)).toBeCloseTo(0.9995, 4);
    expect(spreadFactor(5, 10)).toBe(0.75);
    expect(spreadFactor(10, 10)).toBe(0.5);
    expect(spreadFactor(3, 0)).toBe(1);
  });

  it('measures load as running over capacity, a worker without capacity counting as full', () => {
    expect(loadRatio(w('a', 1, 4))).toBe(0.25);
    expect(loadRatio(w('a', 9, 4))).toBe(1);
    expect(loadRatio(w('a', 0, 0))).toBe(1);
  });

  it('ranks the image holder first even when it is busier', () => {
    const ranked = rankPlacement({
      liveWorkers: 3,
      imageHolders: [{ worker_id: 'busy', size_bytes: 300 * MB }],
      depsHolders: [],
      candidates: [w('busy', 3), w('idle', 0), w('mid', 2)],
      limit: 10,
    });
    expect(ranked.map((p) => p.worker_id)).toEqual(['busy', 'idle', 'mid']);
    expect(ranked[1]!.reasons).toEqual([{ factor: 'load', score: LOAD_WEIGHT, detail: '0/4 executions running' }]);
  });

  it('sums image, deps and load, and explains each part', () => {
    const [top] = rankPlacement({
      liveWorkers: 2,
      imageHolders: [{ worker_id: 'a', size_bytes: 1000 * MB }],
      depsHolders: [{ worker_id: 'a', size_bytes: 1000 * MB }],
      candidates: [w('a', 0), w('b', 0)],
      limit: 1,
    });
    expect(top!.reasons.map((r) => r.score)).toEqual([IMAGE_WEIGHT * 0.75, DEPS_WEIGHT * 0.75, LOAD_WEIGHT]);
    expect(top!.score).toBe(IMAGE_WEIGHT * 0.75 + DEPS_WEIGHT * 0.75 + LOAD_WEIGHT);
  });

  it('lets load decide when every worker holds the image, and breaks ties by id', () => {
    const holders = ['c', 'a', 'b'].map((id) => ({ worker_id: id, size_bytes: 200 * MB }));
    const ranked = rankPlacement({ liveWorkers: 3, imageHolders: holders, depsHolders: [], candidates: [w('c', 1), w('a', 1), w('b', 0)], limit: 3 });
    expect(ranked.map((p) => p.worker_id)).toEqual(['b', 'a', 'c']);
  });

  it('prefers a dependency-layer holder over a bare worker at equal load', () => {
    const ranked = rankPlacement({ liveWorkers: 2, imageHolders: [], depsHolders: [{ worker_id: 'z', size_bytes: 50 * MB }], candidates: [w('a'), w('z')], limit: 2 });
    expect(ranked.map((p) => p.worker_id)).toEqual(['z', 'a']);
  });

  it('selects the first k like a full sort would', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 50;
    const cmp = (a: { v: number; id: number }, b: { v: number; id: number }) => a.v - b.v || a.id - b.id;
    for (const n of [0, 1, 5, 39, 40, 41, 120, 500]) {
      const items = Array.from({ length: n }, (_, id) => ({ v: rnd(), id }));
      for (const k of [1, 3, 10, 200]) expect(topK(items, k, cmp)).toEqual([...items].sort(cmp).slice(0, k));
    }
  });

  it('ranks many candidates to a limit the same as ranking them all', () => {
    const candidates = Array.from({ length: 150 }, (_, i) => w(`w${i}`, i % 5, 4));
    const input = {
      liveWorkers: 150,
      imageHolders: candidates.filter((_, i) => i % 13 === 0).map((c, i) => ({ worker_id: c.worker_id, size_bytes: (100 + i * 50) * MB })),
      depsHolders: candidates.filter((_, i) => i % 2 === 0).map((c) => ({ worker_id: c.worker_id, size_bytes: 300 * MB })),
      candidates,
    };
    const all = rankPlacement({ ...input, limit: 150 });
    expect(rankPlacement({ ...input, limit: 10 })).toEqual(all.slice(0, 10));
    for (let i = 1; i < all.length; i++) expect(all[i - 1]!.score).toBeGreaterThanOrEqual(all[i]!.score);
  });
});
