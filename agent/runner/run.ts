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
import { RgridError } from '../../common/errors.js';
import { assertInputFileName, shown } from '../../common/names.js';
import type { AgentConfig } from '../config.js';
import type { BuildLogEvent, EnsureRequest, PreparedEnsure } from '../builder/ensure-types.js';
import { engineError } from '../builder/engine-build.js';
import type { ImageCache } from '../builder/image-cache.js';
import type { ImageProbe } from '../builder/image-probe.js';
import { chunkEventSink, copyOutputTar, type OutputChunk, type OutputSink } from './outputs.js';
import { createHolderPool, type OutputsSlot } from './holder-pool.js';
import { runContainerSpec, runLimits, type RunLimits } from './sandbox.js';
import type { Resolution } from '../../common/lock.js';

/**
 * A local run: ensure the image (leased for the whole run), start a locked-down container (the sandbox of
 * sandbox.ts: read-only root, bounded tmpfs for /tmp and /work/outputs, file-size limit, memory, CPU and
 * PIDs limits) with the inputs bind-mounted read-only, stream its stdout/stderr, enforce the wall-clock
 * timeout, copy /work/outputs out within the output limits, and remove everything whatever happens.
 */
/**
 * An input file: bytes sent with the request, or (the claim loop) a file of the blob cache, which is
 * hard-linked into the run's inputs directory instead of copied through memory.
 */
export type RunInput = { name: string; data: Buffer } | { name: string; path: string; sha256: string; size: number };

export interface RunRequest extends EnsureRequest {
  inputs: RunInput[];
  timeout_s?: number | undefined;
  memory_mb?: number | undefined;
  cpus?: number | undefined;
  /** Send the output files' contents back as `output` events (the CLI's --output-dir); names are always reported. */
  collect_outputs?: boolean | undefined;
}

export interface PreparedRun {
  ensure: PreparedEnsure;
  inputs: RunInput[];
  inputSha256: string;
  limits: RunLimits;
  collectOutputs: boolean;
}

export type RunEvent =
  | BuildLogEvent
  | { type: 'stdout' | 'stderr'; data: string }
  | ({ type: 'output' } & OutputChunk);

export interface RunResult {
  exit_code: number;
  image_id: string;
  image_key: string;
  deps_key: string | null;
  input_sha256: string;
  /** The dependency lock the image installs (null without requirements or under `resolve_ttl: never`). */
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: Resolution | null;
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  built: boolean;
  /** Where the image came from: a hit (`local`), the registry (`pulled`), or a build here (`built`). */
  image_origin: 'local' | 'pulled' | 'built';
  build_ms: number;
  run_ms: number;
  total_ms: number;
  /** Output files copied out (none when the copy was cut at a limit). */
  outputs: string[];
  /** Why the outputs were cut (a limit of run_max_output_*), or null. */
  output_limit: string | null;
  timed_out: boolean;
  oom_killed: boolean;
}

export interface RunOptions {
  onEvent: (event: RunEvent) => void;
  signal?: AbortSignal;
  /** Where output files go; without it, `collect_outputs` decides between `output` events and names only. */
  outputSink?: OutputSink;
}

export interface RunnerDeps {
  docker: Docker;
  cache: ImageCache;
  /** The cache's image probe: told when the engine says an image it answered for is gone. */
  probe?: Pick<ImageProbe, 'forget'>;
  /** The image outputs holders are made from ahead of runs (holder-pool.ts); without it, each run makes its own. */
  holderImage?: () => Promise<string | undefined>;
  config: AgentConfig;
  agentId: string;
  logger: Logger;
  now?: () => number;
}

export interface Runner {
  prepare(request: RunRequest): Promise<PreparedRun>;
  run(prepared: PreparedRun, options: RunOptions): Promise<RunResult>;
  /** Runs whose container is alive now. */
  readonly active: number;
  /** Stops making outputs holders ahead and removes the ready ones (the drain; runs still get theirs). */
  drain(): void;
  /** Removes the outputs holders made ahead (after the runs have ended). */
  close(): Promise<void>;
}

export function createRunner(deps: RunnerDeps): Runner {
  const { docker, cache, config, logger } = deps;
  const now = deps.now ?? Date.now;
  const runsDir = join(config.data_dir, 'runs');
  let active = 0;
  const swept = removeVolumeLeftovers(docker, deps.agentId, logger);
  // Output limits come from the config alone (never from a request): every run's tmpfs is the same.
  const outputLimits = runLimits(config, {}, hostCpus().length).limits.output;
  const pool = createHolderPool({
    docker, agentId: deps.agentId, logger, size: config.run_holder_pool_size, output: outputLimits, after: swept,
    ...(deps.holderImage ? { holderImage: deps.holderImage } : {}),
  });

  return {
    get active() {
      return active;
    },

    drain: () => pool.drain(),
    close: () => pool.close(),

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
      let { result: ensured, lease } = await cache.ensure(p.ensure, { onEvent, leaseHolder: `run:${runId}` });
      const dir = join(runsDir, runId);
      const labelsOf = (e: typeof ensured): Record<string, string> => ({
        'io.rgrid.agent': deps.agentId,
        'io.rgrid.account': e.account,
        'io.rgrid.image-key': e.image_key,
      });
      let container: Docker.Container | undefined;
      let slot: OutputsSlot | undefined;
      active++;
      try {
        const inputsDir = join(dir, 'inputs');
        // The run's directory is the agent's alone; only the inputs directory below it is bind-mounted,
        // and the container's uid (65534, "other" on the host) needs to read and list it.
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await mkdir(inputsDir, { mode: 0o755 });
        await chmod(inputsDir, 0o755);
        for (const input of p.inputs) {
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
        // The holder must run before the run starts (and so before it can exit): see sandbox.ts. Usually
        // one made ahead; else made now, from the run's image.
        const createContainers = async (imageId: string, labels: Record<string, string>): Promise<void> => {
          slot ??= await pool.take(imageId);
          container = await docker.createContainer(runContainerSpec({
            imageId, name: `rgrid-run-${runId}`, inputsDir, volume: slot.volume, network: config.run_network,
            pidsLimit: config.run_pids_limit, limits: p.limits, labels,
          }));
        };
        try {
          await createContainers(ensured.image_id, labelsOf(ensured));
        } catch (err) {
          if (!isNoSuchImage(err)) throw engineError('creating the run container failed', err);
          // The start race: the image was deleted between the hit and the create (the event saying so
          // had not arrived yet). The probe learns it; ensuring again rebuilds; the run goes on. Once:
          // an image deleted again at once is an engine problem, reported as such.
          logger.warn({ image_id: ensured.image_id, image_key: ensured.image_key }, 'cached image vanished before its run started; ensuring it again');
          deps.probe?.forget(ensured.image_id);
          lease?.release();
          lease = undefined;
          ({ result: ensured, lease } = await cache.ensure(p.ensure, { onEvent, leaseHolder: `run:${runId}` }));
          try {
            await createContainers(ensured.image_id, labelsOf(ensured));
          } catch (again) {
            throw engineError('creating the run container failed', again);
          }
        }
        const buildMs = ensured.duration_ms;
        const c: Docker.Container | undefined = container;
        const outputsHolder = slot?.holder;
        if (!c || !outputsHolder) throw new RgridError('engine_unavailable', 'Docker engine: creating the run container failed');
        const streamed = attachOutput(await c.attach({ stream: true, stdout: true, stderr: true }), docker, onEvent);
        let timedOut = false;
        const kill = (): void => void c.kill({ signal: 'SIGKILL' }).catch(() => undefined);
        // Cancelled while the image was being ensured or the container created: it never starts.
        if (signal?.aborted) throw new RgridError('shutting_down', 'the run was cancelled before it started');
        const timer = setTimeout(() => {
          timedOut = true;
          kill();
        }, p.limits.timeoutMs);
        signal?.addEventListener('abort', kill, { once: true });
        const runStart = now();
        let runMs: number;
        try {
          await c.start();
          await c.wait();
          runMs = now() - runStart;
        } finally {
          clearTimeout(timer);
          signal?.removeEventListener('abort', kill);
        }
        // The attach stream normally ends with the container; never hang on one that does not.
        await Promise.race([streamed, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
        const state = (await c.inspect()).State;
        const sink = outputSink ?? (p.collectOutputs ? chunkEventSink((chunk) => onEvent({ type: 'output', ...chunk })) : undefined);
        // Read through the holder: it is running, so the volume is mounted for the engine to read.
        const archive = (await outputsHolder.getArchive({ path: '/work/outputs' })) as Readable;
        const outputs = await copyOutputTar(archive, p.limits.output, sink);
        // Names the script chose: shown escaped, and not all of them.
        if (outputs.skipped.length) logger.info({ skipped: outputs.skipped.slice(0, 20).map((n) => shown(n)), count: outputs.skipped.length }, 'outputs that are not regular files, or whose names are not safe, were not copied');
        if (outputs.exceeded) logger.info({ reason: outputs.exceeded }, 'outputs cut at the output limit');
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
          build_ms: buildMs,
          run_ms: runMs,
          total_ms: now() - p.ensure.startedAt,
          outputs: outputs.files.map((f) => f.name),
          output_limit: outputs.exceeded,
          timed_out: timedOut,
          oom_killed: state.OOMKilled,
        };
      } finally {
        active--;
        await container?.remove({ force: true }).catch((err: unknown) => logger.warn({ err }, 'run container not removed'));
        // Off the run's path: the holder and its volume go in the background (the pool's close waits).
        if (slot) pool.discard(slot);
        lease?.release();
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
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
