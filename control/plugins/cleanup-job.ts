import fp from 'fastify-plugin';
import { runCleanup } from '../cleanup.js';

/**
 * The periodic cleanup. Every replica runs the timer; the advisory lock inside runCleanup lets one of
 * them work per round and the others skip. The timer is unref'd and cleared on close, and a round in
 * progress is awaited on close so the pool is not ended under it.
 */
export default fp(
  (app, _opts, done) => {
    const interval = app.config.cleanupIntervalMs;
    if (interval <= 0) {
      done();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> | undefined;
    const round = async (): Promise<void> => {
      try {
        const report = await runCleanup(app.db, app.storage, app.config, { dryRun: false, wait: false });
        if (!report.skipped) {
          const registry = report.registry_images;
          app.metrics.registryManifestsDeleted.inc(registry.deleted.count);
          app.log.info({
            entries: report.entries.count, workers: report.workers.count, manifests: report.manifests.count, blobs: report.blobs.count, blob_files: report.blob_files.count,
            registry_manifests: registry.deleted.count, registry_failed: registry.failed.count, build_leases_expired: registry.expired_leases, build_failures_expired: registry.expired_failures,
          }, 'cleanup done');
          if (registry.failed.count > 0) app.log.warn({ registry: registry.registry, kept: registry.failed.count, error: registry.failed.items[0]?.error }, 'registry manifests not deleted; the next cleanup retries');
        }
      } catch (err) {
        app.log.error({ err }, 'cleanup failed; will retry next round');
      }
    };
    app.addHook('onReady', (hookDone) => {
      timer = setInterval(() => {
        if (!running) running = round().finally(() => (running = undefined));
      }, interval);
      timer.unref();
      hookDone();
    });
    app.addHook('onClose', async () => {
      if (timer) clearInterval(timer);
      await running;
    });
    done();
  },
  { name: 'rgrid-cleanup-job', dependencies: ['rgrid-database', 'rgrid-storage', 'rgrid-metrics'] },
);
