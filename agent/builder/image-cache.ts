import type Docker from 'dockerode';
import { assertAccount } from '../../common/names.js';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { depsKey as computeDepsKey, imageKey as computeImageKey, pipSettingsFingerprint, requirementsDigest, scriptSha256 } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';
import type { AgentIndex } from '../index/index.js';
import type { Lease, LeaseTable } from '../index/leases.js';
import { refId, type EntryRef, type IndexEntry } from '../index/types.js';
import { createImageProbe, type ImageProbe } from './image-probe.js';
import { buildDepsImage, buildExecImage, type BuildContextDeps } from './image-builds.js';
import { compileBuildPolicy, enforceBuildPolicy } from './build-policy.js';
import { requirementsFileText } from './recipe.js';
import type { RuntimeResolver } from './runtimes.js';
import type { BuildLogEvent, EnsureRequest, EnsureResult, PreparedEnsure, PreparedRequirements } from './ensure-types.js';

export type { BuildLogEvent, EnsureRequest, EnsureResult, PreparedEnsure } from './ensure-types.js';
import { SingleFlight } from './single-flight.js';
import type { ImageSharing } from '../registry/sharing.js';
import type { ResolutionService } from './resolution-types.js';

/**
 * ensure = "give me the image for (account, runtime, script, requirements)": a verified hit, or a build
 * of whatever is missing (the dependency layer, then the script image), shared by concurrent callers.
 */
export const DEFAULT_ACCOUNT = 'default';

export interface EnsureOptions {
  onEvent?: (event: BuildLogEvent) => void;
  /** Pins the entries (lease before hit) for the caller; the caller releases the returned lease. */
  leaseHolder?: string;
}

export interface ImageCache {
  prepare(request: EnsureRequest): Promise<PreparedEnsure>;
  ensure(prepared: PreparedEnsure, options?: EnsureOptions): Promise<{ result: EnsureResult; lease?: Lease }>;
  stats(): { queued: number; building: number; inflight: number };
  /** Stops starting new builds (queued ones fail with shutting_down); resolves when running builds end. */
  drain(): Promise<void>;
  /** Aborts the builds still running (the drain deadline passed). */
  abandon(): void;
  close(): Promise<void>;
}

/** Where the cache reports lookups and builds (metrics); optional so tests can leave it out. */
export interface CacheObserver {
  lookup(kind: 'image' | 'deps', hit: boolean): void;
  build(kind: 'image' | 'deps', ok: boolean, seconds: number): void;
}

/** The cache as the daemon holds it: ensure, plus cache warming and live concurrency. */
export interface ManagedImageCache extends ImageCache {
  /**
   * Makes sure the dependency layer for (account, runtime, requirements) exists — through the same
   * single-flight and build queue as ensure, so a warm build and an ensure of the same layer share one
   * build. Does not count as a use of the layer.
   */
  warmDeps(request: { account?: string; runtime?: string; requirements: Buffer }): Promise<{ deps_key: string | null; image_id: string | null; hit: boolean }>;
  /** Applies a new build concurrency to the queue (running builds are not interrupted). */
  setConcurrency(n: number): void;
}

export interface ImageCacheDeps {
  docker: Docker;
  observer?: CacheObserver;
  index: AgentIndex;
  leases: LeaseTable;
  runtimes: RuntimeResolver;
  config: AgentConfig;
  logger: Logger;
  now?: () => number;
  /** The daemon's probe (shared with the run path, which closes the start race through it). */
  probe?: ImageProbe;
  /**
   * Image sharing through a registry (agent/registry/sharing.ts): a miss asks the grid before building.
   * Absent or inactive: every miss builds here, as without a registry.
   */
  sharing?: ImageSharing;
  /**
   * Resolves requirements files to locks (agent/builder/resolution.ts). Absent: keyed on the text, as
   * under `resolve_ttl: never`.
   */
  resolution?: ResolutionService;
}

interface BuildOutcome {
  entry: IndexEntry;
  depsHit: boolean | null;
  origin: 'built' | 'pulled';
}

export function createImageCache(deps: ImageCacheDeps): ManagedImageCache {
  const { docker, index, leases, runtimes, config, logger } = deps;
  const now = deps.now ?? Date.now;
  const queue = new PQueue({ concurrency: config.build_concurrency });
  const imageFlights = new SingleFlight<BuildOutcome, BuildLogEvent>();
  const depsFlights = new SingleFlight<IndexEntry, BuildLogEvent>();
  const abort = new AbortController();
  let draining = false;
  // Compiled once: the build policy keys need a restart (they are not live keys).
  const policy = compileBuildPolicy(config);
  const sharing = deps.sharing;
  const shared = (): boolean => sharing?.active() === true;
  const buildDeps: BuildContextDeps = { docker, index, config, policy, logger, signal: abort.signal, now, queuePush: shared };
  const probe = deps.probe ?? createImageProbe(docker, { logger });

  /** Runs a build through the one queue; a build that had not started when draining began never starts. */
  async function queued<T>(work: () => Promise<T>): Promise<T> {
    if (draining) throw new RgridError('shutting_down', 'the agent is shutting down; no new builds');
    return queue.add(async () => {
      if (draining) throw new RgridError('shutting_down', 'the agent is shutting down; no new builds');
      return work();
    });
  }

  /** Times a build for the metrics. */
  async function timed<T>(kind: 'image' | 'deps', work: () => Promise<T>): Promise<T> {
    const started = now();
    try {
      const out = await work();
      deps.observer?.build(kind, true, (now() - started) / 1000);
      return out;
    } catch (err) {
      deps.observer?.build(kind, false, (now() - started) / 1000);
      throw err;
    }
  }

  /** Drops an entry whose image vanished behind the agent's back (self-heal: the caller rebuilds). */
  async function dropVanished(entry: IndexEntry): Promise<void> {
    logger.warn({ kind: entry.kind, key: entry.key, account: entry.account, image_id: entry.image_id }, 'cached image vanished from the engine; dropping the entry and rebuilding');
    await index.remove(entry, { ifImageId: entry.image_id });
  }

  /**
   * Counts a hit as a use (last_used_at, use_count; the deps layer too, as the image is built on it),
   * without waiting for the commit: the answer never depended on it, and waiting put LMDB's write thread
   * on every hit's tail. Recorded once per hit, never retried: a failed or SIGKILL-lost use only makes the
   * entry look older to the pruner (agent/index/index.ts, durability). Readers of use counts wait for it
   * (`index.settled()`).
   */
  function recordHit(refs: EntryRef[]): void {
    index.recordUse(refs).catch((err: unknown) => {
      logger.warn({ refs, reason: (err as Error).message }, 'recording a cache hit\'s use failed; the entry looks older to the pruner');
    });
  }

  /** An entry whose image the engine confirms; a vanished image drops the entry (never an error). */
  async function verified(ref: EntryRef): Promise<IndexEntry | undefined> {
    const entry = index.get(ref);
    if (!entry) return undefined;
    if (await probe.exists(entry.image_id)) return entry;
    await dropVanished(entry);
    return undefined;
  }

  async function ensureDeps(p: PreparedEnsure, emit: (e: BuildLogEvent) => void): Promise<{ entry: IndexEntry; hit: boolean }> {
    const ref: EntryRef = { kind: 'deps', account: p.account, key: p.depsKey! };
    const hit = await verified(ref);
    deps.observer?.lookup('deps', hit !== undefined);
    if (hit) return { entry: hit, hit: true };
    // The grid's lease wait (sharing) happens inside the single flight but outside the build queue: a
    // worker waiting for another's build holds no build slot.
    const flight = depsFlights.run(refId(ref), async (emitDeps) => {
      const build = (): Promise<IndexEntry> => queued(() => timed('deps', () => buildDepsImage(buildDeps, p, emitDeps)));
      return shared() ? (await sharing!.obtain(p, 'deps', build, abort.signal)).entry : build();
    });
    const unsubscribe = flight.subscribe(emit);
    try {
      return { entry: await flight.promise, hit: false };
    } finally {
      unsubscribe();
    }
  }

  async function buildFlow(p: PreparedEnsure, emit: (e: BuildLogEvent) => void): Promise<BuildOutcome> {
    let depsHit: boolean | null = null;
    // The dependency layer (a hit, pulled or built) and then the script image FROM it.
    const buildHere = async (): Promise<IndexEntry> => {
      let depsEntry: IndexEntry | null = null;
      if (p.depsKey !== null) {
        const d = await ensureDeps(p, emit);
        depsEntry = d.entry;
        depsHit = d.hit;
      }
      return queued(() => timed('image', () => buildExecImage(buildDeps, p, depsEntry, depsHit === true, emit)));
    };
    if (!shared()) return { entry: await buildHere(), depsHit, origin: 'built' };
    const got = await sharing!.obtain(p, 'image', buildHere, abort.signal);
    // A pulled script image brings its dependency layers along: no local layer was used.
    return { entry: got.entry, depsHit: got.origin === 'pulled' ? (p.depsKey ? false : null) : depsHit, origin: got.origin };
  }

  async function prepare(request: EnsureRequest): Promise<PreparedEnsure> {
    const account = request.account ?? DEFAULT_ACCOUNT;
    assertAccount(account);
    const requirements = request.requirements ? requirementsDigest(request.requirements) : null;
    // Refused before anything is looked up or built: a file the policy refuses gets no image, hit or not.
    if (requirements) enforceBuildPolicy(policy, requirements);
    // A file without a single requirement (only comments or options) installs nothing: same as none.
    const hasRequirements = requirements !== null && requirements.lines.length > 0;
    const runtime = await runtimes.resolve(request.runtime);
    const sha = scriptSha256(request.script);
    let prepared: PreparedRequirements | null = null;
    let depsKey: string | null = null;
    if (hasRequirements) {
      const pipFingerprint = pipSettingsFingerprint(requirements.pipOptions, policy.fingerprintOptions);
      const fileText = requirementsFileText(requirements.pipOptions, requirements.text);
      // The key is built on the exact set the layer will install (the lock), not on the text written.
      const answer = deps.resolution ? await deps.resolution.lockFor({ account, runtime, requirements, pipFingerprint, fileText }, abort.signal) : null;
      prepared = {
        sha256: requirements.sha256,
        // The file's own options (index, --pre, …) stay: the lock's artifacts come from the same place.
        fileText: answer ? requirementsFileText(requirements.pipOptions, answer.lock.text) : fileText,
        lock: answer?.lock ?? null,
        resolution: answer?.resolution ?? null,
      };
      depsKey = computeDepsKey({ baseImageId: runtime.imageId, requirementsSha256: requirements.sha256, pipFingerprint, lockSha256: answer?.lock.sha256 ?? null });
    }
    return {
      account,
      runtime,
      script: request.script,
      scriptSha256: sha,
      requirements: prepared,
      depsKey,
      imageKey: computeImageKey({ depsKey, baseImageId: runtime.imageId, scriptSha256: sha }),
      startedAt: now(),
    };
  }

  return {
    prepare,

    async warmDeps(request) {
      // The script is irrelevant to the deps layer; an empty one only fills the prepared shape.
      const p = await prepare({ ...request, script: Buffer.alloc(0) });
      if (p.depsKey === null) return { deps_key: null, image_id: null, hit: true };
      const { entry, hit } = await ensureDeps(p, () => undefined);
      return { deps_key: p.depsKey, image_id: entry.image_id, hit };
    },

    setConcurrency(n) {
      queue.concurrency = n;
    },

    async ensure(p, options = {}) {
      const imageRef: EntryRef = { kind: 'image', account: p.account, key: p.imageKey };
      const depsRef: EntryRef | null = p.depsKey ? { kind: 'deps', account: p.account, key: p.depsKey } : null;
      // Lease before hit: pinned before verification, so nothing can prune between verify and use.
      const lease = options.leaseHolder ? leases.acquire(depsRef ? [imageRef, depsRef] : [imageRef], options.leaseHolder) : undefined;
      const finish = (entry: IndexEntry, scriptHit: boolean, depsHit: boolean | null, built: boolean, origin: EnsureResult['image_origin']): { result: EnsureResult; lease?: Lease } => ({
        result: {
          image_id: entry.image_id,
          image_key: p.imageKey,
          deps_key: p.depsKey,
          script_sha256: p.scriptSha256,
          requirements_sha256: p.requirements?.sha256 ?? null,
          lock_sha256: p.requirements?.lock?.sha256 ?? null,
          resolved: p.requirements?.lock?.resolved ?? null,
          resolution: p.requirements?.resolution ?? null,
          script_cache_hit: scriptHit,
          dependency_cache_hit: depsHit,
          built,
          image_origin: origin,
          duration_ms: now() - p.startedAt,
          runtime: p.runtime.name,
          account: p.account,
        },
        ...(lease ? { lease } : {}),
      });
      try {
        const cached = index.get(imageRef);
        if (cached) {
          if (await probe.exists(cached.image_id)) {
            recordHit(depsRef ? [imageRef, depsRef] : [imageRef]);
            deps.observer?.lookup('image', true);
            return finish(cached, true, depsRef ? true : null, false, 'local');
          }
          await dropVanished(cached);
        }
        deps.observer?.lookup('image', false);
        const flight = imageFlights.run(refId(imageRef), (emit) => buildFlow(p, emit));
        const unsubscribe = options.onEvent ? flight.subscribe(options.onEvent) : () => false;
        let outcome: BuildOutcome;
        try {
          outcome = await flight.promise;
        } finally {
          unsubscribe();
        }
        // The leader's build wrote use_count 1; every follower is one more use of the same entry.
        const entry = flight.leader ? outcome.entry : ((await index.touch([imageRef]))[0] ?? outcome.entry);
        return finish(entry, false, outcome.depsHit, flight.leader, outcome.origin);
      } catch (err) {
        lease?.release();
        throw err;
      }
    },

    stats: () => ({ queued: queue.size, building: queue.pending, inflight: imageFlights.size + depsFlights.size }),

    async drain() {
      draining = true;
      await queue.onIdle();
    },

    abandon() {
      draining = true;
      abort.abort();
    },

    close: () => probe.close(),
  };
}

