import { randomUUID } from 'node:crypto';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { DiskUsageSource } from '../prune/disk-usage.js';
import { ENGINE_STEP_TIMEOUT_MS, withinDeadline } from './engine-deadline.js';
import type { HolderPool, OutputsSlot } from './holder-pool.js';

/**
 * Hot containers: the next run container of an image run recently, created ahead (created, not started),
 * so that a warm run pays the engine's start and the exit only. A run container's settings are all known
 * before its run but two: its inputs and its outputs. So each hot container gets a directory of its own,
 * `runs/<id>/inputs`, bind-mounted read-only at create and still empty; the run that takes it fills it
 * before the start (a bind mount shows the directory as it is at the start). And each holds an outputs
 * slot of the holder pool (holder-pool.ts), taken when it is made. A hot container is used by one run,
 * whose container it becomes, and is removed after it like any run container — never reused.
 *
 * Which: after each run, one is made for that run's exact container settings (the key: image, account,
 * limits, network, labels — everything `runContainerSpec` puts in the create). At most `size` exist in
 * all (config `run_hot_containers`, 0 turns them off); when full, the one whose settings were run the
 * longest ago makes room, and none is kept for settings not run for `idleMs`.
 *
 * Dropped (removed) when: their image is deleted or pruned (`dropImage`: the engine's image events, and
 * the pruner before it removes an image — the engine refuses to delete an image that any container, even
 * a created one, refers to); the host is short of memory or the engine's disk is above
 * `disk_high_percent` (`pressure`, looked at before each one is made and every `sweepMs`); the agent
 * drains or stops. They carry the run containers' labels (`io.rgrid.agent=<agent id>` among them) plus
 * `io.rgrid.hot=<agent id>`, so after a kill -9 the start-up repair removes them with the run containers;
 * their directories go with `runs/`, and their holders with the pool's label.
 */
export const HOT_LABEL = 'io.rgrid.hot';

/** What a hot container is made for. */
export interface HotSpec {
  /** Identity of the create's settings apart from name, inputs directory and outputs volume. */
  key: string;
  imageId: string;
  create(name: string, inputsDir: string, volume: string): Docker.ContainerCreateOptions;
}

export interface HotContainer {
  /** Names the container (`rgrid-run-<id>`) and its directory (`runs/<id>`). */
  id: string;
  key: string;
  imageId: string;
  container: Docker.Container;
  slot: OutputsSlot;
  dir: string;
  inputsDir: string;
}

export interface HotPool {
  /** A ready hot container for these settings, now the caller's (to run, then remove); or undefined. */
  take(key: string): HotContainer | undefined;
  /** A run of these settings happened: have one ready for the next (in the background, bounded). */
  want(spec: HotSpec): void;
  /** The image is gone or about to be removed: its hot containers go (resolves once they are gone). */
  dropImage(imageId: string): Promise<void>;
  /** A container of this pool, ready and unused (the pruner does not count it as a use of its image). */
  isReady(containerId: string): boolean;
  /** Removes the ready ones and makes no more (the daemon's drain); `close` waits for the removals. */
  drain(): void;
  close(): Promise<void>;
  readonly ready: number;
}

export interface HotPoolDeps {
  docker: Docker;
  agentId: string;
  logger: Logger;
  /** At most this many hot containers (config run_hot_containers); 0: none. */
  size: number;
  /** The agent's per-run directories (`<data_dir>/runs`). */
  runsDir: string;
  holders: HolderPool;
  /**
   * The image their outputs holders are made from (a runtime's base image); without one, none are made.
   * Never the run's image: a holder runs, and the engine refuses to delete an image a running container
   * uses, even forced — a hot container would keep its image from the pruner and from `docker rmi -f`.
   */
  holderImage: () => Promise<string | undefined>;
  /** Why none may be kept now (memory or disk pressure), or undefined. */
  pressure: () => Promise<string | undefined>;
  /** Settings not run for this long lose their hot containers; default 10 minutes. */
  idleMs?: number;
  /** How often idleness and pressure are looked at; default 30 s. */
  sweepMs?: number;
  /** How long one engine call may go unanswered (engine-deadline.ts). */
  stepTimeoutMs?: number;
  now?: () => number;
}

/** Deleted images remembered, so that a late `want` makes nothing for one. */
const MAX_GONE = 256;

export function createHotPool(deps: HotPoolDeps): HotPool {
  const { docker, logger, holders } = deps;
  const log = logger.child({ component: 'hot-containers' });
  const now = deps.now ?? Date.now;
  const idleMs = deps.idleMs ?? 10 * 60_000;
  const stepMs = deps.stepTimeoutMs ?? ENGINE_STEP_TIMEOUT_MS;
  const ready: HotContainer[] = [];
  /** Makes in flight, by image: a drop waits for them. */
  const making = new Map<string, Set<Promise<unknown>>>();
  let makingCount = 0;
  const lastWanted = new Map<string, number>();
  const gone = new Set<string>();
  const pending = new Set<Promise<unknown>>();
  let stopped = false;
  let underPressure: string | undefined;

  const track = (work: Promise<unknown>): void => {
    const settled = work.then(() => undefined, () => undefined);
    pending.add(settled);
    void settled.then(() => pending.delete(settled));
  };

  async function destroy(hot: HotContainer): Promise<void> {
    await withinDeadline(hot.container.remove({ force: true }), stepMs, 'removing a hot container')
      .catch((err: unknown) => log.warn({ err, id: hot.id }, 'hot container not removed; the next start removes it'));
    holders.discard(hot.slot);
    await rm(hot.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  const dropWhere = (which: (hot: HotContainer) => boolean): Array<Promise<void>> => {
    const dropped: Array<Promise<void>> = [];
    for (let i = ready.length - 1; i >= 0; i--) {
      if (!which(ready[i]!)) continue;
      const [hot] = ready.splice(i, 1);
      const removal = destroy(hot!);
      track(removal);
      dropped.push(removal);
    }
    return dropped;
  };

  async function make(spec: HotSpec): Promise<HotContainer> {
    const id = randomUUID();
    const dir = join(deps.runsDir, id);
    const inputsDir = join(dir, 'inputs');
    let slot: OutputsSlot | undefined;
    let container: Docker.Container | undefined;
    try {
      // As a run's own directory (run.ts): the agent's alone, its inputs directory readable by the run.
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await mkdir(inputsDir, { mode: 0o755 });
      await chmod(inputsDir, 0o755);
      const holderImage = await deps.holderImage();
      if (!holderImage) throw new Error('no runtime base image to make its outputs holder from');
      slot = await holders.take(holderImage);
      const options = spec.create(`rgrid-run-${id}`, inputsDir, slot.volume);
      container = await withinDeadline(docker.createContainer({ ...options, Labels: { ...options.Labels, [HOT_LABEL]: deps.agentId } }), stepMs,
        'creating a hot container', (late) => void late.remove({ force: true }).catch(() => undefined));
      return { id, key: spec.key, imageId: spec.imageId, container, slot, dir, inputsDir };
    } catch (err) {
      if (container) await withinDeadline(container.remove({ force: true }), stepMs, 'removing a hot container').catch(() => undefined);
      if (slot) holders.discard(slot);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** Makes one for `spec` if there is room (making room from the settings run the longest ago). */
  async function fill(spec: HotSpec): Promise<void> {
    const reason = await deps.pressure().catch(() => undefined);
    if (reason) {
      relieve(reason);
      return;
    }
    underPressure = undefined;
    if (stopped || gone.has(spec.imageId)) return;
    if (ready.length + makingCount >= deps.size) {
      const others = ready.filter((h) => h.key !== spec.key);
      if (others.length === 0) return; // all of them are for these settings already
      const oldest = others.reduce((a, b) => ((lastWanted.get(a.key) ?? 0) <= (lastWanted.get(b.key) ?? 0) ? a : b));
      void dropWhere((h) => h === oldest);
    }
    makingCount++;
    const work = make(spec);
    const forImage = making.get(spec.imageId) ?? new Set();
    making.set(spec.imageId, forImage.add(work));
    try {
      const hot = await work;
      // Stopped or dropped while it was being made: it goes at once.
      if (stopped || gone.has(spec.imageId)) await destroy(hot);
      else ready.push(hot);
    } catch (err) {
      log.warn({ err, image_id: spec.imageId }, 'making a hot container failed; the next run creates its own');
    } finally {
      makingCount--;
      forImage.delete(work);
      if (forImage.size === 0) making.delete(spec.imageId);
    }
  }

  function relieve(reason: string): void {
    if (underPressure !== reason) log.info({ reason, dropped: ready.length }, 'hot containers dropped and none made while the host is short');
    underPressure = reason;
    void dropWhere(() => true);
  }

  const sweep = setInterval(() => {
    const cutoff = now() - idleMs;
    void dropWhere((h) => (lastWanted.get(h.key) ?? 0) < cutoff);
    for (const [key, at] of lastWanted) if (at < cutoff && !ready.some((h) => h.key === key)) lastWanted.delete(key);
    if (ready.length > 0) {
      track(deps.pressure().then((reason) => {
        if (reason) relieve(reason);
      }, () => undefined));
    }
  }, deps.sweepMs ?? 30_000);
  sweep.unref();

  return {
    get ready() {
      return ready.length;
    },

    take(key) {
      const at = ready.findIndex((h) => h.key === key);
      if (at < 0) return undefined;
      return ready.splice(at, 1)[0];
    },

    want(spec) {
      if (stopped || deps.size <= 0) return;
      lastWanted.set(spec.key, now());
      track(fill(spec));
    },

    async dropImage(imageId) {
      gone.add(imageId);
      if (gone.size > MAX_GONE) gone.delete(gone.values().next().value!);
      // Those being made are dropped when their make ends (fill): waiting for them makes the drop whole.
      await Promise.allSettled([...(making.get(imageId) ?? [])]);
      const dropped = dropWhere((h) => h.imageId === imageId);
      if (dropped.length > 0) log.info({ image_id: imageId, dropped: dropped.length }, 'hot containers of a removed image dropped');
      await Promise.all(dropped);
    },

    isReady: (containerId) => ready.some((h) => h.container.id === containerId),

    drain() {
      stopped = true;
      void dropWhere(() => true);
    },

    async close() {
      stopped = true;
      clearInterval(sweep);
      void dropWhere(() => true);
      while (pending.size > 0) await Promise.all([...pending]);
      await Promise.all(dropWhere(() => true));
    },
  };
}

/** Hosts with less memory available than this share of the total keep no hot containers (their holders run). */
export const HOT_MEMORY_FLOOR = 0.1;

/** Memory below HOT_MEMORY_FLOOR, or the engine's disk at or above `highPercent()`; undefined otherwise. */
export function hostPressure(disk: DiskUsageSource, highPercent: () => number): () => Promise<string | undefined> {
  return async () => {
    const available = freemem() / totalmem();
    if (available < HOT_MEMORY_FLOOR) return `memory: ${Math.round(available * 100)}% available, under ${HOT_MEMORY_FLOOR * 100}%`;
    const usage = await disk.read().catch(() => undefined);
    if (usage && usage.total_bytes > 0) {
      const used = (100 * usage.used_bytes) / usage.total_bytes;
      if (used >= highPercent()) return `disk: ${Math.round(used)}% used, at or above disk_high_percent ${highPercent()}`;
    }
    return undefined;
  };
}
