import { createServer, type Server } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { ManagedImageCache } from './builder/image-cache.js';
import { ControlPlaneClient } from './control/client.js';
import { durationsOf, type AgentConfigInput } from './config.js';
import { watchConfigFile, type ConfigWatcher, type MutableConfigStore } from './config-store.js';
import type { AgentIndex } from './index/index.js';
import type { LeaseTable } from './index/leases.js';
import type { AgentMetrics } from './metrics.js';
import { configuredDiskUsage, type DiskUsageSource } from './prune/disk-usage.js';
import { createPruner, type Pruner, type SpareContainers } from './prune/pruner.js';
import { createReconciler, type Reconciler } from './reconcile/reconcile.js';
import { createSerial } from './serial.js';
import { createSyncLoop, type SyncLoop } from './sync/sync-loop.js';
import { startWarmer, type Warmer } from './warm/warmer.js';

/**
 * The agent's fleet side, started by the daemon after the cache: config watching, the control-plane
 * client (shared with the claim loop), sync, pruning, reconcile, warming and metrics. One place wires them
 * to the config store, so the daemon only starts and closes this.
 */
export interface Fleet {
  store: MutableConfigStore;
  metrics: AgentMetrics;
  /** The agent's one client of the control plane (agent/control/): the sync's and the claim loop's. */
  control: ControlPlaneClient;
  sync: SyncLoop;
  pruner: Pruner;
  reconciler: Reconciler;
  warmer: Warmer;
  config: ConfigWatcher;
  disk: DiskUsageSource;
  close(): Promise<void>;
}

export interface FleetDeps {
  docker: Docker;
  index: AgentIndex;
  leases: LeaseTable;
  cache: ManagedImageCache;
  store: MutableConfigStore;
  metrics: AgentMetrics;
  /** The command-line flag values, re-applied on top of a reloaded config file. */
  flags: AgentConfigInput;
  logger: Logger;
  version: string;
  runsActive: () => number;
  /** The control-plane client, when the daemon made it earlier (image sharing needs it before the fleet starts). */
  control?: ControlPlaneClient;
  /** The runner's containers made ahead of runs: the pruner removes them with their image (prune/pruner.ts). */
  spare?: SpareContainers;
}

export async function startFleet(deps: FleetDeps): Promise<Fleet> {
  const { docker, index, leases, cache, store, metrics, logger } = deps;
  const settings = store.get;
  const serial = createSerial();
  const disk = configuredDiskUsage(settings, docker);
  const reconciler = createReconciler({ docker, index, leases, logger, metrics, serial, intervalMs: () => durationsOf(settings()).reconcile_interval_ms });
  // On start, before anything is pruned or synced: the index must describe what the engine has.
  const report = await reconciler.verify({ repair: true });
  logger.info({ drift: report.drift.length, entries: report.entries, images: report.images }, 'reconciled the index with the engine');

  const pruner = createPruner({ docker, index, leases, settings, disk, logger, metrics, serial, ...(deps.spare ? { spare: deps.spare } : {}) });
  let engineInfo: Record<string, unknown> | undefined;
  const control = deps.control ?? new ControlPlaneClient(settings);
  const sync = createSyncLoop({
    index,
    settings,
    logger,
    version: deps.version,
    control,
    async hostInfo() {
      engineInfo ??= await docker.version().then(
        (v) => ({ version: v.Version, api_version: v.ApiVersion, os: v.Os, arch: v.Arch }),
        () => ({}),
      );
      const d = await disk.read().catch(() => undefined);
      return {
        engine: engineInfo,
        load: { running: deps.runsActive(), load1: loadavg()[0] ?? 0 },
        ...(d ? { disk: { total_bytes: Math.round(d.total_bytes), used_bytes: Math.round(d.used_bytes) } } : {}),
      };
    },
  });
  const warmer = await startWarmer({
    dir: settings().warm_dir ?? join(settings().data_dir, 'warm.d'),
    cache,
    runtimes: () => Object.keys(settings().runtimes),
    defaultAccount: () => settings().warm_account,
    logger,
  });
  const config = watchConfigFile(store, deps.flags, logger);
  store.onChange((next, prev) => {
    if (next.build_concurrency !== prev.build_concurrency) cache.setConcurrency(next.build_concurrency);
    if (next.log_level !== prev.log_level) logger.level = next.log_level;
    if (next.prune_interval_s !== prev.prune_interval_s) pruner.reschedule();
    if (JSON.stringify(next.runtimes) !== JSON.stringify(prev.runtimes)) warmer.rewarmAll();
  });
  metrics.setSources({ index, sync: sync.status, queue: () => cache.stats(), warm: () => {
    const w = warmer.status();
    return { total: w.total, done: w.done, failed: w.failed, building: w.building };
  } });
  const metricsServer = settings().metrics_listen ? await listenMetrics(settings().metrics_listen!, metrics, logger) : undefined;

  return {
    store, metrics, control, sync, pruner, reconciler, warmer, config, disk,
    async close() {
      await config.close();
      await warmer.close();
      await Promise.all([sync.stop(), pruner.stop(), reconciler.stop()]);
      await control.close();
      if (metricsServer) await new Promise((r) => metricsServer.close(r));
    },
  };
}

/** The optional TCP endpoint for Prometheus: `/metrics` only, nothing else of the API. */
async function listenMetrics(address: string, metrics: AgentMetrics, logger: Logger): Promise<Server> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(colon + 1));
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end('not found\n');
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
      () => res.writeHead(500).end('metrics failed\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  logger.info({ address }, 'metrics listening');
  return server;
}
