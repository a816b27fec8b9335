/**
 * Images between an engine and an OCI distribution registry: push after a build, pull before one. A pull
 * is always by manifest digest (the one the builder recorded), never by tag, and the pulled image's
 * `io.rgrid.*` labels must name exactly the key, kind and account asked for: a moved tag or a tampered
 * registry then yields a refusal, never a wrong image under a right key. Every call is bounded in time.
 */
import type Docker from 'dockerode';
import { RgridError } from '../../common/errors.js';
import { assertOciDigest, shown } from '../../common/names.js';
import { registryLocation, type ImageKind, type RegistryLocation } from '../../common/registry-names.js';

// The naming is shared with the control plane, which deletes what falls out of use.
export { registryLocation, type ImageKind, type RegistryLocation };

export interface RegistryAuth {
  username: string;
  password: string;
}

/** The engine's X-Registry-Auth for one request; an empty object for a registry without authentication. */
function authConfig(registry: string, auth: RegistryAuth | undefined): Docker.AuthConfig {
  const serveraddress = registry.split('/')[0]!;
  return auth ? { username: auth.username, password: auth.password, serveraddress } : ({});
}

interface ProgressEvent {
  error?: string;
  errorDetail?: { message?: string };
  aux?: { Digest?: string; Size?: number; Tag?: string };
}

/** Follows an engine progress stream to its end; rejects on the first error event. */
function follow(docker: Docker, stream: NodeJS.ReadableStream): Promise<ProgressEvent[]> {
  return new Promise((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: ProgressEvent[]) => {
      const failed = events?.find((e) => e.error || e.errorDetail);
      if (err) reject(err);
      else if (failed) reject(new Error(failed.errorDetail?.message ?? failed.error ?? 'failed'));
      else resolve(events);
    });
  });
}

function registryError(action: string, where: string, err: unknown): RgridError {
  const message = (err as Error).name === 'AbortError' ? 'timed out' : (err as Error).message;
  return new RgridError('unavailable', `registry ${action} of ${shown(where, 200)} failed: ${shown(message, 300)}`);
}

export interface PushResult {
  /** The manifest digest the registry stored: what every puller asks for. */
  digest: string;
  size: number | null;
}

/** Tags `imageId` at its location and pushes it; returns the manifest digest the registry reported. */
export async function pushImage(
  docker: Docker, registry: string, imageId: string, location: RegistryLocation, options: { auth?: RegistryAuth; timeoutMs: number },
): Promise<PushResult> {
  const ref = `${location.repository}:${location.tag}`;
  const signal = AbortSignal.timeout(options.timeoutMs);
  try {
    await docker.getImage(imageId).tag({ repo: location.repository, tag: location.tag });
    const stream = await docker.getImage(ref).push({ abortSignal: signal } as never, undefined, authConfig(registry, options.auth));
    const events = await follow(docker, stream);
    const aux = events.find((e) => e.aux?.Digest)?.aux;
    return { digest: assertOciDigest(aux?.Digest, 'pushed manifest digest'), size: typeof aux?.Size === 'number' ? aux.Size : null };
  } catch (err) {
    if (err instanceof RgridError) throw err;
    throw registryError('push', ref, err);
  } finally {
    // The tag is only a handle for the push; the engine keeps the image under its own tags.
    await docker.getImage(ref).remove({ noprune: true }).catch(() => undefined);
  }
}

export interface ExpectedImage {
  account: string;
  kind: ImageKind;
  key: string;
}

/** The label that names an image's key, per kind. */
const KEY_LABEL: Record<ImageKind, string> = { image: 'io.rgrid.image-key', deps: 'io.rgrid.deps-key' };

/**
 * Pulls `digest` from the location and checks its labels; returns the local image ID. A mismatch removes
 * what was pulled and throws `digest_mismatch`; an unreachable registry throws `unavailable`.
 */
export async function pullVerified(
  docker: Docker, registry: string, location: RegistryLocation, digest: string, expected: ExpectedImage,
  options: { auth?: RegistryAuth; timeoutMs: number },
): Promise<string> {
  const ref = `${location.repository}@${assertOciDigest(digest)}`;
  const signal = AbortSignal.timeout(options.timeoutMs);
  try {
    const stream = await docker.pull(ref, { abortSignal: signal, authconfig: authConfig(registry, options.auth) });
    await follow(docker, stream);
  } catch (err) {
    throw registryError('pull', ref, err);
  }
  const info = await docker.getImage(ref).inspect();
  const labels = info.Config?.Labels ?? {};
  const problems: string[] = [];
  if (labels['io.rgrid.kind'] !== expected.kind) problems.push(`kind ${shown(labels['io.rgrid.kind'] ?? null)}`);
  if (labels[KEY_LABEL[expected.kind]] !== expected.key) problems.push(`key ${shown(labels[KEY_LABEL[expected.kind]] ?? null)}`);
  if (labels['io.rgrid.account'] !== expected.account) problems.push('another account');
  if (problems.length > 0) {
    // Remove the reference we pulled; the image itself goes with it unless something else uses it.
    await docker.getImage(ref).remove().catch(() => undefined);
    throw new RgridError('digest_mismatch', `image ${shown(ref, 200)} is not ${expected.kind} ${expected.key.slice(0, 16)}…: its labels say ${problems.join(', ')}`);
  }
  return info.Id;
}
