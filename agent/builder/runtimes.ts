import type Docker from 'dockerode';
import { RgridError } from '../../common/errors.js';
import { durationsOf, defaultRuntime, type AgentConfig } from '../config.js';
import { engineError, isNotFound } from './engine-build.js';
import { readRegistryAuth } from '../registry/auth.js';

/** Pulls a runtime's missing base image; a clear `unavailable` when it cannot be pulled. */
async function pullBaseImage(docker: Docker, config: AgentConfig, name: string, image: string): Promise<string> {
  const registryHost = config.registry?.split('/')[0];
  const fromRegistry = registryHost !== undefined && image.startsWith(`${registryHost}/`);
  try {
    const auth = fromRegistry ? await readRegistryAuth(config.registry_auth_file) : undefined;
    const authconfig = auth ? { username: auth.username, password: auth.password, serveraddress: registryHost! } : undefined;
    const stream = await docker.pull(image, { abortSignal: AbortSignal.timeout(durationsOf(config).registry_timeout_ms), ...(authconfig ? { authconfig } : {}) });
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string }>) => {
        const failed = events?.find((e) => e.error);
        if (err || failed) reject(err ?? new Error(failed?.error));
        else resolve();
      });
    });
    return (await docker.getImage(image).inspect()).Id;
  } catch (err) {
    const reason = (err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError' ? `no pull within ${config.registry_timeout_s} s` : (err as Error).message;
    throw new RgridError('unavailable', `base image ${image} of runtime ${name} is not in the Docker engine and could not be pulled: ${reason.slice(0, 300)}`);
  }
}

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
      const ttlMs = durationsOf(config).base_image_ttl_ms;
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
        if (!isNotFound(err)) throw engineError('inspecting a base image failed', err);
        // Not here yet (a new worker): pulled once, from the configured registry when the reference
        // names it, bounded by registry_timeout_s.
        imageId = await pullBaseImage(docker, config, name, image);
      }
      cache.set(name, { image, imageId, at: now() });
      return { name, image, imageId };
    },
  };
}
