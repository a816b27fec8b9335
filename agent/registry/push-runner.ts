/**
 * The background half of the push outbox (agent/index/push-outbox.ts): pushes the images that could not
 * be pushed when they were built (registry down, control plane away, the agent killed), then records
 * them with the control plane (PUT registry-images). Scheduled like the sync (agent/sync/breaker.ts):
 * backoff with full jitter after a failure, a circuit breaker that probes a dead peer now and then.
 * A job whose image is gone (pruned, or the entry now points at another image) is dropped: there is
 * nothing left to push. The outbox survives restarts, so a kill -9 at any point loses no push.
 */
import type { Logger } from 'pino';
import type { RecordPushRequest } from '../../common/wire/registry-api.js';
import type Docker from 'dockerode';
import { createImageProbe } from '../builder/image-probe.js';
import { durationsOf, type AgentConfig } from '../config.js';
import type { ControlPlaneClient } from '../control/client.js';
import type { AgentIndex } from '../index/index.js';
import type { PushJob } from '../index/push-outbox.js';
import { CircuitBreaker } from '../sync/breaker.js';
import type { ImageSharing } from './sharing.js';

type Description = Omit<RecordPushRequest, 'registry' | 'manifest_digest' | 'size_bytes'>;

export interface PushRunnerDeps {
  index: AgentIndex;
  sharing: ImageSharing;
  docker: Docker;
  control: () => ControlPlaneClient | undefined;
  settings: () => AgentConfig;
  logger: Logger;
  /** Between rounds while nothing fails. */
  intervalMs?: number;
}

export interface PushRunner {
  /** Something was queued: try soon. */
  wake(): void;
  /** Jobs still waiting. */
  depth(): number;
  stop(): Promise<void>;
}

const describe = (job: PushJob): Description => ({
  account: job.account, kind: job.kind, key: job.key, runtime: job.runtime, base_image_id: job.base_image_id,
  requirements_sha256: job.requirements_sha256, script_sha256: job.script_sha256, deps_key: job.deps_key,
});

export function startPushRunner(deps: PushRunnerDeps): PushRunner {
  const { index, sharing, settings } = deps;
  const log = deps.logger.child({ component: 'push-outbox' });
  const intervalMs = deps.intervalMs ?? 5000;
  const probe = createImageProbe(deps.docker);
  const breaker = new CircuitBreaker(() => ({ initialMs: 1000, maxMs: 60_000, threshold: 5, resetMs: 30_000 }));
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  /** One job, done or dropped; throws when the registry or the control plane failed. */
  async function handle(job: PushJob): Promise<void> {
    const entry = index.get(job);
    if (!entry || entry.image_id !== job.image_id || !(await probe.exists(job.image_id))) {
      log.info({ kind: job.kind, key: job.key }, 'queued push dropped: its image is no longer in the cache');
      await index.pushes.remove(job, job.image_id);
      return;
    }
    let current = job;
    if (current.state === 'push') {
      const pushed = await sharing.push(current);
      await index.pushes.markPushed(current, current.image_id, pushed.digest, pushed.size);
      current = { ...current, state: 'record', manifest_digest: pushed.digest, size_bytes: pushed.size };
    }
    const control = deps.control();
    if (!control) return;
    const answer = await control.recordPush(
      { ...describe(current), registry: settings().registry!, manifest_digest: current.manifest_digest!, size_bytes: current.size_bytes },
      { timeoutMs: durationsOf(settings()).sync_timeout_ms },
    );
    if (!answer.recorded) log.info({ kind: job.kind, key: job.key, recorded: answer.manifest_digest }, 'another push of this image was recorded first; ours stays in the registry unused');
    await index.pushes.remove(current, current.image_id);
    log.info({ kind: job.kind, key: job.key, digest: current.manifest_digest }, 'queued push done');
  }

  async function round(): Promise<void> {
    if (!sharing.active()) return;
    for (const job of index.pushes.list()) {
      if (stopped) return;
      if (sharing.pushing.has(`${job.kind}/${job.account}/${job.key}`)) continue;
      if (!breaker.canAttempt().allowed) return;
      try {
        await handle(job);
        breaker.success();
      } catch (err) {
        breaker.failure((err as Error).message);
        await index.pushes.markAttempt(job, job.image_id).catch(() => undefined);
        log.warn({ kind: job.kind, key: job.key, attempts: job.attempts + 1, state: breaker.state, reason: (err as Error).message }, 'queued push failed; retrying later');
        return;
      }
    }
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (running) return schedule(intervalMs);
      running = round()
        .catch((err: unknown) => log.warn({ reason: (err as Error).message }, 'push outbox round failed'))
        .finally(() => {
          running = undefined;
          schedule(Math.max(intervalMs, breaker.nextAttempt - Date.now()));
        });
    }, delayMs);
    timer.unref();
  }
  // At start: whatever a previous process left (a kill -9 between build and push) goes out first.
  schedule(0);

  return {
    wake: () => schedule(0),
    depth: () => index.pushes.depth(),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await probe.close();
    },
  };
}
