import { packageVersion } from '../../common/cli.js';
import { durationFlag, numberFlag, rangeOf } from '../../common/cli-flags.js';
import { RgridError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { shown } from '../../common/names.js';
import { AgentConfigSchema, parseRuntimeFlags, readConfigFile, resolveConfig, type AgentConfig, type AgentConfigInput } from '../config.js';
import { startDaemon } from '../daemon.js';
import { checkWorkerTokenFile, warnIfConfigExposesToken, workerTokenSettings, type WorkerTokenEnv } from './worker-token.js';

const warnLine = (line: string): void => void process.stderr.write(`${line}\n`);

export interface ServeFlags {
  config?: string;
  socket?: string;
  dataDir?: string;
  runtime?: string[];
  defaultRuntime?: string;
  buildNetwork?: string;
  pipFindLinks?: string;
  pipIndexUrl?: string;
  buildConcurrency?: string;
  runNetwork?: string;
  socketGroup?: string;
  drainTimeout?: string;
  logLevel?: string;
  controlUrl?: string;
  workerToken?: string;
  workerTokenFile?: string;
  workerId?: string;
  runCapacity?: string;
  ttl?: string;
  minAge?: string;
  pruneInterval?: string;
  diskUsageFile?: string;
  warmDir?: string;
  metricsListen?: string;
  dockerHost?: string;
  registry?: string;
  registryAuthFile?: string;
  registryTimeout?: string;
  buildWait?: string;
  resolveTtl?: string;
}

type NumericKey = { [K in keyof AgentConfig]-?: NonNullable<AgentConfig[K]> extends number ? K : never }[keyof AgentConfig];

/** A number flag, range-checked against its config key's schema (so flag and file accept the same). */
const numberOf = (value: string | undefined, flag: string, key: NumericKey): number | undefined =>
  numberFlag(value, flag, rangeOf(AgentConfigSchema.properties[key]));

/** `90`, `2s`, `30d` (common/duration.ts) → seconds, the unit of the config's `_s` keys, range-checked. */
const secondsOf = (value: string | undefined, flag: string, key: NumericKey): number | undefined =>
  durationFlag(value, flag, rangeOf(AgentConfigSchema.properties[key]), 1000);

/** `--resolve-ttl`: a duration like `--build-wait`'s, or `never` (resolve_ttl_s's two forms). */
export function resolveTtlFlag(value: string | undefined): number | 'never' | undefined {
  if (value?.trim() === 'never') return 'never';
  try {
    return durationFlag(value, '--resolve-ttl', { min: 0 }, 1000);
  } catch {
    throw new RgridError('bad_request', `--resolve-ttl must be a duration (90s, 1h, 0 = every time) or never, got ${shown(value)}`);
  }
}

/** `rgrid-agent serve`: the only place that listens and installs the signal handler. */
export interface ServeEnv extends WorkerTokenEnv {
  socket?: string | undefined;
  /** DOCKER_HOST, the engine's usual variable: below --docker-host and the config file's docker_host. */
  dockerHost?: string | undefined;
}

export async function serve(flags: ServeFlags, env: ServeEnv): Promise<void> {
  const fromFile = flags.config ? await readConfigFile(flags.config) : {};
  // The token sources first: their warning is printed even when a later flag is refused.
  const token = workerTokenSettings(flags, fromFile, env, warnLine);
  const fromFlags: AgentConfigInput = {
    socket: flags.socket ?? (fromFile.socket === undefined ? env.socket : undefined),
    data_dir: flags.dataDir,
    runtimes: flags.runtime?.length ? parseRuntimeFlags(flags.runtime) : undefined,
    default_runtime: flags.defaultRuntime,
    build_network: flags.buildNetwork,
    pip_find_links: flags.pipFindLinks,
    pip_index_url: flags.pipIndexUrl,
    build_concurrency: numberOf(flags.buildConcurrency, '--build-concurrency', 'build_concurrency'),
    run_network: flags.runNetwork,
    socket_group: flags.socketGroup,
    drain_timeout_s: secondsOf(flags.drainTimeout, '--drain-timeout', 'drain_timeout_s'),
    log_level: flags.logLevel,
    control_url: flags.controlUrl,
    ...token,
    worker_id: flags.workerId,
    run_capacity: numberOf(flags.runCapacity, '--run-capacity', 'run_capacity'),
    prune_ttl_s: secondsOf(flags.ttl, '--ttl', 'prune_ttl_s'),
    prune_min_age_s: secondsOf(flags.minAge, '--min-age', 'prune_min_age_s'),
    prune_interval_s: secondsOf(flags.pruneInterval, '--prune-interval', 'prune_interval_s'),
    disk_usage_file: flags.diskUsageFile,
    warm_dir: flags.warmDir,
    metrics_listen: flags.metricsListen,
    docker_host: flags.dockerHost ?? (fromFile.docker_host === undefined && env.dockerHost ? env.dockerHost : undefined),
    registry: flags.registry,
    registry_auth_file: flags.registryAuthFile,
    registry_timeout_s: secondsOf(flags.registryTimeout, '--registry-timeout', 'registry_timeout_s'),
    build_wait_s: secondsOf(flags.buildWait, '--build-wait', 'build_wait_s'),
    resolve_ttl_s: resolveTtlFlag(flags.resolveTtl),
  };
  const config = resolveConfig(fromFile, fromFlags);
  warnIfConfigExposesToken(flags.config, fromFile, warnLine);
  checkWorkerTokenFile(config, env.credentialsDirectory);
  const logger = createLogger({ service: 'rgrid-agent', level: config.log_level });
  const daemon = await startDaemon({ config, logger, version: packageVersion(), configFile: flags.config, configFlags: fromFlags });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      // A second signal: the operator does not want to wait for the drain.
      logger.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    void daemon.stop(signal).then(
      ({ clean }) => process.exit(clean ? 0 : 1),
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
