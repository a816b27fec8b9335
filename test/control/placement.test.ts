import { describe, expect, it } from 'vitest';
import type { PlacementItem, ScoreReason } from '../../common/wire/control-api.js';
import { buildProgram } from '../../control/cli/main.js';
import { configFromFlags } from '../../control/cli/options.js';
import { dispatchLoad, pick } from '../../control/placement/index.js';
import {
  COST_CONSTANTS, COST_WEIGHT, LOAD_WEIGHT, loadRatio, pullSeconds, rankPlacement, spreadFactor, tierOf, topK, type PlacementInput,
} from '../../control/placement/rank.js';

const MB = 1024 * 1024;
const cost = { pullBytesPerS: 100 * MB };
const w = (worker_id: string, running = 0, capacity = 4) => ({ worker_id, running, capacity });
const held = (...ids: string[]) => ids.map((worker_id) => ({ worker_id }));
const none = { image: null, deps: null };

function rank(over: Partial<PlacementInput> & Pick<PlacementInput, 'candidates'>) {
  return rankPlacement({
    liveWorkers: over.candidates.length, imageHolders: [], depsHolders: [], registry: none, hasRequirements: true, limit: 100, cost, ...over,
  });
}
const ids = (ranked: { worker_id: string }[]) => ranked.map((p) => p.worker_id);
const costReason = (item: PlacementItem): ScoreReason => item.reasons.find((r) => r.factor === 'cost')!;

describe('placement cost tiers', () => {
  it('puts a worker in the first tier that applies', () => {
    const reg = { image: { size_bytes: 1 }, deps: { size_bytes: 1 } };
    const holds = (image: boolean, deps: boolean, olderImage = false, olderDeps = false) => ({ image, deps, olderImage, olderDeps });
    expect(tierOf(holds(true, true), reg)).toBe('local-image');
    expect(tierOf(holds(false, true), reg)).toBe('pull-image');
    expect(tierOf(holds(false, true), { image: null, deps: reg.deps })).toBe('local-deps');
    expect(tierOf(holds(false, false), { image: null, deps: reg.deps })).toBe('pull-deps');
    expect(tierOf(holds(false, false, true, true), none)).toBe('older-lock-image');
    expect(tierOf(holds(false, false, false, true), none)).toBe('older-lock-deps');
    expect(tierOf(holds(false, false), none)).toBe('build');
    // A holding of the newest lock comes first; one of an older lock only before building everything.
    expect(tierOf(holds(false, true, true, false), none)).toBe('local-deps');
    expect(tierOf(holds(false, false, true, false), { image: null, deps: reg.deps })).toBe('pull-deps');
  });

  it('estimates a pull as a start cost plus size at the configured throughput', () => {
    expect(pullSeconds(170 * MB, cost)).toBeCloseTo(COST_CONSTANTS.pullStartS + 1.7, 5);
    expect(pullSeconds(170 * MB, { pullBytesPerS: 10 * MB })).toBeCloseTo(COST_CONSTANTS.pullStartS + 17, 5);
    expect(pullSeconds(null, cost)).toBeCloseTo(COST_CONSTANTS.pullStartS + COST_CONSTANTS.unknownSizeBytes / (100 * MB), 5);
  });

  it('orders holder, dependency holder and builder at equal load, without a registry', () => {
    const ranked = rank({ imageHolders: held('c'), depsHolders: held('b', 'c'), candidates: [w('a'), w('b'), w('c')] });
    expect(ids(ranked)).toEqual(['c', 'b', 'a']);
    expect(ranked.map((p) => costReason(p).estimate_s)).toEqual([0, COST_CONSTANTS.scriptLayerS, COST_CONSTANTS.fullBuildS]);
    expect(costReason(ranked[2]!).score).toBe(0);
  });

  it('orders holder, dependency holder and dependency puller at equal load when the registry has the layer', () => {
    const ranked = rank({ imageHolders: held('c'), depsHolders: held('b'), registry: { image: null, deps: { size_bytes: 400 * MB } }, candidates: [w('a'), w('b'), w('c')] });
    expect(ids(ranked)).toEqual(['c', 'b', 'a']);
    expect(costReason(ranked[2]!).detail).toMatch(/^pull dependency layer \(400 MB\), build the script layer ≈ 7 s/);
    expect(costReason(ranked[2]!).estimate_s).toBe(7);
  });

  it('ranks a dependency puller above a builder, and an image puller above both', () => {
    const reg = { image: null, deps: { size_bytes: 400 * MB } };
    // Same grid shape, three submissions: what a worker without anything would do in each.
    const pullDeps = rank({ imageHolders: held('h'), registry: reg, candidates: [w('h'), w('x')] })[1]!;
    const build = rank({ imageHolders: held('h'), candidates: [w('h'), w('x')] })[1]!;
    expect(costReason(pullDeps).estimate_s).toBeLessThan(costReason(build).estimate_s!);
    expect(pullDeps.score).toBeGreaterThan(build.score);
    const pullImage = rank({ registry: { image: { size_bytes: 170 * MB }, deps: null }, candidates: [w('x')] })[0]!;
    expect(costReason(pullImage).estimate_s).toBeLessThan(costReason(pullDeps).estimate_s!);
  });

  it('ranks the image holder above workers that can pull it, at equal load', () => {
    const ranked = rank({ imageHolders: held('z'), registry: { image: { size_bytes: 170 * MB }, deps: null }, candidates: [w('a'), w('z'), w('m')] });
    expect(ids(ranked)).toEqual(['z', 'a', 'm']);
    expect(costReason(ranked[1]!).detail).toMatch(/^pull script image \(170 MB\) ≈ 2\.7 s \(spread factor 0\.5: 3\/3 live workers can get the script image without building\)$/);
    expect(costReason(ranked[1]!).estimate_s).toBe(2.7);
  });

  it('assumes a mid-sized image when the registry recorded no size', () => {
    const [top] = rank({ registry: { image: { size_bytes: null }, deps: null }, candidates: [w('a')] });
    expect(costReason(top!).detail).toMatch(/^pull script image \(size unknown\) ≈ 6 s/);
  });

  it('counts only the script layer as the build of a script without requirements', () => {
    const [top] = rank({ hasRequirements: false, candidates: [w('a')] });
    expect(costReason(top!).estimate_s).toBe(COST_CONSTANTS.scriptLayerS);
    expect(costReason(top!).detail).toMatch(/^build the script layer \(no requirements\)/);
  });

  it('lets a much lighter load beat a 2 s script layer, but not a full build', () => {
    // Busy image holder (3/4) against an idle dependency holder: 2 s is worth less than half a worker.
    expect(ids(rank({ imageHolders: held('busy'), depsHolders: held('idle'), candidates: [w('busy', 3), w('idle', 0)] }))).toEqual(['idle', 'busy']);
    // Busy image holder against an idle worker that would build for a minute.
    expect(ids(rank({ imageHolders: held('busy'), candidates: [w('busy', 3), w('idle', 0)] }))).toEqual(['busy', 'idle']);
  });

  it('prefers holders of the newest lock; holders of an older lock rank below them and above workers that must build', () => {
    // n-img and n-deps hold the newest lock; o-img and o-deps an older one; bare holds nothing. Equal load.
    const ranked = rank({
      imageHolders: held('n-img'), depsHolders: held('n-img', 'n-deps'), olderImageHolders: held('o-img'), olderDepsHolders: held('o-img', 'o-deps'),
      candidates: [w('bare'), w('o-deps'), w('o-img'), w('n-deps'), w('n-img')],
    });
    expect(ids(ranked)).toEqual(['n-img', 'n-deps', 'o-img', 'o-deps', 'bare']);
    const share = COST_CONSTANTS.olderLockRebuildShare;
    expect(ranked.map((p) => costReason(p).estimate_s)).toEqual([
      0, COST_CONSTANTS.scriptLayerS, share * COST_CONSTANTS.fullBuildS, (1 - share) * COST_CONSTANTS.scriptLayerS + share * COST_CONSTANTS.fullBuildS,
      COST_CONSTANTS.fullBuildS,
    ]);
    expect(costReason(ranked[2]!).detail).toMatch(/^script image present on an older lock \(may rebuild on the newest\) ≈ 30 s/);
    expect(costReason(ranked[3]!).detail).toMatch(/^dependency layer present on an older lock \(may rebuild on the newest\) ≈ 31 s/);
    expect(costReason(ranked[3]!).score).toBeGreaterThan(costReason(ranked[4]!).score);
    // Holders of an older lock do not count as reach: with only them, the spread stays 1.
    const older = rank({ olderImageHolders: held('a', 'b'), candidates: [w('a'), w('b')] });
    expect(costReason(older[0]!).detail).toMatch(/\(spread factor 1: 0\/2 live workers can get the dependency layer without building\)$/);
  });

  it('weighs the lock above load: a full holder of the newest lock beats an idle older one, a full older one an idle builder', () => {
    expect(ids(rank({ depsHolders: held('new'), olderDepsHolders: held('old'), candidates: [w('new', 4), w('old', 0)] }))).toEqual(['new', 'old']);
    expect(ids(rank({ olderDepsHolders: held('old'), candidates: [w('old', 4), w('bare', 0)] }))).toEqual(['old', 'bare']);
  });

  it('sums cost and load, and explains each with the estimate', () => {
    const [top] = rank({ imageHolders: held('a'), candidates: [w('a', 1), w('b')], limit: 1 });
    expect(top!.reasons.map((r) => r.factor)).toEqual(['cost', 'load']);
    const spread = spreadFactor(1, 2);
    expect(top!.reasons.map((r) => r.score)).toEqual([COST_WEIGHT * spread, LOAD_WEIGHT * 0.75]);
    expect(top!.score).toBe(COST_WEIGHT * spread + LOAD_WEIGHT * 0.75);
    expect(top!.reasons[0]).toMatchObject({ estimate_s: 0, detail: expect.stringMatching(/^script image present ≈ 0 s \(spread factor 0\.75: 1\/2 live workers/) as unknown });
    expect(top!.reasons[1]).toEqual({ factor: 'load', score: 15, detail: '1/4 executions running' });
  });
});

describe('placement spread and load', () => {
  it('scales the cost down as more live workers can get the artifact without building', () => {
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

  /** Dispatches a batch one at a time as dispatch does (outstanding counts as load); returns the count per worker. */
  function dispatchBatch(n: number, input: Omit<PlacementInput, 'candidates' | 'limit' | 'liveWorkers'>, workers: string[]): Record<string, number> {
    const counts = Object.fromEntries(workers.map((id) => [id, 0]));
    for (let i = 0; i < n; i++) {
      const candidates = workers.map((id) => dispatchLoad({ worker_id: id, capacity: 4 }, counts[id]!));
      counts[pick(rankPlacement({ ...input, liveWorkers: workers.length, candidates, limit: workers.length }))!]!++;
    }
    return counts;
  }

  it('spreads a batch over every worker when all can pull the image, instead of piling onto the one holder', () => {
    const counts = dispatchBatch(8, { imageHolders: held('w0'), depsHolders: [], registry: { image: { size_bytes: 170 * MB }, deps: null }, hasRequirements: true, cost }, ['w0', 'w1', 'w2', 'w3']);
    expect(counts).toEqual({ w0: 2, w1: 2, w2: 2, w3: 2 });
    // Without the registry the others would have to build for a minute: the whole batch waits for the holder.
    const alone = dispatchBatch(8, { imageHolders: held('w0'), depsHolders: [], registry: none, hasRequirements: true, cost }, ['w0', 'w1', 'w2', 'w3']);
    expect(alone.w0).toBe(8);
  });

  it('spreads by load alone when every worker holds the image, ties broken by id whatever the input order', () => {
    const ranked = rank({ imageHolders: held('c', 'a', 'b'), candidates: [w('c', 1), w('a', 1), w('b', 0)] });
    expect(ids(ranked)).toEqual(['b', 'a', 'c']);
    expect(new Set(ranked.map((p) => costReason(p).score)).size).toBe(1);
    const shuffled = rank({ imageHolders: held('b', 'c', 'a'), candidates: [w('a', 1), w('b', 0), w('c', 1)] });
    expect(shuffled).toEqual(ranked);
  });

  it('breaks equal scores by worker id, and ranks a lower load first at equal cost', () => {
    // Same tier, same load ratio (2/8 and 1/4): equal scores, so the id decides.
    const ranked = rank({ candidates: [w('b', 1, 4), w('a', 2, 8)] });
    expect(ranked[0]!.score).toBe(ranked[1]!.score);
    expect(ids(ranked)).toEqual(['a', 'b']);
    expect(ids(rank({ candidates: [w('a', 1, 4), w('b', 0, 4)] }))).toEqual(['b', 'a']);
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
      imageHolders: candidates.filter((_, i) => i % 13 === 0).map((c, i) => ({ worker_id: c.worker_id, size_bytes: (100 + i * 50) * MB })),
      depsHolders: candidates.filter((_, i) => i % 2 === 0).map((c) => ({ worker_id: c.worker_id, size_bytes: 300 * MB })),
      registry: { image: null, deps: { size_bytes: 900 * MB } },
      candidates,
    };
    const all = rank({ ...input, limit: 150 });
    expect(rank({ ...input, limit: 10 })).toEqual(all.slice(0, 10));
    for (let i = 1; i < all.length; i++) expect(all[i - 1]!.score).toBeGreaterThanOrEqual(all[i]!.score);
  });
});

describe('placement pull throughput setting', () => {
  it('defaults to 100 MB/s, comes from --placement-pull-mbps, and refuses 0 naming the flag', () => {
    expect(configFromFlags({}, {}).placementPullMbps).toBe(100);
    expect(configFromFlags({ placementPullMbps: '20' }, {}).placementPullMbps).toBe(20);
    expect(() => configFromFlags({ placementPullMbps: '0' }, {})).toThrow(/--placement-pull-mbps must be/);
    expect(() => configFromFlags({ placementPullMbps: 'fast' }, {})).toThrow(/--placement-pull-mbps/);
    const serve = buildProgram({}).commands.find((c) => c.name() === 'serve');
    expect(serve?.helpInformation()).toContain('--placement-pull-mbps');
  });
});
