/**
 * Placement ranking, pure so it is unit-tested apart from SQL.
 *
 * Each candidate is in one tier of what it would have to do before the script runs, the first that applies:
 *   1. local-image — it holds the script image: runs now (≈ 0 s).
 *   2. pull-image  — the registry has the script image: pull it (start cost + size at the assumed throughput).
 *   3. local-deps  — it holds the dependency layer: builds only the small script layer.
 *   4. pull-deps   — the registry has the dependency layer: pull it, then build the script layer.
 *   5. older-lock-image — it holds the script image, built on an older lock than the newest one known
 *      for the requirements (query.ts): it may run on it, or first build the newest lock's layer.
 *   6. older-lock-deps  — the same for the dependency layer.
 *   7. build       — build everything (without requirements that is the script layer alone).
 * Tiers 1 and 3 count only holders of the newest lock: the "never stale" promise prefers a worker whose
 * dependencies are the current resolution over one that would run on (or rebuild) an older one.
 * The tier's estimate in seconds becomes the cost score, COST_WEIGHT × (1 − estimate / FULL_BUILD_S)
 * (clamped at 0): seconds have one exchange rate against load whatever the submission, so a 2 s script
 * layer weighs as little as it costs and a 60 s build as much.
 *
 * The spread factor (1 − 0.5 × reach/live) scales every candidate's cost score alike, where reach is how
 * many live workers can get the script image without building it (hold it, or all of them when the registry
 * has it), or, when none can, the dependency layer. When every worker can get the image cheaply, what a
 * holder saves over the others shrinks by half and load decides, so a batch spreads instead of piling
 * onto the one holder (the "whole workshop on one node" lesson); a lone holder in a grid that would
 * have to build keeps its full advantage. Scaling all candidates alike keeps the tiers in cost order at
 * equal load.
 *
 * load = LOAD_WEIGHT × (1 − running/capacity), 0 when full or without capacity. Going from idle to full
 * is worth LOAD_WEIGHT / COST_WEIGHT × FULL_BUILD_S ≈ 15 s of estimated cost (twice that at spread 0.5).
 * Ties are broken by lower load, then by worker id, so the order is deterministic.
 */
import type { PlacementItem, ScoreReason } from '../../common/wire/control-api.js';

export const COST_WEIGHT = 80;
export const LOAD_WEIGHT = 20;
const MB = 1024 * 1024;

/**
 * Fixed parts of the cost model, in seconds. Measured orders of magnitude on the project's own hosts,
 * not promises: they only have to order the tiers and weigh them against load.
 */
export const COST_CONSTANTS = {
  /** A pull's fixed part: registry round trips (manifest, auth, layer HEADs) and the engine's unpack start. */
  pullStartS: 1,
  /** FROM <deps layer> + COPY of one script: an engine build without pip, about two seconds. */
  scriptLayerS: 2,
  /**
   * A dependency layer built with pip, plus the script layer: a minute is typical for a few wheels; it is
   * also the reference that turns seconds into a score (an estimate at or above it scores 0).
   */
  fullBuildS: 60,
  /** A registry row without a recorded size (the push did not report it): assume a mid-sized image. */
  unknownSizeBytes: 500 * MB,
  /**
   * A holder of an older lock runs at once on its own resolution while that is fresh, or builds the newest
   * lock's layer (a full build) once its resolution catches up; the control plane cannot tell which, so
   * it weighs the two evenly: halfway between the holding's estimate and a full build.
   */
  olderLockRebuildShare: 0.5,
} as const;

export interface CostModel {
  /** Assumed pull throughput, bytes per second (config `placementPullMbps`). */
  pullBytesPerS: number;
}

export interface WorkerLoadInfo {
  worker_id: string;
  capacity: number;
  running: number;
}

/** A live worker holding the artifact (what it holds costs the same to use whatever its size). */
export interface Holder {
  worker_id: string;
}

/** What the registry has for the submission; size null when the push did not record it. */
export interface RegistryArtifact {
  size_bytes: number | null;
}

export interface PlacementInput {
  /** Live workers in total (the denominator of the spread). */
  liveWorkers: number;
  /** Holders of the newest lock (all holders when no entry names a lock). */
  imageHolders: readonly Holder[];
  depsHolders: readonly Holder[];
  /** Holders of an older lock only (tiers older-lock-image and older-lock-deps); none when omitted. */
  olderImageHolders?: readonly Holder[];
  olderDepsHolders?: readonly Holder[];
  registry: { image: RegistryArtifact | null; deps: RegistryArtifact | null };
  /** The submission names requirements (without them there is no dependency layer to build or pull). */
  hasRequirements: boolean;
  /** Load of every candidate: all holders plus the least loaded live workers. */
  candidates: readonly WorkerLoadInfo[];
  limit: number;
  cost: CostModel;
}

export type Tier = 'local-image' | 'pull-image' | 'local-deps' | 'pull-deps' | 'older-lock-image' | 'older-lock-deps' | 'build';

export interface Estimate {
  tier: Tier;
  seconds: number;
  /** What the worker would do, for the reason's detail. */
  detail: string;
}

export function spreadFactor(reach: number, live: number): number {
  if (live <= 0) return 1;
  return 1 - 0.5 * Math.min(reach / live, 1);
}

export function loadRatio(w: WorkerLoadInfo): number {
  return w.capacity > 0 ? Math.min(w.running / w.capacity, 1) : 1;
}

const round = (x: number): number => Math.round(x * 100) / 100;
const tenth = (x: number): number => Math.round(x * 10) / 10;
const mb = (bytes: number): string => `${Math.round(bytes / MB)} MB`;

export function pullSeconds(sizeBytes: number | null, cost: CostModel): number {
  return COST_CONSTANTS.pullStartS + (sizeBytes ?? COST_CONSTANTS.unknownSizeBytes) / cost.pullBytesPerS;
}

/**
 * The estimates of the tiers for one submission: computed once per ranking, since every worker in a
 * tier needs the same work (a local holding's size does not change what it costs to use it).
 */
export function tierEstimates(input: Pick<PlacementInput, 'registry' | 'hasRequirements' | 'cost'>): Record<Tier, Estimate> {
  const { registry, cost } = input;
  const size = (a: RegistryArtifact): string => (a.size_bytes === null ? 'size unknown' : mb(a.size_bytes));
  const at = (tier: Tier, seconds: number, what: string): Estimate => ({ tier, seconds: tenth(seconds), detail: `${what} ≈ ${tenth(seconds)} s` });
  const script = COST_CONSTANTS.scriptLayerS;
  const pullImage = registry.image ? pullSeconds(registry.image.size_bytes, cost) : Infinity;
  const pullDeps = registry.deps ? pullSeconds(registry.deps.size_bytes, cost) + script : Infinity;
  const share = COST_CONSTANTS.olderLockRebuildShare;
  const older = (holding: number): number => (1 - share) * holding + share * COST_CONSTANTS.fullBuildS;
  return {
    'local-image': at('local-image', 0, 'script image present'),
    'pull-image': at('pull-image', pullImage, registry.image ? `pull script image (${size(registry.image)})` : 'no script image in the registry'),
    'local-deps': at('local-deps', script, 'dependency layer present, build the script layer'),
    'pull-deps': at('pull-deps', pullDeps, registry.deps ? `pull dependency layer (${size(registry.deps)}), build the script layer` : 'no dependency layer in the registry'),
    'older-lock-image': at('older-lock-image', older(0), 'script image present on an older lock (may rebuild on the newest)'),
    'older-lock-deps': at('older-lock-deps', older(script), 'dependency layer present on an older lock (may rebuild on the newest)'),
    build: input.hasRequirements
      ? at('build', COST_CONSTANTS.fullBuildS, 'build the dependency layer and the script layer')
      : at('build', script, 'build the script layer (no requirements)'),
  };
}

/** What one worker holds: of the newest lock, or of an older one only. */
export interface Holding {
  image: boolean;
  deps: boolean;
  olderImage?: boolean;
  olderDeps?: boolean;
}

/** The first tier that applies to a worker. */
export function tierOf(holding: Holding, registry: PlacementInput['registry']): Tier {
  if (holding.image) return 'local-image';
  if (registry.image) return 'pull-image';
  if (holding.deps) return 'local-deps';
  if (registry.deps) return 'pull-deps';
  if (holding.olderImage === true) return 'older-lock-image';
  if (holding.olderDeps === true) return 'older-lock-deps';
  return 'build';
}

/** Live workers that can get the cheapest artifact there is without building it: see the module comment. */
export function reachOf(input: Pick<PlacementInput, 'liveWorkers' | 'imageHolders' | 'depsHolders' | 'registry'>): { workers: number; of: string } {
  if (input.registry.image) return { workers: input.liveWorkers, of: 'the script image' };
  if (input.imageHolders.length > 0) return { workers: input.imageHolders.length, of: 'the script image' };
  if (input.registry.deps) return { workers: input.liveWorkers, of: 'the dependency layer' };
  return { workers: input.depsHolders.length, of: 'the dependency layer' };
}

export function costScore(seconds: number, spread: number): number {
  return round(COST_WEIGHT * spread * Math.max(0, 1 - seconds / COST_CONSTANTS.fullBuildS));
}

interface Scored {
  w: WorkerLoadInfo;
  tier: Tier;
  ratio: number;
  score: number;
}

/** Best first: higher score, then lower load, then worker id. */
const byRank = (a: Scored, b: Scored): number =>
  b.score - a.score || a.ratio - b.ratio || (a.w.worker_id < b.w.worker_id ? -1 : a.w.worker_id > b.w.worker_id ? 1 : 0);

/** The k first of `items` in `cmp` order (a total order), without sorting all of them when k is small. */
export function topK<T>(items: readonly T[], k: number, cmp: (a: T, b: T) => number): T[] {
  if (k * 4 >= items.length) return [...items].sort(cmp).slice(0, k);
  const best: T[] = [];
  for (const item of items) {
    if (best.length === k && cmp(item, best[k - 1]!) >= 0) continue;
    let i = best.length === k ? k - 1 : best.length;
    while (i > 0 && cmp(item, best[i - 1]!) < 0) {
      best[i] = best[i - 1]!;
      i--;
    }
    best[i] = item;
  }
  return best;
}

/**
 * Scores every candidate as numbers first and writes the reasons (with their text) only for the
 * `limit` placed ones: a resolve weighs ~120 candidates to list 10.
 */
export function rankPlacement(input: PlacementInput): PlacementItem[] {
  const ids = (holders: readonly Holder[] | undefined): Set<string> => new Set((holders ?? []).map((h) => h.worker_id));
  const images = ids(input.imageHolders);
  const deps = ids(input.depsHolders);
  const olderImages = ids(input.olderImageHolders);
  const olderDeps = ids(input.olderDepsHolders);
  const estimates = tierEstimates(input);
  const reach = reachOf(input);
  const spread = spreadFactor(reach.workers, input.liveWorkers);
  const costOf = {} as Record<Tier, number>;
  for (const tier of Object.keys(estimates) as Tier[]) costOf[tier] = costScore(estimates[tier].seconds, spread);
  const scored = input.candidates.map((w): Scored => {
    const ratio = loadRatio(w);
    const id = w.worker_id;
    const tier = tierOf({ image: images.has(id), deps: deps.has(id), olderImage: olderImages.has(id), olderDeps: olderDeps.has(id) }, input.registry);
    // Summed in the order the reasons list them, so the total is the same as adding up the reasons.
    return { w, tier, ratio, score: round(costOf[tier] + round(LOAD_WEIGHT * (1 - ratio))) };
  });
  const spreadText = `spread factor ${round(spread)}: ${Math.min(reach.workers, input.liveWorkers)}/${input.liveWorkers} live workers can get ${reach.of} without building`;
  return topK(scored, input.limit, byRank).map(({ w, tier, ratio, score }) => {
    const estimate = estimates[tier];
    const reasons: ScoreReason[] = [
      { factor: 'cost', score: costOf[tier], detail: `${estimate.detail} (${spreadText})`, estimate_s: estimate.seconds },
      { factor: 'load', score: round(LOAD_WEIGHT * (1 - ratio)), detail: `${w.running}/${w.capacity} executions running` },
    ];
    return { worker_id: w.worker_id, score, reasons };
  });
}
