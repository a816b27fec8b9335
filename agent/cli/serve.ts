import { createRequire } from 'node:module';
import { parseDuration } from '../../common/duration.js';
import { parseRuntimeFlags, readConfigFile, resolveConfig, type AgentConfigInput } from '../config.js';
import { startDaemon } from '../daemon.js';
import { createLogger } from '../logger.js';
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
}

/** `2s`, `30d` (common/duration.ts) → seconds, the unit of the config keys. */
const durationFlag = (value: string | undefined, flag: string): number | undefined =>
  value === undefined ? undefined : parseDuration(value, flag) / 1000;

function version(): string {
  try {
    return (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const numberFlag = (value: string | undefined): number | string | undefined =>
  value === undefined ? undefined : Number.isFinite(Number(value)) ? Number(value) : value;

/** `rgrid-agent serve`: the only place that listens and installs the signal handler. */
export interface ServeEnv extends WorkerTokenEnv {
  socket?: string | undefined;
}

export async function serve(flags: ServeFlags, env: ServeEnv): Promise<void> {
  const fromFile = flags.config ? await readConfigFile(flags.config) : {};
  const fromFlags: AgentConfigInput = {
    socket: flags.socket ?? (fromFile.socket === undefined ? env.socket : undefined),
    data_dir: flags.dataDir,
    runtimes: flags.runtime?.length ? parseRuntimeFlags(flags.runtime) : undefined,
    default_runtime: flags.defaultRuntime,
    build_network: flags.buildNetwork,
    pip_find_links: flags.pipFindLinks,
    pip_index_url: flags.pipIndexUrl,
    build_concurrency: numberFlag(flags.buildConcurrency),
    run_network: flags.runNetwork,
    socket_group: flags.socketGroup,
    drain_timeout_s: numberFlag(flags.drainTimeout),
    log_level: flags.logLevel,
    control_url: flags.controlUrl,
    ...workerTokenSettings(flags, fromFile, env, warnLine),
    worker_id: flags.workerId,
    run_capacity: numberFlag(flags.runCapacity),
    prune_ttl_s: durationFlag(flags.ttl, '--ttl'),
    prune_min_age_s: durationFlag(flags.minAge, '--min-age'),
    prune_interval_s: durationFlag(flags.pruneInterval, '--prune-interval'),
    disk_usage_file: flags.diskUsageFile,
    warm_dir: flags.warmDir,
    metrics_listen: flags.metricsListen,
  };
  const config = resolveConfig(fromFile, fromFlags);
  warnIfConfigExposesToken(flags.config, fromFile, warnLine);
  checkWorkerTokenFile(config, env.credentialsDirectory);
  const logger = createLogger(config.log_level);
  const daemon = await startDaemon({ config, logger, version: version(), configFile: flags.config, configFlags: fromFlags });
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
