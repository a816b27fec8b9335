/**
 * Placement scoring, pure so it is unit-tested apart from SQL.
 *
 * score = image + deps + load, each with a reason:
 * - image: a worker holding the script image skips the build. Weighted by image size like
 *   kube-scheduler's ImageLocality (clamped between 23 MB and 1000 MB), but presence alone already
 *   counts half, because even a small image saves a build here. Scaled down as more live workers hold
 *   it (spread factor 1 - 0.5 × holders/live): when every worker has it, locality stops dominating and
 *   load decides, so a batch spreads instead of piling onto one host (the "whole workshop on one node"
 *   lesson).
 * - deps: the same for the dependency layer (saves the pip install when only the script changed).
 * - load: 1 - running/capacity of the worker (0 when full or without capacity).
 * Ties are broken by lower load, then by worker id, so the order is deterministic.
 */
import type { PlacementItem, ScoreReason } from '../common/wire/control-api.js';

export const IMAGE_WEIGHT = 50;
export const DEPS_WEIGHT = 30;
export const LOAD_WEIGHT = 20;
const MB = 1024 * 1024;
export const MIN_SIZE = 23 * MB;
export const MAX_SIZE = 1000 * MB;

export interface WorkerLoadInfo {
  worker_id: string;
  capacity: number;
  running: number;
}

export interface Holder {
  worker_id: string;
  size_bytes: number;
}

export interface PlacementInput {
  /** Live workers in total (the denominator of the spread). */
  liveWorkers: number;
  imageHolders: readonly Holder[];
  depsHolders: readonly Holder[];
  /** Load of every candidate: all holders plus the least loaded live workers. */
  candidates: readonly WorkerLoadInfo[];
  limit: number;
}

export function sizeFactor(size: number): number {
  const clamped = Math.min(Math.max((size - MIN_SIZE) / (MAX_SIZE - MIN_SIZE), 0), 1);
  return 0.5 + 0.5 * clamped;
}

export function spreadFactor(holders: number, live: number): number {
  if (live <= 0) return 1;
  return 1 - 0.5 * Math.min(holders / live, 1);
}

export function loadRatio(w: WorkerLoadInfo): number {
  return w.capacity > 0 ? Math.min(w.running / w.capacity, 1) : 1;
}

const round = (x: number): number => Math.round(x * 100) / 100;
const mb = (bytes: number): string => `${Math.round(bytes / MB)} MB`;

function presenceReason(factor: 'image' | 'deps', weight: number, holder: Holder, holders: number, live: number): ScoreReason {
  const size = sizeFactor(holder.size_bytes);
  const spread = spreadFactor(holders, live);
  const label = factor === 'image' ? 'script image' : 'dependency layer';
  return {
    factor,
    score: round(weight * size * spread),
    detail: `${label} present (${mb(holder.size_bytes)}, size factor ${round(size)}), held by ${holders}/${live} live workers (spread factor ${round(spread)})`,
  };
}

const presenceScore = (weight: number, holder: Holder | undefined, holders: number, live: number): number =>
  holder ? round(weight * sizeFactor(holder.size_bytes) * spreadFactor(holders, live)) : 0;

interface Scored {
  w: WorkerLoadInfo;
  image: Holder | undefined;
  dep: Holder | undefined;
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
  const images = new Map<string, Holder>();
  for (const h of input.imageHolders) images.set(h.worker_id, h);
  const deps = new Map<string, Holder>();
  for (const h of input.depsHolders) deps.set(h.worker_id, h);
  const live = input.liveWorkers;
  const scored = input.candidates.map((w): Scored => {
    const ratio = loadRatio(w);
    const image = images.get(w.worker_id);
    const dep = deps.get(w.worker_id);
    // Summed in the order the reasons list them, so the total is the same as adding up the reasons.
    let sum = 0;
    if (image) sum += presenceScore(IMAGE_WEIGHT, image, images.size, live);
    if (dep) sum += presenceScore(DEPS_WEIGHT, dep, deps.size, live);
    sum += round(LOAD_WEIGHT * (1 - ratio));
    return { w, image, dep, ratio, score: round(sum) };
  });
  return topK(scored, input.limit, byRank).map(({ w, image, dep, ratio, score }) => {
    const reasons: ScoreReason[] = [];
    if (image) reasons.push(presenceReason('image', IMAGE_WEIGHT, image, images.size, live));
    if (dep) reasons.push(presenceReason('deps', DEPS_WEIGHT, dep, deps.size, live));
    reasons.push({ factor: 'load', score: round(LOAD_WEIGHT * (1 - ratio)), detail: `${w.running}/${w.capacity} executions running` });
    return { worker_id: w.worker_id, score, reasons };
  });
}
