/**
 * Turns CLI flags and the environment into a ControlConfig. This is the only place that reads
 * process.env (passed in as `env`), once, at start.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDuration } from '../../common/duration.js';
import { RgridError } from '../../common/errors.js';
import { loadControlConfig, parseListen, type ControlConfig, type ControlConfigInput } from '../config.js';

export interface CommonFlags {
  dataDir?: string;
  databaseUrl?: string;
  databaseUrlFile?: string;
  logLevel?: string;
}

export interface ServeFlags extends CommonFlags {
  listen?: string;
  adminTokenFile?: string;
  bodyLimit?: string;
  blobMaxBytes?: string;
  entryTtl?: string;
  workerDeadAfter?: string;
  workerRetention?: string;
  cleanupInterval?: string;
  blobGrace?: string;
  poolMax?: string;
  fleetCache?: string;
  tokenCache?: string;
  migrate?: boolean;
  // Admission control (docs/operations.md, Admission control and limits).
  snapshotBodyLimit?: string;
  accountBlobQuota?: string;
  accountBlobCount?: string;
  tokenRateLimit?: string;
  tokenConcurrency?: string;
  authFailures?: string;
  requestTimeout?: string;
  headersTimeout?: string;
  connectionTimeout?: string;
  keepAliveTimeout?: string;
  bodyIdleTimeout?: string;
  // Dispatch and run limits (docs/dispatch.md; docs/operations.md, Tenancy and run limits).
  claimLease?: string;
  claimWaitMax?: string;
  maxAttempts?: string;
  logMaxBytes?: string;
  runMaxMemoryMb?: string;
  runMaxTimeout?: string;
  runMaxAttempts?: string;
}

function integer(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new RgridError('bad_request', `${flag} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

const duration = (text: string | undefined, flag: string): number | undefined => (text === undefined ? undefined : parseDuration(text, flag));

/** Where a secret came from: the CLI warns about the forms that other local users can read. */
export type SecretSource = 'flag-file' | 'env' | 'env-file' | 'credential' | 'command-line';

export interface Secret {
  value: string;
  source: SecretSource;
  /** The file it was read from, for messages (never the value). */
  path?: string;
}

function secretFromFile(path: string, what: string): Secret['value'] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RgridError('bad_request', `cannot read the ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  const value = text.trim();
  if (!value) throw new RgridError('bad_request', `the ${what} file ${path} is empty`);
  if (/[\r\n]/.test(value)) throw new RgridError('bad_request', `the ${what} file ${path} must hold one line`);
  return value;
}

/**
 * One secret from, in order: a file named by a flag, the variable itself, a file named by
 * `<VAR>_FILE`, then systemd's credential `$CREDENTIALS_DIRECTORY/<credential>` (LoadCredential=).
 */
export function readSecret(spec: { flagFile: string | undefined; env: NodeJS.ProcessEnv; variable: string; credential: string; what: string }): Secret | null {
  const { flagFile, env, variable, credential, what } = spec;
  if (flagFile) return { value: secretFromFile(flagFile, what), source: 'flag-file', path: flagFile };
  const direct = env[variable]?.trim();
  if (direct) return { value: direct, source: 'env' };
  const file = env[`${variable}_FILE`];
  if (file) return { value: secretFromFile(file, what), source: 'env-file', path: file };
  if (env.CREDENTIALS_DIRECTORY) {
    const path = join(env.CREDENTIALS_DIRECTORY, credential);
    if (existsSync(path)) return { value: secretFromFile(path, what), source: 'credential', path };
  }
  return null;
}

/** Admin token: --admin-token-file, RGRID_CONTROL_ADMIN_TOKEN, RGRID_CONTROL_ADMIN_TOKEN_FILE, then systemd's LoadCredential. */
export function readAdminToken(flagFile: string | undefined, env: NodeJS.ProcessEnv): string | null {
  return readSecret({ flagFile, env, variable: 'RGRID_CONTROL_ADMIN_TOKEN', credential: 'admin-token', what: 'admin token' })?.value ?? null;
}

/**
 * The external database URL (it holds a password): --database-url (visible to every local user in the
 * process list, so the CLI warns), --database-url-file, DATABASE_URL, DATABASE_URL_FILE, then the
 * credential `database-url`.
 */
export function readDatabaseUrl(flags: { databaseUrl?: string; databaseUrlFile?: string }, env: NodeJS.ProcessEnv): Secret | null {
  if (flags.databaseUrl) return { value: flags.databaseUrl, source: 'command-line' };
  return readSecret({ flagFile: flags.databaseUrlFile, env, variable: 'DATABASE_URL', credential: 'database-url', what: 'database URL' });
}

/** Whether a database URL carries a password (then it must not sit on a command line). */
export function urlHasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return /:[^/@]*@/.test(url);
  }
}

export function configFromFlags(flags: ServeFlags, env: NodeJS.ProcessEnv): ControlConfig {
  const input: ControlConfigInput = {};
  const set = <K extends keyof ControlConfig>(key: K, value: ControlConfig[K] | undefined): void => {
    if (value !== undefined) input[key] = value;
  };
  if (flags.listen) {
    const { host, port } = parseListen(flags.listen);
    input.host = host;
    input.port = port;
  }
  set('dataDir', flags.dataDir ?? env.RGRID_CONTROL_DATA_DIR);
  set('databaseUrl', readDatabaseUrl(flags, env)?.value);
  set('logLevel', (flags.logLevel ?? env.RGRID_CONTROL_LOG_LEVEL) as ControlConfig['logLevel'] | undefined);
  set('adminToken', readAdminToken(flags.adminTokenFile, env) ?? undefined);
  set('bodyLimitBytes', integer(flags.bodyLimit, '--body-limit'));
  set('blobMaxBytes', integer(flags.blobMaxBytes, '--blob-max-bytes'));
  set('poolMax', integer(flags.poolMax, '--pool-max'));
  set('entryTtlMs', duration(flags.entryTtl, '--entry-ttl'));
  set('workerDeadAfterMs', duration(flags.workerDeadAfter, '--worker-dead-after'));
  set('workerRetentionMs', duration(flags.workerRetention, '--worker-retention'));
  set('cleanupIntervalMs', duration(flags.cleanupInterval, '--cleanup-interval'));
  set('blobGraceMs', duration(flags.blobGrace, '--blob-grace'));
  set('fleetCacheMs', duration(flags.fleetCache, '--fleet-cache'));
  set('tokenCacheMs', duration(flags.tokenCache, '--token-cache'));
  set('snapshotBodyLimitBytes', integer(flags.snapshotBodyLimit, '--snapshot-body-limit'));
  set('accountBlobQuotaBytes', integer(flags.accountBlobQuota, '--account-blob-quota'));
  set('accountBlobQuotaCount', integer(flags.accountBlobCount, '--account-blob-count'));
  set('tokenRateLimitPerMinute', integer(flags.tokenRateLimit, '--token-rate-limit'));
  set('tokenConcurrencyLimit', integer(flags.tokenConcurrency, '--token-concurrency'));
  set('authFailuresPerMinute', integer(flags.authFailures, '--auth-failures-per-minute'));
  set('requestTimeoutMs', duration(flags.requestTimeout, '--request-timeout'));
  set('headersTimeoutMs', duration(flags.headersTimeout, '--headers-timeout'));
  set('connectionTimeoutMs', duration(flags.connectionTimeout, '--connection-timeout'));
  set('keepAliveTimeoutMs', duration(flags.keepAliveTimeout, '--keep-alive-timeout'));
  set('bodyIdleTimeoutMs', duration(flags.bodyIdleTimeout, '--body-idle-timeout'));
  set('claimLeaseMs', duration(flags.claimLease, '--claim-lease'));
  set('claimWaitMaxMs', duration(flags.claimWaitMax, '--claim-wait-max'));
  set('maxAttempts', integer(flags.maxAttempts, '--max-attempts'));
  set('logMaxBytes', integer(flags.logMaxBytes, '--log-max-bytes'));
  set('runMaxMemoryMb', integer(flags.runMaxMemoryMb, '--run-max-memory-mb'));
  // The ceiling is kept in seconds (as submissions give `timeout_s`); the flag takes any duration.
  const runMaxTimeoutMs = duration(flags.runMaxTimeout, '--run-max-timeout');
  set('runMaxTimeoutS', runMaxTimeoutMs === undefined ? undefined : runMaxTimeoutMs / 1000);
  set('runMaxAttempts', integer(flags.runMaxAttempts, '--run-max-attempts'));
  if (flags.migrate === false) input.migrateOnStart = false;
  return loadControlConfig(input);
}
