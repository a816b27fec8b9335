import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { isRgridError, RgridError } from '../../common/errors.js';
import { lockOfLockedFile, resolutionKey, type Lock, type Resolution } from '../../common/lock.js';
import { resolveTtlMs, type AgentConfig } from '../config.js';
import type { AgentIndex } from '../index/index.js';
import type { ResolutionRecord } from '../index/resolutions.js';
import type { BuildPolicy } from './build-policy.js';
import { wheelhouseFiles, type ContextFile } from './engine-build.js';
import type { LockAnswer, LockRequest, ResolutionService } from './resolution-types.js';
import { resolveLabels, resolveLock, type ResolutionOutcome, type ResolveLock } from './resolver.js';
import { SingleFlight } from './single-flight.js';

/**
 * The resolution service (the contract is agent/builder/resolution-types.ts): which lock a requirements
 * file stands for right now, so the dependency key follows what the index serves today instead of what
 * it served the day the file was first seen.
 *
 * Freshness (resolve_ttl_s): a resolution is reused for the window; past it the stored lock is still
 * answered at once — a request never waits for pip when a lock exists — and one background refresh per
 * [account, resolution key] runs. Concurrent requests share one resolution (single flight). A failed
 * refresh keeps the last good lock (answered as `stale`) and is retried once per window.
 *
 * The hit path (a record inside its window) reads an in-memory map in front of the LMDB store and
 * writes nothing: a hit costs a key computation and a map lookup.
 */
export interface ResolutionServiceDeps {
  docker: Docker;
  index: AgentIndex;
  config: AgentConfig;
  policy: BuildPolicy;
  logger: Logger;
  /** Metrics (agent/metrics.ts implements it). */
  observer?: {
    resolution(outcome: ResolutionOutcome, seconds: number): void;
    lockAnswer(resolution: Resolution): void;
  };
  now?: () => number;
  /** pip's dry run in the sandbox; tests give a fake. */
  resolve?: ResolveLock;
  /**
   * The agent's drain abandonment: running resolutions are killed. A caller's own signal (lockFor's)
   * only ends that caller's wait, since other callers may share the resolution.
   */
  signal?: AbortSignal;
}

interface Slot {
  record: ResolutionRecord;
  lock: Lock;
}

/** Records, locks and locked files kept in memory (each small); the LMDB store holds them all. */
const MEMORY_ENTRIES = 4096;
/** A fully locked file's lock is re-stamped this often while in use, so prune keeps it. */
const LOCK_STAMP_MS = 3_600_000;
/** A stored failure message is one of pip's lines, not its whole output. */
const MAX_FAILURE_MESSAGE = 1000;
const DIGEST = /^[0-9a-f]{64}$/;

/** A Map that forgets its least recently used entries beyond `limit`. */
class RecentMap<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly limit: number) {}
  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }
  has(key: K): boolean {
    return this.map.has(key);
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value as K);
  }
  delete(key: K): void {
    this.map.delete(key);
  }
}

export function createResolutionService(deps: ResolutionServiceDeps): ResolutionService {
  const { docker, index, config, policy } = deps;
  const store = index.resolutions;
  const log = deps.logger.child({ component: 'resolution' });
  const now = deps.now ?? Date.now;
  const resolve = deps.resolve ?? resolveLock;
  // Compiled once, like the build policy: resolve_ttl_s needs a restart.
  const ttlMs = resolveTtlMs(config);
  const flights = new SingleFlight<Slot>();
  const slots = new RecentMap<string, Slot>(MEMORY_ENTRIES);
  const locks = new RecentMap<string, Lock>(MEMORY_ENTRIES);
  /** requirements_sha256 → the file's own lock, or null when it needs resolving. */
  const lockedFiles = new RecentMap<string, Lock | null>(MEMORY_ENTRIES);
  /** lock_sha256 of a locked file → when it was last written to the store. */
  const lockStamps = new RecentMap<string, number>(MEMORY_ENTRIES);
  const background = new Set<Promise<void>>();

  const slotId = (account: string, key: string): string => `${account}\n${key}`;

  function answer(lock: Lock, resolution: Resolution): LockAnswer {
    deps.observer?.lockAnswer(resolution);
    return { lock, resolution };
  }

  function track(work: Promise<unknown>): void {
    const done: Promise<void> = work.then(
      () => undefined,
      () => undefined,
    );
    background.add(done);
    void done.finally(() => background.delete(done));
  }

  function lockBySha(sha: string): Lock | undefined {
    if (!DIGEST.test(sha)) return undefined;
    const known = locks.get(sha);
    if (known) return known;
    const stored = store.lock(sha);
    if (stored) locks.set(sha, stored);
    return stored;
  }

  function slotOf(account: string, key: string, id: string): Slot | undefined {
    const known = slots.get(id);
    if (known) return known;
    const record = store.get(account, key);
    const lock = record && lockBySha(record.lock_sha256);
    if (!record || !lock) return undefined;
    const slot = { record, lock };
    slots.set(id, slot);
    return slot;
  }

  function fileLockOf(request: LockRequest): Lock | null {
    const known = lockedFiles.get(request.requirements.sha256);
    if (known !== undefined) return known;
    const lock = lockOfLockedFile(request.requirements);
    lockedFiles.set(request.requirements.sha256, lock);
    return lock;
  }

  /** Stores a locked file's lock for lockBySha: once, then re-stamped at most hourly while in use. */
  function keepFileLock(lock: Lock): void {
    const at = now();
    const stamped = lockStamps.get(lock.sha256) ?? store.lockUsedAt(lock.sha256);
    if (stamped !== undefined && at - stamped < LOCK_STAMP_MS) {
      lockStamps.set(lock.sha256, stamped);
      return;
    }
    lockStamps.set(lock.sha256, at);
    locks.set(lock.sha256, lock);
    track(
      store.putLock(lock, at).catch((err: unknown) => {
        lockStamps.delete(lock.sha256);
        log.warn({ err, lock_sha256: lock.sha256 }, 'storing a locked file\'s lock failed');
      }),
    );
  }

  async function wheelhouse(): Promise<ContextFile[]> {
    if (!config.pip_find_links) return [];
    try {
      return await wheelhouseFiles(config.pip_find_links);
    } catch (err) {
      throw new RgridError('unavailable', `pip_find_links directory is not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }

  const abandoned = (err: unknown): boolean => isRgridError(err) && err.code === 'shutting_down';

  /** One resolution, then the store and the memory map; a failure is recorded on the last good lock. */
  async function resolveAndStore(request: LockRequest, key: string, id: string): Promise<Slot> {
    const { account } = request;
    const previous = slotOf(account, key, id);
    const started = now();
    const resolutionId = randomUUID();
    const rlog = log.child({ account, resolution_id: resolutionId });
    let lock: Lock;
    try {
      lock = await resolve(docker, {
        baseImageId: request.runtime.imageId,
        fileText: request.fileText,
        wheelhouse: await wheelhouse(),
        policy,
        labels: resolveLabels(index.agentId, resolutionId),
        signal: deps.signal ?? new AbortController().signal,
        deadline: AbortSignal.timeout(policy.limits.timeoutMs),
        onLine: (line) => rlog.debug({ line }, 'resolution output'),
        logger: rlog,
      });
    } catch (err) {
      // A drain abandonment says nothing about the file: neither counted nor recorded.
      if (abandoned(err)) throw err;
      deps.observer?.resolution('failed', (now() - started) / 1000);
      const message = (err instanceof Error ? err.message : String(err)).slice(0, MAX_FAILURE_MESSAGE);
      if (previous) {
        const at = now();
        // checked_at moves too: the next attempt comes a window later, not at the next request.
        const record: ResolutionRecord = { ...previous.record, checked_at: at, failure: { at, message } };
        slots.set(id, { record, lock: previous.lock });
        await store.putRecord(account, key, record).catch((e: unknown) => rlog.warn({ err: e }, 'storing a failed refresh failed'));
        rlog.warn({ reason: message, lock_sha256: previous.lock.sha256 }, 'refreshing a resolution failed; the last good lock stays in use');
      } else {
        rlog.info({ reason: message }, 'resolution failed');
      }
      throw err;
    }
    const at = now();
    const outcome: ResolutionOutcome = !previous ? 'resolved' : previous.lock.sha256 === lock.sha256 ? 'refreshed' : 'changed';
    const record: ResolutionRecord = {
      lock_sha256: lock.sha256,
      requirements_sha256: request.requirements.sha256,
      base_image_id: request.runtime.imageId,
      resolved_at: at,
      checked_at: at,
      failure: null,
    };
    await store.put(account, key, record, lock);
    const slot = { record, lock };
    slots.set(id, slot);
    locks.set(lock.sha256, lock);
    deps.observer?.resolution(outcome, (at - started) / 1000);
    rlog.info(
      { outcome, lock_sha256: lock.sha256, previous_lock_sha256: previous?.lock.sha256, distributions: lock.distributions.length, ms: at - started },
      outcome === 'changed' ? 'a requirements file now resolves to a different set' : 'resolved a requirements file',
    );
    return slot;
  }

  /** The caller waits for the shared resolution, or stops waiting when its own signal aborts. */
  function waitFor<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    if (!signal) return promise;
    const stop = (): RgridError => new RgridError('shutting_down', 'resolution abandoned: the agent is shutting down');
    if (signal.aborted) return Promise.reject(stop());
    return new Promise<T>((resolvePromise, reject) => {
      const onAbort = (): void => reject(stop());
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(resolvePromise, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  async function resolveNow(request: LockRequest, key: string, id: string, previous: Slot | undefined, signal: AbortSignal | undefined): Promise<LockAnswer> {
    const flight = flights.run(id, () => resolveAndStore(request, key, id));
    try {
      return answer((await waitFor(flight.promise, signal)).lock, 'resolved');
    } catch (err) {
      // resolve_ttl 0 with a lock from before: a failing index does not stop builds on the last good lock.
      if (previous && !abandoned(err)) return answer((slots.get(id) ?? previous).lock, 'stale');
      throw err;
    }
  }

  function refreshInBackground(request: LockRequest, key: string, id: string): void {
    if (flights.has(id)) return;
    // Only the agent's drain stops a refresh: the request that started it has its answer already.
    track(flights.run(id, () => resolveAndStore(request, key, id)).promise);
  }

  function lockFor(request: LockRequest, signal?: AbortSignal): Promise<LockAnswer | null> {
    try {
      if (ttlMs === null) return Promise.resolve(null);
      const fileLock = fileLockOf(request);
      if (fileLock) {
        keepFileLock(fileLock);
        return Promise.resolve(answer(fileLock, 'locked'));
      }
      const key = resolutionKey({ baseImageId: request.runtime.imageId, requirementsSha256: request.requirements.sha256, pipFingerprint: request.pipFingerprint });
      const id = slotId(request.account, key);
      const slot = slotOf(request.account, key, id);
      if (!slot || ttlMs === 0) return resolveNow(request, key, id, slot, signal);
      if (now() - slot.record.checked_at >= ttlMs) refreshInBackground(request, key, id);
      return Promise.resolve(answer(slot.lock, slot.record.failure ? 'stale' : 'cached'));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  return {
    lockFor,
    lockBySha,
    running: () => flights.size,
    async idle() {
      while (background.size > 0) await Promise.all([...background]);
    },
  };
}
