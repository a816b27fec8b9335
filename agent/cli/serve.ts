import { createRequire } from 'node:module';
import { parseRuntimeFlags, readConfigFile, resolveConfig, type AgentConfigInput } from '../config.js';
import { startDaemon } from '../daemon.js';
import { createLogger } from '../logger.js';

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
  // issue 5: claim loop
  controlUrl?: string;
  workerToken?: string;
  workerId?: string;
  runCapacity?: string;
}

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
export async function serve(flags: ServeFlags, env: { socket?: string | undefined; workerToken?: string | undefined }): Promise<void> {
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
    worker_token: flags.workerToken ?? (fromFile.worker_token === undefined ? env.workerToken : undefined),
    worker_id: flags.workerId,
    run_capacity: numberFlag(flags.runCapacity),
  };
  const config = resolveConfig(fromFile, fromFlags);
  const logger = createLogger(config.log_level);
  const daemon = await startDaemon({ config, logger, version: version() });
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
