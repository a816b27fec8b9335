import type Docker from 'dockerode';
import { RgridError } from '../../common/errors.js';
import { defaultRuntime, type AgentConfig } from '../config.js';
import { engineError, isNotFound } from './engine-build.js';

/**
 * Runtime names → base image IDs. The ID (not the tag) goes into deps_key/image_key, so re-tagging a
 * runtime's image to a new build changes every key built on it. Resolved IDs are trusted for
 * `base_image_ttl_s` so that a hit does not pay an extra engine round trip each time.
 */
export interface ResolvedRuntime {
  name: string;
  image: string;
  imageId: string;
}

export interface RuntimeResolver {
  resolve(name: string | undefined): Promise<ResolvedRuntime>;
  names(): string[];
}

/** `config` may be a getter: runtimes then follow a live-reloaded config file. */
export function createRuntimeResolver(docker: Docker, configOrGetter: AgentConfig | (() => AgentConfig), now: () => number = Date.now): RuntimeResolver {
  const current = typeof configOrGetter === 'function' ? configOrGetter : () => configOrGetter;
  const cache = new Map<string, { image: string; imageId: string; at: number }>();
  return {
    names: () => Object.keys(current().runtimes),
    async resolve(requested) {
      const config = current();
      const ttlMs = config.base_image_ttl_s * 1000;
      const name = requested ?? defaultRuntime(config);
      if (name === undefined) {
        throw new RgridError('unknown_runtime', `no runtime given and no default; configured: ${Object.keys(config.runtimes).join(', ') || 'none'}`);
      }
      const image = Object.hasOwn(config.runtimes, name) ? config.runtimes[name] : undefined;
      if (image === undefined) {
        throw new RgridError('unknown_runtime', `unknown runtime ${JSON.stringify(name)}; configured: ${Object.keys(config.runtimes).join(', ') || 'none'}`);
      }
      const cached = cache.get(name);
      // A runtime re-pointed at another image (config reload) is resolved again at once.
      if (cached && cached.image === image && now() - cached.at < ttlMs) return { name, image, imageId: cached.imageId };
      let imageId: string;
      try {
        imageId = (await docker.getImage(image).inspect()).Id;
      } catch (err) {
        if (isNotFound(err)) throw new RgridError('unavailable', `base image ${image} of runtime ${name} is not in the Docker engine`);
        throw engineError('inspecting a base image failed', err);
      }
      cache.set(name, { image, imageId, at: now() });
      return { name, image, imageId };
    },
  };
}
