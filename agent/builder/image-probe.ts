import type Docker from 'dockerode';
import { Client } from 'undici';
import { engineError, isNotFound } from './engine-build.js';

/**
 * "Does the engine still have this image?" — asked on every hit (a hit is verified: docs/architecture.md, the index lifecycle), so it
 * is on the latency-critical path. dockerode opens a new connection and runs its generic request
 * machinery per call; a kept-alive undici connection to the same Unix socket answers in about half the
 * time. Builds, runs and everything else still go through dockerode. Engines reached over TCP fall back
 * to dockerode here too.
 */
export interface ImageProbe {
  exists(imageId: string): Promise<boolean>;
  close(): Promise<void>;
}

export function createImageProbe(docker: Docker): ImageProbe {
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
