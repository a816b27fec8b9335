import { chmod, chown, mkdir, readFile, stat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import type Docker from 'dockerode';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { RgridError } from '../common/errors.js';
import { buildAgentApp, type DaemonPhase } from './api/app.js';
import { createImageCache, type ImageCache } from './builder/image-cache.js';
import { createImageProbe, type ImageProbe } from './builder/image-probe.js';
import { compileBuildPolicy } from './builder/build-policy.js';
import { createResolutionService } from './builder/resolution.js';
import { createRuntimeResolver, type RuntimeResolver } from './builder/runtimes.js';
import { ControlPlaneClient } from './control/client.js';
import { startPushRunner, type PushRunner } from './registry/push-runner.js';
import { createImageSharing } from './registry/sharing.js';
import { durationsOf, type AgentConfig, type AgentConfigInput } from './config.js';
import { createConfigStore } from './config-store.js';
import { dockerFor } from './engine.js';
import { startFleet, type Fleet } from './fleet.js';
import { readAgentIdFile, writeAgentIdFile } from './identity.js';
import { createAgentMetrics } from './metrics.js';
import { createIndex, type AgentIndex } from './index/index.js';
import { createLeaseTable } from './index/leases.js';
import { createRunner, type Runner } from './runner/run.js';
import { repairOnStart } from './startup-repair.js';
import { startWorkerLoop, type WorkerLoop } from './worker/worker-loop.js';

/**
 * The daemon's lifecycle as an explicit state union (after temporal's worker):
 *   starting → running → draining → stopped, or → failed from starting/draining.
 * `stop()` is what the one signal handler calls: stop accepting work, let builds and runs finish until the
 * drain deadline, then abandon what is left (builds aborted, run containers killed), close the index.
 */
export type DaemonState =
  | { phase: 'starting' }
  | { phase: 'running'; since: number }
  | { phase: 'draining'; deadline: number }
  | { phase: 'stopped'; clean: boolean }
  | { phase: 'failed'; error: string };

export interface Daemon {
  /** Resolves when stopped; `clean` is false when the deadline forced work to be abandoned. */
  stop(reason: string): Promise<{ clean: boolean }>;
  /** For tests and the benchmark: the listening app. */
  readonly app: FastifyInstance;
}

export interface DaemonDeps {
  config: AgentConfig;
  logger: Logger;
  version: string;
  docker?: Docker;
  /** The --config file (watched and reloaded) and the flag values re-applied over it. */
  configFile?: string;
  configFlags?: AgentConfigInput;
}

export async function startDaemon(deps: DaemonDeps): Promise<Daemon> {
  const { config, logger } = deps;
  let state: DaemonState = { phase: 'starting' };
  const phase = (): DaemonPhase => state.phase;
  const docker = deps.docker ?? dockerFor(config.docker_host);
  let index: AgentIndex | undefined;
  let fleet: Fleet | undefined;
  let probe: ImageProbe | undefined;
  let runner: Runner | undefined;
  let pushes: PushRunner | undefined;
  // Kills the resolutions still running when the agent stops (a background refresh never outlives it).
  const resolutionsStop = new AbortController();
  try {
    await mkdir(config.data_dir, { recursive: true, mode: 0o700 });
    try {
      await docker.ping();
    } catch {
      throw new RgridError('engine_unavailable', `cannot reach the Docker engine at ${config.docker_host ?? 'unix:///var/run/docker.sock'} (is dockerd running, is its socket accessible?)`);
    }
    index = createIndex({ path: join(config.data_dir, 'index'), agentId: await readAgentIdFile(config.data_dir) });
    await writeAgentIdFile(config.data_dir, index.agentId);
    const repair = await repairOnStart(docker, index, config.data_dir, logger);
    logger.info({ ...repair, agent_id: index.agentId, entries: index.list().length }, 'index checked against the engine');
    const leases = createLeaseTable();
    // Live settings: components read the store, never a copy taken here.
    const store = createConfigStore(config, deps.configFile);
    const metrics = createAgentMetrics();
    const runtimes = createRuntimeResolver(docker, store.get);
    for (const name of runtimes.names()) {
      await runtimes.resolve(name).then(
        (r) => logger.info({ runtime: name, image: r.image, image_id: r.imageId }, 'runtime ready'),
        (err: unknown) => logger.warn({ runtime: name, msg: (err as Error).message }, 'runtime base image unavailable'),
      );
    }
    // Hits are answered from the engine's image events; the run path tells the probe about an image
    // that vanished before its container was created (agent/builder/image-probe.ts).
    probe = createImageProbe(docker, { logger });
    const events = probe;
    metrics.setImageProbe(() => events.stats());
    // One control-plane client for the sync, the claim loop and image sharing (made before the cache,
    // which asks the grid on a miss when a registry is configured).
    const control = new ControlPlaneClient(store.get);
    const sharing = createImageSharing({
      docker, index, settings: store.get, control: () => control, logger, observer: metrics, onQueued: () => pushes?.wake(),
    });
    const resolution = createResolutionService({ docker, index, config, policy: compileBuildPolicy(config), logger, observer: metrics, signal: resolutionsStop.signal });
    metrics.setResolutionsRunning(() => resolution.running());
    const cache = createImageCache({ docker, index, leases, runtimes, config, logger, observer: metrics, probe, sharing, resolution });
    const runs = createRunner({ docker, cache, probe, config, settings: store.get, agentId: index.agentId, logger, holderImage: () => holderImage(runtimes) });
    runner = runs;
    const startedAt = Date.now();
    fleet = await startFleet({
      docker, index, leases, cache, store, metrics, flags: deps.configFlags ?? {}, logger, version: deps.version, runsActive: () => runs.active, control,
      spare: runs.spare,
    });
    // After reconcile (startFleet): pushes a previous process left in the outbox go out first.
    pushes = startPushRunner({ index, sharing, docker, control: () => control, settings: store.get, logger });
    const app = buildAgentApp({
      config, index, leases, cache, runner: runs, logger, phase, version: deps.version, startedAt, docker, fleet: { fleet }, lockBySha: (sha) => resolution.lockBySha(sha),
    });
    await removeStaleSocket(config.socket);
    await app.listen({ path: config.socket });
    // Owner and group only: the socket is the agent's whole authority over the engine.
    await chmod(config.socket, 0o660);
    if (config.socket_group !== undefined) {
      // Under systemd the socket is already created with the unit's Group= (and chown is outside its
      // system-call filter): change ownership only when it differs.
      const gid = await groupId(config.socket_group);
      if ((await stat(config.socket)).gid !== gid) await chown(config.socket, process.getuid?.() ?? 0, gid);
    }
    state = { phase: 'running', since: startedAt };
    logger.info({ socket: config.socket }, 'agent listening');
    // Claim executions from the control plane when configured (agent/worker/), through the client the
    // sync uses (agent/control/), which reads address, identity and token from the store for every
    // request. Entries reach the control plane through the outbox sync; the worker loop flushes it after
    // a build so placement knows the new image before the result is reported.
    let worker: WorkerLoop | undefined;
    const atStart = store.get();
    if (atStart.control_url && (atStart.worker_token !== undefined || atStart.worker_token_file !== undefined)) {
      worker = startWorkerLoop({
        options: { capacity: config.run_capacity, blobTtlMs: durationsOf(config).blob_cache_ttl_ms, blobMaxBytes: config.blob_cache_max_mb * 1024 * 1024 },
        control: fleet.control, runner: runs, logger, dataDir: config.data_dir, sync: fleet.sync, registry: metrics.registry,
      });
    }
    return makeDaemon(app, index, cache, runs, fleet, worker);
  } catch (err) {
    state = { phase: 'failed', error: (err as Error).message };
    await pushes?.stop().catch(() => undefined);
    await fleet?.close().catch(() => undefined);
    await runner?.close().catch(() => undefined);
    await probe?.close().catch(() => undefined);
    await index?.close().catch(() => undefined);
    throw err;
  }

  function makeDaemon(app: FastifyInstance, idx: AgentIndex, cache: ImageCache, runner: Runner, fl: Fleet, worker?: WorkerLoop): Daemon {
    let stopping: Promise<{ clean: boolean }> | undefined;
    return {
      app,
      stop(reason) {
        stopping ??= (async () => {
          const deadline = Date.now() + durationsOf(config).drain_timeout_ms;
          state = { phase: 'draining', deadline };
          logger.info({ reason, drain_timeout_s: config.drain_timeout_s, builds: cache.stats(), runs: runner.active }, 'draining');
          // app.close() stops the listener and waits for in-flight requests (their builds and runs).
          // The claim loop stops claiming and lets its executions finish, like socket requests.
          const closed = Promise.all([app.close(), cache.drain(), worker?.stop()]).then(() => true);
          // The idle outputs holders and hot containers go while the work drains (runs still in flight get
          // theirs made for them).
          runner.drain();
          let timer: NodeJS.Timeout | undefined;
          const timedOut = new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
          });
          let clean = await Promise.race([closed, timedOut]);
          clearTimeout(timer);
          if (!clean) {
            logger.warn({ builds: cache.stats(), runs: runner.active }, 'drain deadline passed; abandoning builds and runs');
            // Aborting the builds' engine requests cancels them; nothing was written for them.
            cache.abandon();
            worker?.abandon();
            app.server.closeAllConnections();
            await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
            clean = false;
          }
          // No request is left to wait for a resolution: the background refreshes go (their locks stay).
          resolutionsStop.abort();
          // The claim loop reports through the fleet's sync: it closes first.
          await worker?.close().catch(() => undefined);
          // No run is left: their clean-ups end, and what was made ahead (outputs holders, hot containers)
          // goes (none may outlive the agent).
          await runner.close().catch((err: unknown) => logger.warn({ err }, 'removing the outputs holders and hot containers failed'));
          await pushes?.stop().catch(() => undefined);
          await fl.close().catch((err: unknown) => logger.warn({ err }, 'closing the fleet components failed'));
          await cache.close().catch(() => undefined);
          await idx.flushed().catch(() => undefined);
          await idx.close();
          state = { phase: 'stopped', clean };
          logger.info({ clean }, 'stopped');
          return { clean };
        })();
        return stopping;
      },
    };
  }
}

/** The image outputs holders are made from: a runtime's base image (the default one first). */
async function holderImage(runtimes: RuntimeResolver): Promise<string | undefined> {
  for (const name of [undefined, ...runtimes.names()]) {
    try {
      return (await runtimes.resolve(name)).imageId;
    } catch {
      // No default runtime, or its base image is missing: try the next.
    }
  }
  return undefined;
}

/** A socket file left by a killed agent is removed; one that answers belongs to a live agent: refuse. */
async function removeStaleSocket(path: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
  if (alive) throw new RgridError('conflict', `another agent is listening on ${path}`);
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const line = (await readFile('/etc/group', 'utf8')).split('\n').find((l) => l.split(':')[0] === group);
  const gid = line?.split(':')[2];
  if (gid === undefined) throw new RgridError('bad_request', `socket_group ${group} does not exist`);
  return Number(gid);
}
