import { readFile } from 'node:fs/promises';
import { RgridError } from '../../common/errors.js';
import { parseJsonFile } from '../../common/json-file.js';
import type { RegistryAuth } from './transfer.js';

/**
 * The registry's credentials, read from `registry_auth_file` on every push and pull (a rotated password
 * is used at once) and never kept, logged or put in a command line. An unreadable or malformed file is a
 * one-line error naming the file, never its content.
 */
export async function readRegistryAuth(path: string | undefined): Promise<RegistryAuth | undefined> {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new RgridError('unavailable', `registry_auth_file ${path} is not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const parsed = parseJsonFile(`registry_auth_file ${path}`, text) as { username?: unknown; password?: unknown } | null;
  const { username, password } = parsed ?? {};
  if (typeof username !== 'string' || typeof password !== 'string' || username === '' || username.length > 256 || password.length > 4096) {
    throw new RgridError('bad_request', `registry_auth_file ${path} must hold {"username": "…", "password": "…"}`);
  }
  return { username, password };
}
