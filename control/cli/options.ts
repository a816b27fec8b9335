/**
 * Turns CLI flags and the environment into a ControlConfig. The environment is read once, at start, by
 * `readControlEnv` (control/cli/main.ts calls it, and nothing else in the control plane reads
 * process.env); everything here receives that snapshot.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { durationFlag, numberFlag, rangeOf } from '../../common/cli-flags.js';
import { RgridError } from '../../common/errors.js';
import { assertRegistryAddress } from '../../common/names.js';
import { ControlConfigSchema, loadControlConfig, parseListen, type ControlConfig, type ControlConfigInput } from '../config.js';

/** Every environment variable the control plane reads; the help of each flag names its own. */
export const CONTROL_ENV_VARIABLES = [
  'RGRID_CONTROL_DATA_DIR',
  'RGRID_CONTROL_LOG_LEVEL',
  'RGRID_CONTROL_ADMIN_TOKEN',
  'RGRID_CONTROL_ADMIN_TOKEN_FILE',
  'DATABASE_URL',
  'DATABASE_URL_FILE',
  'RGRID_CONTROL_REGISTRY',
  'RGRID_CONTROL_REGISTRY_AUTH_FILE',
  // systemd's LoadCredential= directory (admin-token, database-url).
  'CREDENTIALS_DIRECTORY',
] as const;

export type ControlEnv = { readonly [K in (typeof CONTROL_ENV_VARIABLES)[number]]?: string | undefined };

/** The snapshot of the environment the CLI works from. */
export function readControlEnv(source: NodeJS.ProcessEnv): ControlEnv {
  const env: Partial<Record<(typeof CONTROL_ENV_VARIABLES)[number], string>> = {};
  for (const name of CONTROL_ENV_VARIABLES) {
    const value = source[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

export interface CommonFlags {
  dataDir?: string;
  databaseUrl?: string;
  databaseUrlFile?: string;
  logLevel?: string;
}

/** The registry cleanup deletes from (serve and cleanup). */
export interface RegistryFlags {
  registry?: string;
  registryAuthFile?: string;
  buildLease?: string;
  buildFailureTtl?: string;
}

export interface ServeFlags extends CommonFlags, RegistryFlags {
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
  placementPullMbps?: string;
  tokenCache?: string;
  migrate?: boolean;
  // Admission control (docs/operations.md, Admission control and limits).
  snapshotBodyLimit?: string;
  accountBlobQuota?: string;
  accountBlobCount?: string;
  tokenRateLimit?: string;
  tokenConcurrency?: string;
  authFailuresPerMinute?: string;
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

type NumericKey = { [K in keyof ControlConfig]-?: ControlConfig[K] extends number ? K : never }[keyof ControlConfig];

/** A whole-number flag, range-checked against its config field's schema (so flag and schema agree). */
const integer = (text: string | undefined, flag: string, key: NumericKey): number | undefined =>
  numberFlag(text, flag, { ...rangeOf(ControlConfigSchema.properties[key]), integer: true });

/** A duration flag (`500ms`, `2s`, `30d`) → milliseconds, range-checked against its `…Ms` field. */
const duration = (text: string | undefined, flag: string, key: NumericKey): number | undefined =>
  durationFlag(text, flag, rangeOf(ControlConfigSchema.properties[key]));

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
export function readSecret(spec: { flagFile: string | undefined; env: ControlEnv; variable: 'RGRID_CONTROL_ADMIN_TOKEN' | 'DATABASE_URL'; credential: string; what: string }): Secret | null {
  const { flagFile, env, variable, credential, what } = spec;
  if (flagFile) return { value: secretFromFile(flagFile, what), source: 'flag-file', path: flagFile };
  const direct = env[variable]?.trim();
  if (direct) return { value: direct, source: 'env' };
  const file = env[`${variable}_FILE` as const];
  if (file) return { value: secretFromFile(file, what), source: 'env-file', path: file };
  if (env.CREDENTIALS_DIRECTORY) {
    const path = join(env.CREDENTIALS_DIRECTORY, credential);
    if (existsSync(path)) return { value: secretFromFile(path, what), source: 'credential', path };
  }
  return null;
}

/** Admin token: --admin-token-file, RGRID_CONTROL_ADMIN_TOKEN, RGRID_CONTROL_ADMIN_TOKEN_FILE, then systemd's LoadCredential. */
export function readAdminToken(flagFile: string | undefined, env: ControlEnv): string | null {
  return readSecret({ flagFile, env, variable: 'RGRID_CONTROL_ADMIN_TOKEN', credential: 'admin-token', what: 'admin token' })?.value ?? null;
}

/**
 * The external database URL (it holds a password): --database-url (visible to every local user in the
 * process list, so the CLI warns), --database-url-file, DATABASE_URL, DATABASE_URL_FILE, then the
 * credential `database-url`.
 */
export function readDatabaseUrl(flags: { databaseUrl?: string; databaseUrlFile?: string }, env: ControlEnv): Secret | null {
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

export function configFromFlags(flags: ServeFlags, env: ControlEnv): ControlConfig {
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
  set('bodyLimitBytes', integer(flags.bodyLimit, '--body-limit', 'bodyLimitBytes'));
  set('blobMaxBytes', integer(flags.blobMaxBytes, '--blob-max-bytes', 'blobMaxBytes'));
  set('poolMax', integer(flags.poolMax, '--pool-max', 'poolMax'));
  set('entryTtlMs', duration(flags.entryTtl, '--entry-ttl', 'entryTtlMs'));
  set('workerDeadAfterMs', duration(flags.workerDeadAfter, '--worker-dead-after', 'workerDeadAfterMs'));
  set('workerRetentionMs', duration(flags.workerRetention, '--worker-retention', 'workerRetentionMs'));
  set('cleanupIntervalMs', duration(flags.cleanupInterval, '--cleanup-interval', 'cleanupIntervalMs'));
  set('blobGraceMs', duration(flags.blobGrace, '--blob-grace', 'blobGraceMs'));
  set('fleetCacheMs', duration(flags.fleetCache, '--fleet-cache', 'fleetCacheMs'));
  set('tokenCacheMs', duration(flags.tokenCache, '--token-cache', 'tokenCacheMs'));
  set('placementPullMbps', integer(flags.placementPullMbps, '--placement-pull-mbps', 'placementPullMbps'));
  set('snapshotBodyLimitBytes', integer(flags.snapshotBodyLimit, '--snapshot-body-limit', 'snapshotBodyLimitBytes'));
  set('accountBlobQuotaBytes', integer(flags.accountBlobQuota, '--account-blob-quota', 'accountBlobQuotaBytes'));
  set('accountBlobQuotaCount', integer(flags.accountBlobCount, '--account-blob-count', 'accountBlobQuotaCount'));
  set('tokenRateLimitPerMinute', integer(flags.tokenRateLimit, '--token-rate-limit', 'tokenRateLimitPerMinute'));
  set('tokenConcurrencyLimit', integer(flags.tokenConcurrency, '--token-concurrency', 'tokenConcurrencyLimit'));
  set('authFailuresPerMinute', integer(flags.authFailuresPerMinute, '--auth-failures-per-minute', 'authFailuresPerMinute'));
  set('requestTimeoutMs', duration(flags.requestTimeout, '--request-timeout', 'requestTimeoutMs'));
  set('headersTimeoutMs', duration(flags.headersTimeout, '--headers-timeout', 'headersTimeoutMs'));
  set('connectionTimeoutMs', duration(flags.connectionTimeout, '--connection-timeout', 'connectionTimeoutMs'));
  set('keepAliveTimeoutMs', duration(flags.keepAliveTimeout, '--keep-alive-timeout', 'keepAliveTimeoutMs'));
  set('bodyIdleTimeoutMs', duration(flags.bodyIdleTimeout, '--body-idle-timeout', 'bodyIdleTimeoutMs'));
  set('claimLeaseMs', duration(flags.claimLease, '--claim-lease', 'claimLeaseMs'));
  set('claimWaitMaxMs', duration(flags.claimWaitMax, '--claim-wait-max', 'claimWaitMaxMs'));
  set('maxAttempts', integer(flags.maxAttempts, '--max-attempts', 'maxAttempts'));
  set('logMaxBytes', integer(flags.logMaxBytes, '--log-max-bytes', 'logMaxBytes'));
  set('runMaxMemoryMb', integer(flags.runMaxMemoryMb, '--run-max-memory-mb', 'runMaxMemoryMb'));
  // The ceiling is kept in seconds (as submissions give `timeout_s`); the flag takes any duration.
  set('runMaxTimeoutS', durationFlag(flags.runMaxTimeout, '--run-max-timeout', rangeOf(ControlConfigSchema.properties.runMaxTimeoutS), 1000));
  set('runMaxAttempts', integer(flags.runMaxAttempts, '--run-max-attempts', 'runMaxAttempts'));
  const registry = flags.registry ?? env.RGRID_CONTROL_REGISTRY;
  // Checked here too so the message names the flag (the schema would name /registry).
  if (registry !== undefined) set('registry', assertRegistryAddress(registry.trim(), '--registry'));
  set('registryAuthFile', flags.registryAuthFile ?? env.RGRID_CONTROL_REGISTRY_AUTH_FILE);
  set('buildLeaseMs', duration(flags.buildLease, '--build-lease', 'buildLeaseMs'));
  set('buildFailureTtlMs', duration(flags.buildFailureTtl, '--build-failure-ttl', 'buildFailureTtlMs'));
  if (flags.migrate === false) input.migrateOnStart = false;
  return loadControlConfig(input);
}
