import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { ENGINE_STEP_TIMEOUT_MS, withinDeadline } from './engine-deadline.js';
import { statOutputsDir, type OutputsDirStat } from './outputs.js';
import { holderContainerSpec, outputsVolumeSpec, type OutputLimits } from './sandbox.js';

/**
 * Outputs holders made ahead of runs. A run's outputs go to a size-limited tmpfs volume that a holder
 * container keeps mounted until they are copied out (sandbox.ts); creating and starting that holder is
 * ~0.3 s of engine work, and removing it another ~0.2 s. The pool keeps a few (volume, running holder)
 * slots ready, so a run only takes one; after the run its slot is removed in the background — never
 * reused, since it holds that run's outputs. With none ready (a burst, or no base image to make them
 * from), a slot is made for the run from the run's own image, as before.
 *
 * Nothing of the pool outlives the agent: `close` (the daemon's stop) removes every slot, ready or
 * discarded; after a kill -9, the start-up repair removes whatever carries this agent's pool label
 * (`removePoolLeftovers`, called by agent/startup-repair.ts). The label is apart from `io.rgrid.agent`
 * on purpose: that one marks build leftovers, of which a running agent has none.
 */
export const POOL_LABEL = 'io.rgrid.outputs-pool';

export interface OutputsSlot {
  volume: string;
  holder: Docker.Container;
  /** The empty outputs directory as the engine saw it when the holder was made (outputs.ts), if it said. */
  baseline?: OutputsDirStat | undefined;
}

export interface HolderPool {
  /** A running holder with its empty outputs volume: a ready one, or one made now from `imageId`. */
  take(imageId: string): Promise<OutputsSlot>;
  /** Removes a used slot in the background (close waits for it). */
  discard(slot: OutputsSlot): void;
  /**
   * Stops making slots ahead and removes the ready ones now (the daemon's drain: its runs may still take
   * one, made for them then). Returns at once; `close` waits for the removals.
   */
  drain(): void;
  /** Stops making slots and removes every one; resolves when they are gone. */
  close(): Promise<void>;
  readonly ready: number;
}

export interface HolderPoolDeps {
  docker: Docker;
  agentId: string;
  logger: Logger;
  /** Slots kept ready (config run_holder_pool_size); 0 makes every slot at its run. */
  size: number;
  output: OutputLimits;
  /** The image ready slots are made from (a runtime's base image: it has python3); undefined: none. */
  holderImage?: () => Promise<string | undefined>;
  /** Resolves when it is safe to start making slots (the start-up sweep of old volumes is done). */
  after?: Promise<unknown>;
  /** Wait after a failed fill before the next attempt. */
  retryMs?: number;
  /** How long one engine call may go unanswered (engine-deadline.ts). */
  stepTimeoutMs?: number;
}

export function createHolderPool(deps: HolderPoolDeps): HolderPool {
  const { docker, logger, output } = deps;
  const labels = { [POOL_LABEL]: deps.agentId };
  const stepMs = deps.stepTimeoutMs ?? ENGINE_STEP_TIMEOUT_MS;
  const ready: OutputsSlot[] = [];
  const pending = new Set<Promise<unknown>>();
  let closed = false;
  let draining = false;
  let filling = false;
  let retryTimer: NodeJS.Timeout | undefined;

  const track = <T>(work: Promise<T>): Promise<T> => {
    const settled = work.then(() => undefined, () => undefined);
    pending.add(settled);
    void settled.then(() => pending.delete(settled));
    return work;
  };

  async function remove(slot: { volume: string; holder?: Docker.Container }): Promise<void> {
    if (slot.holder) {
      await withinDeadline(slot.holder.remove({ force: true }), stepMs, 'removing an outputs holder').catch((err: unknown) => logger.warn({ err }, 'outputs holder not removed'));
    }
    // The volume is in use until its holder is gone; a tmpfs holds nothing once unmounted.
    await withinDeadline(docker.getVolume(slot.volume).remove(), stepMs, 'removing an outputs volume')
      .catch((err: unknown) => logger.warn({ err, volume: slot.volume }, 'outputs volume not removed'));
  }

  async function make(imageId: string): Promise<OutputsSlot> {
    const id = randomUUID();
    const volume = `rgrid-run-outputs-${id}`;
    let holder: Docker.Container | undefined;
    try {
      // Each engine call bounded (engine-deadline.ts); what one answered late made is removed (the volume
      // and a late holder by the pool's label at the next start at worst).
      await withinDeadline(docker.createVolume(outputsVolumeSpec(volume, output, labels)), stepMs, 'creating an outputs volume');
      holder = await withinDeadline(docker.createContainer(holderContainerSpec({ imageId, name: `rgrid-hold-${id}`, volume, output, labels })), stepMs,
        'creating an outputs holder', (late) => void late.remove({ force: true }).catch(() => undefined));
      await withinDeadline(holder.start(), stepMs, 'starting an outputs holder');
      // A few ms here saves reading an empty archive after the run (outputs.ts, OutputsDirStat).
      const baseline = await withinDeadline(statOutputsDir(holder), stepMs, 'the outputs directory\'s stat').catch(() => undefined);
      return { volume, holder, baseline };
    } catch (err) {
      await remove({ volume, ...(holder ? { holder } : {}) });
      throw err;
    }
  }

  async function fill(): Promise<void> {
    if (filling || closed || draining || deps.size <= 0 || !deps.holderImage) return;
    filling = true;
    try {
      await deps.after;
      // One at a time: a fill competes with the runs for the engine and the CPU.
      while (!closed && !draining && ready.length < deps.size) {
        const image = await deps.holderImage();
        if (!image) return;
        const slot = await make(image);
        if (closed || draining) {
          await remove(slot);
          return;
        }
        ready.push(slot);
      }
    } catch (err) {
      logger.warn({ err }, 'making an outputs holder ahead failed; runs make their own until a retry succeeds');
      retryTimer = setTimeout(() => void track(fill()), deps.retryMs ?? 5000);
      retryTimer.unref();
    } finally {
      filling = false;
    }
  }

  void track(fill());

  return {
    get ready() {
      return ready.length;
    },

    async take(imageId) {
      if (closed) throw new Error('the outputs holder pool is closed');
      const slot = ready.shift();
      void track(fill());
      if (slot) return slot;
      return track(make(imageId));
    },

    discard(slot) {
      void track(remove(slot));
    },

    drain() {
      draining = true;
      clearTimeout(retryTimer);
      for (const slot of ready.splice(0)) void track(remove(slot));
    },

    async close() {
      closed = true;
      clearTimeout(retryTimer);
      while (pending.size > 0) await Promise.all([...pending]);
      await Promise.all(ready.splice(0).map(remove));
    },
  };
}

/** After a kill -9: every pool container and volume this agent ID left behind (agent/startup-repair.ts). */
export async function removePoolLeftovers(docker: Docker, agentId: string, logger: Logger): Promise<number> {
  const label = [`${POOL_LABEL}=${agentId}`];
  let removed = 0;
  const containers = await docker.listContainers({ all: true, filters: { label } });
  for (const c of containers) {
    await docker.getContainer(c.Id).remove({ force: true }).then(() => removed++, (err: unknown) => logger.warn({ err, id: c.Id }, 'leftover outputs holder not removed'));
  }
  const { Volumes } = await docker.listVolumes({ filters: { label } });
  for (const v of Volumes ?? []) {
    await docker.getVolume(v.Name).remove().then(() => removed++, (err: unknown) => logger.warn({ err, volume: v.Name }, 'leftover outputs volume not removed'));
  }
  return removed;
}
