/**
 * Where the agent's control-plane client finds the control plane and who it is there: read from the
 * agent's config store on every request, never copied at start. So a changed config file (control_url,
 * worker_id, worker_token — live keys) and a rotated token file (worker_token_file, re-read each time)
 * reach the claim loop and the sync alike: an operator writes the new token, then revokes the old one,
 * and no request after the write carries the old token.
 */
import { hostname } from 'node:os';
import { relative } from 'node:path';
import { RgridError, isRgridError } from '../../common/errors.js';
import { assertWorkerId } from '../../common/names.js';
import { readTokenFile } from '../../common/token-file.js';
import type { AgentConfig } from '../config.js';

export interface ControlCredentials {
  /** The control plane's base URL, without trailing slashes. */
  url: string;
  token: string;
  workerId: string;
}

/** The worker id the token is bound to: `worker_id`, else the host name made to fit the naming contract. */
export function workerIdOf(c: Pick<AgentConfig, 'worker_id'>): string {
  return c.worker_id ?? hostname().replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 128);
}

/** systemd's credentials directory: only this service can open it, so a file's mode bits are not checked there. */
function inCredentialsDirectory(path: string): boolean {
  const dir = process.env.CREDENTIALS_DIRECTORY;
  if (!dir) return false;
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
}

/**
 * The credentials as configured right now. A token file that cannot be read or checked (being replaced,
 * made readable by others) fails the request as `unavailable` — retried, never sent without a token.
 */
export function readCredentials(c: AgentConfig): ControlCredentials {
  if (!c.control_url) throw new RgridError('unavailable', 'no control plane configured (control_url)');
  let token = c.worker_token;
  if (token === undefined && c.worker_token_file !== undefined) {
    try {
      token = readTokenFile(c.worker_token_file, 'worker_token_file', { inPrivateDirectory: inCredentialsDirectory(c.worker_token_file) });
    } catch (err) {
      throw new RgridError('unavailable', `the worker token cannot be used: ${isRgridError(err) ? err.message : String(err)}`);
    }
  }
  if (token === undefined) throw new RgridError('unavailable', 'no worker token configured (worker_token or worker_token_file)');
  return { url: c.control_url.replace(/\/+$/, ''), token, workerId: assertWorkerId(workerIdOf(c), 'worker_id') };
}
