import { randomUUID } from 'node:crypto';
import { demuxText } from '../engine-streams.js';
import { constants } from 'node:fs';
import { chmod, copyFile, link, mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus as hostCpus } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { canonicalManifest, inputSha256 } from '../../common/cache-keys.js';
import { sha256Hex } from '../../common/digest.js';
import { isRgridError, RgridError } from '../../common/errors.js';
import { assertInputFileName, shown } from '../../common/names.js';
import type { AgentConfig } from '../config.js';
import type { EnsureResult } from '../builder/ensure-types.js';
import { engineError } from '../builder/engine-build.js';
import type { ImageCache } from '../builder/image-cache.js';
import type { ImageProbe } from '../builder/image-probe.js';
import type { Lease } from '../index/leases.js';
import { configuredDiskUsage } from '../prune/disk-usage.js';
import type { SpareContainers } from '../prune/pruner.js';
import { watchExit, type ExitWatch } from './container-exit.js';
import { ENGINE_STEP_TIMEOUT_MS, withinDeadline } from './engine-deadline.js';
import { createHotPool, hostPressure, type HotSpec } from './hot-containers.js';
import { chunkEventSink, copyOutputTar, outputsUnchanged, statOutputsDir, type CopiedOutputs, type OutputSink } from './outputs.js';
import { createHolderPool, type OutputsSlot } from './holder-pool.js';
import { OUTPUTS_DIR, runContainerSpec, runLimits } from './sandbox.js';
import type { PreparedRun, RunEvent, RunInput, RunnerStats, RunOptions, RunRequest, RunResult } from './run-types.js';

/**
 * A local run: ensure the image (leased until the run's exit), start a locked-down container (the sandbox
 * of sandbox.ts: read-only root, bounded tmpfs for /tmp and /work/outputs, file-size limit, memory, CPU
 * and PIDs limits) with the inputs bind-mounted read-only, stream its stdout/stderr, enforce the
 * wall-clock timeout, copy /work/outputs out within the output limits, answer, and remove everything
 * whatever happens — after the answer, in the background (bounded; `close` waits for it).
 *
 * The warm path pays the engine's start and the exit, little more: the container is usually made ahead
 * (a hot container, hot-containers.ts) with an outputs holder made ahead (holder-pool.ts); the exit's
 * wait is registered before the start (container-exit.ts); the outputs archive is read only when the
 * outputs directory changed (outputs.ts); the container's removal follows the answer.
 */
export type { PreparedRun, RunEvent, RunInput, RunnerStats, RunOptions, RunPhases, RunRequest, RunResult } from './run-types.js';

type Ensured = EnsureResult;

export interface RunnerDeps {
  docker: Docker;
  cache: ImageCache;
  /**
   * The cache's image probe: told when the engine says an image it answered for is gone; and, when it
   * follows the engine's events, it says which images are deleted (their hot containers go).
   */
  probe?: Pick<ImageProbe, 'forget'> & Partial<Pick<ImageProbe, 'onGone'>>;
  /** The image outputs holders are made from ahead of runs (holder-pool.ts); without it, each run makes its own. */
  holderImage?: () => Promise<string | undefined>;
  config: AgentConfig;
  /** The live configuration (disk usage source and high mark for the hot containers); default `config`. */
  settings?: () => AgentConfig;
  agentId: string;
  logger: Logger;
  now?: () => number;
  /** How long one engine call may go unanswered (engine-deadline.ts); default ENGINE_STEP_TIMEOUT_MS. */
  engineStepTimeoutMs?: number;
}

export interface Runner {
  prepare(request: RunRequest): Promise<PreparedRun>;
  run(prepared: PreparedRun, options: RunOptions): Promise<RunResult>;
  /** Runs whose container is alive now. */
  readonly active: number;
  stats(): RunnerStats;
  /** The hot containers, for the pruner: not a use of their image, removed before it (prune/pruner.ts). */
  readonly spare: SpareContainers;
  /** Stops making outputs holders and hot containers ahead and removes the ready ones (the drain; runs still get theirs). */
  drain(): void;
  /** Waits for the runs' clean-ups, then removes what was made ahead (after the runs have ended). */
  close(): Promise<void>;
}

/** A run's clean-up that takes longer is given up on (logged); what it left goes at the next start. */
const CLEANUP_BOUND_MS = 120_000;

export function createRunner(deps: RunnerDeps): Runner {
  const { docker, cache, config, logger } = deps;
  const now = deps.now ?? Date.now;
  const stepMs = deps.engineStepTimeoutMs ?? ENGINE_STEP_TIMEOUT_MS;
  const settings = deps.settings ?? (() => config);
  const runsDir = join(config.data_dir, 'runs');
  let active = 0;
  const cleanups = new Set<Promise<void>>();
  const swept = removeVolumeLeftovers(docker, deps.agentId, logger);
  // Output limits come from the config alone (never from a request): every run's tmpfs is the same.
  const outputLimits = runLimits(config, {}, hostCpus().length).limits.output;
  const pool = createHolderPool({
    docker, agentId: deps.agentId, logger, size: config.run_holder_pool_size, output: outputLimits, after: swept, stepTimeoutMs: stepMs,
    ...(deps.holderImage ? { holderImage: deps.holderImage } : {}),
  });
  const hot = createHotPool({
    docker, agentId: deps.agentId, logger, size: deps.holderImage ? config.run_hot_containers : 0, runsDir, holders: pool, stepTimeoutMs: stepMs,
    holderImage: deps.holderImage ?? (() => Promise.resolve(undefined)),
    pressure: hostPressure(configuredDiskUsage(settings, docker), () => settings().disk_high_percent),
  });
  const unsubscribe = deps.probe?.onGone?.((imageId) => void hot.dropImage(imageId));

  /** Off the answer's path, bounded, and waited for by `close`. */
  function inBackground(what: string, work: Promise<void>): void {
    let timer: NodeJS.Timeout | undefined;
    const bounded = Promise.race([
      work.catch((err: unknown) => logger.warn({ err }, `${what} failed`)),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          logger.warn({ bound_ms: CLEANUP_BOUND_MS }, `${what} not done in time; what is left goes at the agent's next start`);
          resolve();
        }, CLEANUP_BOUND_MS);
        timer.unref();
      }),
    ]).finally(() => {
      clearTimeout(timer);
      cleanups.delete(bounded);
    });
    cleanups.add(bounded);
  }

  /** The settings of a run's container for `ensured`, as a hot container's key and maker. */
  function specFor(p: PreparedRun, e: Ensured): HotSpec {
    const labels = { 'io.rgrid.agent': deps.agentId, 'io.rgrid.account': e.account, 'io.rgrid.image-key': e.image_key };
    const options = (name: string, inputsDir: string, volume: string): Docker.ContainerCreateOptions => runContainerSpec({
      imageId: e.image_id, name, inputsDir, volume, network: config.run_network, pidsLimit: config.run_pids_limit, limits: p.limits, labels,
    });
    return { key: JSON.stringify(options('', '', '')), imageId: e.image_id, create: options };
  }

  return {
    get active() {
      return active;
    },
    stats: () => ({ active, cleaning: cleanups.size, hot: hot.ready }),
    spare: {
      isSpare: (c) => hot.isReady(c.Id),
      release: (imageId) => hot.dropImage(imageId),
    },

    drain() {
      hot.drain();
      pool.drain();
    },
    async close() {
      unsubscribe?.();
      while (cleanups.size > 0) await Promise.all([...cleanups]);
      await hot.close();
      await pool.close();
    },

    async prepare(request) {
      const manifest = canonicalManifest(
        request.inputs.map((i) => ('data' in i ? { name: i.name, sha256: sha256Hex(i.data), size: i.data.length } : { name: i.name, sha256: i.sha256, size: i.size })),
      );
      const { limits, clamped } = runLimits(config, request, hostCpus().length);
      if (clamped.length > 0) logger.info({ clamped }, 'run request lowered to the agent\'s ceilings');
      return {
        ensure: await cache.prepare(request),
        inputs: request.inputs,
        inputSha256: inputSha256(manifest),
        limits,
        collectOutputs: request.collect_outputs ?? false,
      };
    },

    async run(p, { onEvent, signal, outputSink }) {
      const runId = randomUUID();
      const t0 = now();
      let { result: ensured, lease } = await cache.ensure(p.ensure, { onEvent, leaseHolder: `run:${runId}` });
      const ensuredAt = now();
      // What the run holds in the engine and on disk; removed after the answer, in the background.
      const held: { container?: Docker.Container; slot?: OutputsSlot; dir?: string; watch?: ExitWatch } = {};
      let spec = specFor(p, ensured);
      active++;
      try {
        // A hot container made ahead for these exact settings: created, its inputs directory empty.
        const taken = hot.take(spec.key);
        const dir = taken?.dir ?? join(runsDir, runId);
        held.dir = dir;
        if (taken) {
          held.container = taken.container;
          held.slot = taken.slot;
        } else {
          // The run's directory is the agent's alone; only the inputs directory below it is bind-mounted,
          // and the container's uid (65534, "other" on the host) needs to read and list it.
          await mkdir(dir, { recursive: true, mode: 0o700 });
          await mkdir(join(dir, 'inputs'), { mode: 0o755 });
          await chmod(join(dir, 'inputs'), 0o755);
        }
        const inputsDir = taken?.inputsDir ?? join(dir, 'inputs');
        await writeInputs(inputsDir, p.inputs);
        if (!taken) {
          const created = await createRunContainer(p, ensured, lease, runId, inputsDir, held, onEvent);
          ({ ensured, lease } = created);
          spec = specFor(p, ensured);
        }
        const containerAt = now();
        const c = held.container;
        const slot = held.slot;
        if (!c || !slot) throw new RgridError('engine_unavailable', 'Docker engine: creating the run container failed');
        // The attach and the exit's wait both before the start (container-exit.ts: the order is what
        // makes the exit impossible to miss), together.
        const [attached, watched] = await Promise.allSettled([
          withinDeadline(c.attach({ stream: true, stdout: true, stderr: true }), stepMs, 'attaching to the run container', (s) => (s as { destroy?: () => void }).destroy?.()),
          withinDeadline(watchExit(docker, c), stepMs, 'registering the wait for the run container', (w) => w.cancel()),
        ]);
        if (watched.status === 'fulfilled') held.watch = watched.value;
        if (attached.status === 'rejected') throw asEngineError('attaching to the run container failed', attached.reason);
        if (watched.status === 'rejected') throw asEngineError('waiting for the run container failed', watched.reason);
        const watch = watched.value;
        const streamed = attachOutput(attached.value, docker, onEvent);
        let timedOut = false;
        // After a kill the exit is due: an engine that does not report it within a step's time is given up.
        let giveUp: ((err: Error) => void) | undefined;
        const givenUp = new Promise<never>((_, reject) => (giveUp = reject));
        givenUp.catch(() => undefined);
        let killTimer: NodeJS.Timeout | undefined;
        const kill = (): void => {
          void c.kill({ signal: 'SIGKILL' }).catch(() => undefined);
          watch.check();
          killTimer ??= setTimeout(() => giveUp?.(new RgridError('engine_unavailable', `Docker engine: the run container was killed but its exit was not reported within ${stepMs / 1000} s`)), stepMs);
          killTimer.unref();
        };
        // Cancelled while the image was being ensured or the container created: it never starts.
        if (signal?.aborted) throw new RgridError('shutting_down', 'the run was cancelled before it started');
        const timer = setTimeout(() => {
          timedOut = true;
          kill();
        }, p.limits.timeoutMs);
        signal?.addEventListener('abort', kill, { once: true });
        const runStart = now();
        let runMs: number;
        let startMs: number;
        try {
          await withinDeadline(c.start(), stepMs, 'starting the run container').catch((err: unknown) => {
            throw asEngineError('starting the run container failed', err);
          });
          startMs = now() - runStart;
          const exit = await Promise.race([watch.exited, givenUp]).catch((err: unknown) => {
            throw asEngineError('waiting for the run container failed', err);
          });
          if (exit.via === 'inspect') logger.warn({ container: c.id }, 'the engine did not answer the wait for a run\'s exit; its state says it exited');
          runMs = now() - runStart;
        } finally {
          clearTimeout(timer);
          clearTimeout(killTimer);
          signal?.removeEventListener('abort', kill);
        }
        // The attach stream normally ends with the container; never hang on one that does not. The state
        // and the outputs are asked for meanwhile (the container has exited; neither needs the stream).
        const inspected = withinDeadline(c.inspect(), stepMs, 'inspecting the exited run container');
        const copied = readOutputs(slot, p, onEvent, outputSink);
        inspected.catch(() => undefined);
        copied.catch(() => undefined);
        await Promise.race([streamed, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
        const state = (await inspected).State;
        const outputs = await copied;
        const exitedAt = runStart + runMs;
        return {
          exit_code: state.ExitCode,
          image_id: ensured.image_id,
          image_key: ensured.image_key,
          deps_key: ensured.deps_key,
          input_sha256: p.inputSha256,
          lock_sha256: ensured.lock_sha256,
          resolved: ensured.resolved,
          resolution: ensured.resolution,
          script_cache_hit: ensured.script_cache_hit,
          dependency_cache_hit: ensured.dependency_cache_hit,
          built: ensured.built,
          image_origin: ensured.image_origin,
          build_ms: ensured.duration_ms,
          run_ms: runMs,
          total_ms: now() - p.ensure.startedAt,
          outputs: outputs.files.map((f) => f.name),
          output_limit: outputs.exceeded,
          timed_out: timedOut,
          oom_killed: state.OOMKilled,
          phases: {
            hot: taken !== undefined,
            outputs_read: outputs.read,
            ensure_ms: ensuredAt - t0,
            container_ms: containerAt - ensuredAt,
            start_ms: startMs,
            exec_ms: runMs,
            after_exit_ms: now() - exitedAt,
          },
        };
      } finally {
        active--;
        // The run's use of the image ends with its exit: the container still there keeps the image from
        // the engine's removal (and from the pruner's choice) until it is gone.
        lease?.release();
        // The next run of these settings finds its container made (in the background, bounded).
        if (held.container) hot.want(spec);
        const { container, slot, dir, watch } = held;
        inBackground('removing a run\'s container', (async () => {
          watch?.cancel();
          if (container) {
            await withinDeadline(container.remove({ force: true }), stepMs, 'removing the run container')
              .catch((err: unknown) => logger.warn({ err, container: container.id }, 'run container not removed; the next start removes it'));
          }
          // The holder and its volume go after the run container (both mount the volume).
          if (slot) pool.discard(slot);
          if (dir) await rm(dir, { recursive: true, force: true });
        })());
      }
    },
  };

  /**
   * Creates the run's container (and takes its outputs slot), closing the start race: an image deleted
   * between the hit and the create (the event saying so had not arrived yet) is ensured again — the probe
   * learns it, the rebuild makes it — once: an image deleted again at once is an engine problem.
   */
  async function createRunContainer(
    p: PreparedRun, ensured: Ensured, lease: Lease | undefined, runId: string, inputsDir: string,
    held: { container?: Docker.Container; slot?: OutputsSlot }, onEvent: (event: RunEvent) => void,
  ): Promise<{ ensured: Ensured; lease: Lease | undefined }> {
    const create = async (e: Ensured): Promise<void> => {
      // The holder must run before the run starts (and so before it can exit): see sandbox.ts. Usually
      // one made ahead; else made now, from the run's image.
      held.slot ??= await pool.take(e.image_id);
      // A create answered after its deadline made a container nobody runs: it goes at once.
      held.container = await withinDeadline(docker.createContainer(specFor(p, e).create(`rgrid-run-${runId}`, inputsDir, held.slot.volume)), stepMs, 'creating the run container',
        (late) => void late.remove({ force: true }).catch(() => undefined));
    };
    try {
      await create(ensured);
      return { ensured, lease };
    } catch (err) {
      if (!isNoSuchImage(err)) throw asEngineError('creating the run container failed', err);
      logger.warn({ image_id: ensured.image_id, image_key: ensured.image_key }, 'cached image vanished before its run started; ensuring it again');
      deps.probe?.forget(ensured.image_id);
      lease?.release();
      const again = await cache.ensure(p.ensure, { onEvent, leaseHolder: `run:${runId}` });
      try {
        await create(again.result);
      } catch (err2) {
        again.lease?.release();
        throw asEngineError('creating the run container failed', err2);
      }
      return { ensured: again.result, lease: again.lease };
    }
  }

  /** The outputs, read through the holder (it runs, so the volume is mounted for the engine to read). */
  async function readOutputs(
    slot: OutputsSlot, p: PreparedRun, onEvent: (event: RunEvent) => void, outputSink: OutputSink | undefined,
  ): Promise<CopiedOutputs & { read: boolean }> {
    // Nothing created in the outputs directory since the holder was made: nothing to read (outputs.ts).
    const after = slot.baseline ? await withinDeadline(statOutputsDir(slot.holder), stepMs, 'the outputs directory\'s stat').catch(() => undefined) : undefined;
    if (outputsUnchanged(slot.baseline, after)) {
      return { files: [], skipped: [], exceeded: null, read: false };
    }
    const sink = outputSink ?? (p.collectOutputs ? chunkEventSink((chunk) => onEvent({ type: 'output', ...chunk })) : undefined);
    const archive = (await withinDeadline(slot.holder.getArchive({ path: OUTPUTS_DIR }), stepMs, 'reading the outputs archive', (a) => (a as Readable).destroy())) as Readable;
    const outputs = await copyOutputTar(archive, p.limits.output, sink);
    // Names the script chose: shown escaped, and not all of them.
    if (outputs.skipped.length) logger.info({ skipped: outputs.skipped.slice(0, 20).map((n) => shown(n)), count: outputs.skipped.length }, 'outputs that are not regular files, or whose names are not safe, were not copied');
    if (outputs.exceeded) logger.info({ reason: outputs.exceeded }, 'outputs cut at the output limit');
    return { ...outputs, read: true };
  }
}

/** Writes (or links) the run's input files into its inputs directory, each readable by the run's uid. */
async function writeInputs(inputsDir: string, inputs: readonly RunInput[]): Promise<void> {
  for (const input of inputs) {
    const path = join(inputsDir, assertInputFileName(input.name));
    if ('data' in input) await writeFile(path, input.data, { flag: 'wx', mode: 0o644 });
    // A link costs nothing; another filesystem (EXDEV) or a refusal falls back to a copy. A name
    // already there (a duplicate) is an error either way, never an overwrite.
    else {
      await link(input.path, path).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw err;
        return copyFile(input.path, path, constants.COPYFILE_EXCL);
      });
    }
    await chmod(path, 0o644);
  }
}

/**
 * Outputs volumes that an earlier version of this agent labelled with its ID (a crash between creating and
 * removing one): empty, since a tmpfs does not outlive its containers, but still records in the engine.
 * Volumes now carry the holder pool's label, and the start-up repair removes those (holder-pool.ts).
 */
async function removeVolumeLeftovers(docker: Docker, agentId: string, logger: Logger): Promise<void> {
  try {
    const { Volumes } = await docker.listVolumes({ filters: { label: [`io.rgrid.agent=${agentId}`, 'io.rgrid.role=run-outputs'] } });
    for (const v of Volumes ?? []) {
      await docker.getVolume(v.Name).remove().catch((err: unknown) => logger.debug({ err, volume: v.Name }, 'leftover outputs volume not removed'));
    }
  } catch (err) {
    logger.debug({ err }, 'listing leftover outputs volumes failed');
  }
}

/** An engine failure as the run reports it: a deadline's own error as it is, any other wrapped. */
function asEngineError(what: string, err: unknown): Error {
  return isRgridError(err) ? err : engineError(what, err);
}

/** The engine's answer to a create naming an image it does not have. */
function isNoSuchImage(err: unknown): boolean {
  const e = err as { statusCode?: number; json?: { message?: unknown }; message?: unknown };
  const message = typeof e.json?.message === 'string' ? e.json.message : typeof e.message === 'string' ? e.message : '';
  return e.statusCode === 404 && /no such image/i.test(message);
}

/** The attach stream as stdout/stderr events. */
function attachOutput(stream: NodeJS.ReadWriteStream, docker: Docker, onEvent: (event: RunEvent) => void): Promise<void> {
  return demuxText(stream, docker, (type, data) => {
    if (data) onEvent({ type, data });
  });
}
