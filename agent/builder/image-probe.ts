import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { Client } from 'undici';
import { engineError, isNotFound } from './engine-build.js';
import { isOciDigest } from '../../common/names.js';
import { ImageSet, type ImageEvent } from './image-set.js';

/**
 * "Does the engine still have this image?" — asked on every hit (a hit is verified: docs/architecture.md,
 * the index lifecycle), so it is on the latency-critical path. It is answered from memory: the set of
 * image IDs the engine has, kept current from the engine's event stream (type=image), with a full resync
 * (listImages) whenever the stream (re)connects. While the stream is down, or for an ID the stream has
 * not told about (an untagged build emits no event), the engine is asked, over a kept-alive undici
 * connection to its Unix socket (dockerode opens a connection per call; engines over TCP use dockerode).
 *
 * An event arrives after the deletion it reports, so a hit can name an image deleted a moment before:
 * the run path closes that window where the container is created (agent/runner/run.ts: "no such image"
 * → `forget` the ID, ensure again once, which rebuilds).
 */
export interface ImageProbeStats {
  /** The event stream is connected and the set resynced: answers come from memory. */
  live: boolean;
  /** Questions that went to the engine (stream down, or an ID the set did not know). */
  engine_checks: number;
  /** Full resyncs (one per (re)connection of the stream). */
  resyncs: number;
  images: number;
}

export interface ImageProbe {
  exists(imageId: string): Promise<boolean>;
  /** The engine answered "no such image" for this ID elsewhere: the next `exists` says no without asking. */
  forget(imageId: string): void;
  /**
   * Calls `listener` with each image ID the engine reports deleted (a delete event) or `forget` is told
   * of, so that what is kept for an image (the runner's hot containers) goes with it. Returns the
   * unsubscribe.
   */
  onGone(listener: (imageId: string) => void): () => void;
  stats(): ImageProbeStats;
  close(): Promise<void>;
}

export interface ImageProbeOptions {
  logger?: Logger;
  /** Follow the event stream (default true); false asks the engine on every call. */
  watch?: boolean;
  /** Reconnection backoff of the event stream, first and longest wait. */
  reconnectMs?: { first: number; max: number };
}

type Ask = { exists(imageId: string): Promise<boolean>; close(): Promise<void> };

/** One question to the engine per call. */
function engineAsker(docker: Docker): Ask {
  const socketPath = (docker.modem as { socketPath?: unknown }).socketPath;
  if (typeof socketPath !== 'string') {
    return {
      async exists(imageId) {
        try {
          await docker.getImage(imageId).inspect();
          return true;
        } catch (err) {
          if (isNotFound(err)) return false;
          throw engineError('verifying a cached image failed', err);
        }
      },
      close: () => Promise.resolve(),
    };
  }
  const client = new Client('http://localhost', { socketPath, keepAliveTimeout: 30_000 });
  return {
    async exists(imageId) {
      let status: number;
      try {
        const res = await client.request({ method: 'GET', path: `/images/${encodeURIComponent(imageId)}/json` });
        status = res.statusCode;
        await res.body.dump();
      } catch (err) {
        throw engineError('verifying a cached image failed', err);
      }
      if (status === 200) return true;
      if (status === 404) return false;
      throw engineError('verifying a cached image failed', { statusCode: status });
    },
    close: () => client.close(),
  };
}

export function createImageProbe(docker: Docker, options: ImageProbeOptions = {}): ImageProbe {
  const ask = engineAsker(docker);
  const set = new ImageSet();
  const logger = options.logger;
  const backoff = options.reconnectMs ?? { first: 500, max: 30_000 };
  let live = false;
  let closed = false;
  let engineChecks = 0;
  let resyncs = 0;
  let stream: Readable | undefined;
  let wake: (() => void) | undefined;
  const goneListeners = new Set<(imageId: string) => void>();
  const gone = (imageId: string): void => {
    for (const listener of goneListeners) listener(imageId);
  };
  const apply = (event: ImageEvent): void => {
    set.apply(event);
    const actor = event.Actor?.ID ?? event.id;
    if (event.Action === 'delete' && isOciDigest(actor)) gone(actor);
  };

  async function askEngine(imageId: string): Promise<boolean> {
    engineChecks++;
    return ask.exists(imageId);
  }

  /** One connection of the stream: subscribe, resync, follow; resolves when the stream ends. */
  async function follow(): Promise<void> {
    const events = (await docker.getEvents({ filters: { type: ['image'] } })) as unknown as Readable;
    stream = events;
    if (closed) {
      events.destroy();
      return;
    }
    // Events that arrive during the listing are applied after it: a deletion the listing still saw
    // must win over the listing.
    let held: ImageEvent[] | undefined = [];
    let pending = '';
    const ended = new Promise<void>((resolve) => {
      events.on('data', (chunk: Buffer) => {
        pending += chunk.toString('utf8');
        let newline: number;
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (!line) continue;
          let event: ImageEvent;
          try {
            event = JSON.parse(line) as ImageEvent;
          } catch {
            continue; // not an event: ignored (the set only ever takes IDs of the one definition)
          }
          if (held) held.push(event);
          else apply(event);
        }
      });
      events.once('end', resolve);
      events.once('close', resolve);
      events.once('error', resolve);
    });
    try {
      const images = await docker.listImages({ all: true });
      set.resync(images.map((i) => i.Id));
    } catch (err) {
      events.destroy();
      throw err;
    }
    for (const event of held) apply(event);
    held = undefined;
    resyncs++;
    live = true;
    logger?.debug({ images: set.size }, 'image events followed; image set resynced');
    await ended;
    live = false;
  }

  async function watch(): Promise<void> {
    let wait = backoff.first;
    while (!closed) {
      const started = Date.now();
      try {
        await follow();
        if (!closed) logger?.warn('the engine\'s image event stream ended; asking the engine until it is back');
      } catch (err) {
        if (!closed) logger?.warn({ err }, 'cannot follow the engine\'s image events; asking the engine until it can');
      }
      live = false;
      if (closed) break;
      // A connection that lasted resets the backoff; one failing at once doubles it.
      wait = Date.now() - started > backoff.max ? backoff.first : Math.min(wait * 2, backoff.max);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        timer.unref();
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  }

  const watching = options.watch === false ? Promise.resolve() : watch();

  return {
    async exists(imageId) {
      if (!live) return askEngine(imageId);
      const known = set.state(imageId);
      if (known !== 'unknown') return known === 'present';
      const found = await askEngine(imageId);
      set.learn(imageId, found);
      return found;
    },
    forget(imageId) {
      set.forget(imageId);
      if (isOciDigest(imageId)) gone(imageId);
    },
    onGone(listener) {
      goneListeners.add(listener);
      return () => void goneListeners.delete(listener);
    },
    stats: () => ({ live, engine_checks: engineChecks, resyncs, images: set.size }),
    async close() {
      if (closed) return;
      closed = true;
      live = false;
      stream?.destroy();
      wake?.();
      await watching;
      await ask.close();
    },
  };
}
