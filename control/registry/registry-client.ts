/**
 * The little of the OCI distribution HTTP API the control plane uses: deleting a manifest by digest when
 * its image fell out of use. Every call is bounded in time; the credentials are read from their file at
 * each use (so a rotated password needs no restart) and never appear in a message or a log.
 */
import { readFile } from 'node:fs/promises';
import { RgridError } from '../../common/errors.js';
import { parseJsonFile } from '../../common/json-file.js';
import { shown } from '../../common/names.js';
import { manifestUrl } from '../../common/registry-names.js';

/** Longest wait for one answer of the registry. */
export const REGISTRY_CALL_TIMEOUT_MS = 10_000;

export interface RegistryAuth {
  username: string;
  password: string;
}

/** `{ "username": ..., "password": ... }` from `path`; an error names the file, never its content. */
export async function readRegistryAuth(path: string): Promise<RegistryAuth> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new RgridError('unavailable', `cannot read the registry auth file ${shown(path, 200)}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  const value = parseJsonFile(path, text) as { username?: unknown; password?: unknown } | null;
  const ok = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 4096 && !/[\r\n\u0000]/.test(v);
  if (!value || typeof value !== 'object' || !ok(value.username) || !ok(value.password) || value.username.includes(':')) {
    throw new RgridError('bad_request', `the registry auth file ${shown(path, 200)} must hold {"username": "...", "password": "..."} (one line each, no ':' in the username)`);
  }
  return { username: value.username, password: value.password };
}

export type DeleteOutcome = 'deleted' | 'absent';

/**
 * DELETE /v2/<name>/manifests/<digest>. 202 is deleted, 404 is already gone (both leave nothing to do);
 * anything else, an unreachable registry or no answer within the timeout is `unavailable`.
 */
export async function deleteManifest(
  registry: string, account: string, digest: string, opts: { authFile: string | null; timeoutMs?: number },
): Promise<DeleteOutcome> {
  const url = manifestUrl(registry, account, digest);
  const headers: Record<string, string> = {};
  if (opts.authFile !== null) {
    const auth = await readRegistryAuth(opts.authFile);
    headers.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  }
  let status: number;
  try {
    const res = await fetch(url, { method: 'DELETE', headers, redirect: 'error', signal: AbortSignal.timeout(opts.timeoutMs ?? REGISTRY_CALL_TIMEOUT_MS) });
    status = res.status;
    // The body is not used; drain it so the connection is released.
    await res.arrayBuffer().catch(() => undefined);
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    const why = e.name === 'TimeoutError' || e.name === 'AbortError' ? 'timed out' : (e.cause?.code ?? e.message);
    throw new RgridError('unavailable', `registry ${shown(registry, 255)} did not answer the delete of ${digest}: ${shown(why, 200)}`);
  }
  if (status === 202 || status === 200) return 'deleted';
  if (status === 404) return 'absent';
  // 405: the registry does not allow deletes (storage.delete.enabled is off); 401/403: credentials.
  throw new RgridError('unavailable', `registry ${shown(registry, 255)} answered ${status} to the delete of ${digest}${status === 405 ? ' (deletes are not enabled in its configuration)' : ''}`);
}
