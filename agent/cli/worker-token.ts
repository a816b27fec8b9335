/**
 * Where `rgrid-agent serve` takes its worker token from, first match wins:
 *   1. `--worker-token-file FILE`, `--worker-token TOKEN` (kept for compatibility, with a warning: a
 *      command line is readable by every local user);
 *   2. the config file's `worker_token_file` / `worker_token`;
 *   3. `RGRID_WORKER_TOKEN`, then `RGRID_WORKER_TOKEN_FILE`, then systemd's credential
 *      `$CREDENTIALS_DIRECTORY/worker-token` (`LoadCredential=worker-token:…`).
 * A token file must be private to its owner (common/token-file.ts), except a systemd credential, whose
 * directory only the service can open. The token itself never goes into a log line or the environment
 * of anything the agent starts.
 */
import { existsSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { readTokenFile } from '../../common/token-file.js';
import { shown } from '../../common/names.js';
import type { AgentConfig, AgentConfigInput } from '../config.js';

export interface WorkerTokenEnv {
  workerToken?: string | undefined;
  workerTokenFile?: string | undefined;
  credentialsDirectory?: string | undefined;
}

export const WORKER_TOKEN_ON_COMMAND_LINE_WARNING =
  'rgrid-agent: warning: --worker-token is visible to every local user (ps, /proc/PID/cmdline); prefer --worker-token-file, worker_token_file in the config, or a systemd credential';

/** The token settings the flags, else the environment, add on top of the config file. */
export function workerTokenSettings(
  flags: { workerToken?: string | undefined; workerTokenFile?: string | undefined },
  fromFile: AgentConfigInput,
  env: WorkerTokenEnv,
  warn: (line: string) => void,
): { worker_token?: string; worker_token_file?: string } {
  if (flags.workerToken !== undefined) warn(WORKER_TOKEN_ON_COMMAND_LINE_WARNING);
  if (flags.workerToken !== undefined || flags.workerTokenFile !== undefined) {
    return { ...(flags.workerToken !== undefined ? { worker_token: flags.workerToken } : {}), ...(flags.workerTokenFile !== undefined ? { worker_token_file: flags.workerTokenFile } : {}) };
  }
  if (fromFile.worker_token !== undefined || fromFile.worker_token_file !== undefined) return {};
  if (env.workerToken) return { worker_token: env.workerToken };
  if (env.workerTokenFile) return { worker_token_file: env.workerTokenFile };
  const credential = env.credentialsDirectory ? join(env.credentialsDirectory, 'worker-token') : undefined;
  return credential && existsSync(credential) ? { worker_token_file: credential } : {};
}

const inside = (dir: string | undefined, path: string): boolean => {
  if (!dir) return false;
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
};

/**
 * Refuses a worker token file that others could read (or that holds no usable token) at start, so the
 * operator sees it at once rather than as failed registrations later.
 */
export function checkWorkerTokenFile(config: Pick<AgentConfig, 'worker_token_file'>, credentialsDirectory: string | undefined): void {
  if (config.worker_token_file === undefined) return;
  readTokenFile(config.worker_token_file, 'worker_token_file', { inPrivateDirectory: inside(credentialsDirectory, config.worker_token_file) });
}

/** A token written into a config file that others can read is as exposed as one on a command line. */
export function warnIfConfigExposesToken(configPath: string | undefined, fromFile: AgentConfigInput, warn: (line: string) => void): void {
  if (configPath === undefined || fromFile.worker_token === undefined) return;
  const mode = statSync(configPath).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    warn(`rgrid-agent: warning: ${shown(configPath)} holds worker_token and has mode ${mode.toString(8).padStart(4, '0')}: others may read it; use worker_token_file (mode 0600) instead`);
  }
}
