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
}

function integer(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new RgridError('bad_request', `${flag} must be a non-negative integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

const duration = (text: string | undefined, flag: string): number | undefined => (text === undefined ? undefined : parseDuration(text, flag));

/** Admin token: --admin-token-file, RGRID_CONTROL_ADMIN_TOKEN, RGRID_CONTROL_ADMIN_TOKEN_FILE, then systemd's LoadCredential. */
export function readAdminToken(flagFile: string | undefined, env: NodeJS.ProcessEnv): string | null {
  const fromFile = (path: string): string => {
    const token = readFileSync(path, 'utf8').trim();
    if (!token) throw new RgridError('bad_request', `admin token file ${path} is empty`);
    return token;
  };
  if (flagFile) return fromFile(flagFile);
  if (env.RGRID_CONTROL_ADMIN_TOKEN) return env.RGRID_CONTROL_ADMIN_TOKEN.trim();
  if (env.RGRID_CONTROL_ADMIN_TOKEN_FILE) return fromFile(env.RGRID_CONTROL_ADMIN_TOKEN_FILE);
  if (env.CREDENTIALS_DIRECTORY) {
    const path = join(env.CREDENTIALS_DIRECTORY, 'admin-token');
    if (existsSync(path)) return fromFile(path);
  }
  return null;
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
  set('databaseUrl', flags.databaseUrl ?? (env.DATABASE_URL || undefined));
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
  if (flags.migrate === false) input.migrateOnStart = false;
  return loadControlConfig(input);
}
