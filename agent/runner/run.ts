import { randomUUID } from 'node:crypto';
import { chmod, copyFile, link, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { canonicalManifest, inputSha256 } from '../../common/cache-keys.js';
import { sha256Hex } from '../../common/digest.js';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';
import type { BuildLogEvent, EnsureRequest, PreparedEnsure } from '../builder/ensure-types.js';
import { engineError } from '../builder/engine-build.js';
import type { ImageCache } from '../builder/image-cache.js';
import { copyOutputs, type OutputChunk } from './outputs.js';

/**
 * A local run: ensure the image (leased for the whole run), start a locked-down container with the inputs
 * bind-mounted read-only, stream its stdout/stderr, enforce the wall-clock timeout, copy /work/outputs
 * out, and remove the container whatever happens.
 */
/**
 * An input file: bytes sent with the request, or (issue 5, the worker) a file of the blob cache, which is
 * hard-linked into the run's inputs directory instead of copied through memory.
 */
export type RunInput = { name: string; data: Buffer } | { name: string; path: string; sha256: string; size: number };

export interface RunRequest extends EnsureRequest {
  inputs: RunInput[];
  timeout_s?: number | undefined;
  memory_mb?: number | undefined;
  cpus?: number | undefined;
  /** Send the output files' contents back (the CLI's --output-dir); names are always reported. */
  collect_outputs?: boolean | undefined;
}

export interface PreparedRun {
  ensure: PreparedEnsure;
  inputs: RunInput[];
  inputSha256: string;
  timeoutMs: number;
  memoryBytes: number;
  nanoCpus: number;
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
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  built: boolean;
  build_ms: number;
  run_ms: number;
  total_ms: number;
  outputs: string[];
  timed_out: boolean;
  oom_killed: boolean;
}

export interface RunnerDeps {
  docker: Docker;
  cache: ImageCache;
  config: AgentConfig;
  agentId: string;
  logger: Logger;
  now?: () => number;
}

export interface Runner {
  prepare(request: RunRequest): Promise<PreparedRun>;
  run(prepared: PreparedRun, options: { onEvent: (event: RunEvent) => void; signal?: AbortSignal }): Promise<RunResult>;
  /** Runs whose container is alive now. */
  readonly active: number;
}

export function createRunner(deps: RunnerDeps): Runner {
  const { docker, cache, config, logger } = deps;
  const now = deps.now ?? Date.now;
  const runsDir = join(config.data_dir, 'runs');
  let active = 0;

  return {
    get active() {
      return active;
    },

    async prepare(request) {
      const manifest = canonicalManifest(
        request.inputs.map((i) => ('data' in i ? { name: i.name, sha256: sha256Hex(i.data), size: i.data.length } : { name: i.name, sha256: i.sha256, size: i.size })),
      );
      const timeoutS = request.timeout_s ?? config.run_timeout_s;
      const memoryMb = request.memory_mb ?? config.run_memory_mb;
      const cpus = request.cpus ?? config.run_cpus;
      if (!(timeoutS > 0)) throw new RgridError('bad_request', 'timeout must be a positive number of seconds');
      if (!Number.isInteger(memoryMb) || memoryMb < 16) throw new RgridError('bad_request', 'memory must be an integer number of MB, at least 16');
      if (!(cpus > 0)) throw new RgridError('bad_request', 'cpus must be positive');
      return {
        ensure: await cache.prepare(request),
        inputs: request.inputs,
        inputSha256: inputSha256(manifest),
        timeoutMs: Math.round(timeoutS * 1000),
        memoryBytes: memoryMb * 1024 * 1024,
        nanoCpus: Math.round(cpus * 1e9),
        collectOutputs: request.collect_outputs ?? false,
      };
    },

    async run(p, { onEvent, signal }) {
      const runId = randomUUID();
      const { result: ensured, lease } = await cache.ensure(p.ensure, { onEvent, leaseHolder: `run:${runId}` });
      const buildMs = ensured.duration_ms;
      const dir = join(runsDir, runId);
      let container: Docker.Container | undefined;
      active++;
      try {
        const inputsDir = join(dir, 'inputs');
        await mkdir(inputsDir, { recursive: true });
        // World-readable: the container runs as 65534 and sees this directory read-only.
        await chmod(dir, 0o755);
        await chmod(inputsDir, 0o755);
        for (const input of p.inputs) {
          const path = join(inputsDir, input.name);
          if ('data' in input) await writeFile(path, input.data);
          // A link costs nothing; another filesystem (EXDEV) or a refusal falls back to a copy.
          else await link(input.path, path).catch(() => copyFile(input.path, path));
          await chmod(path, 0o644);
        }
        try {
          container = await docker.createContainer({
            Image: ensured.image_id,
            name: `rgrid-run-${runId}`,
            User: '65534:65534',
            AttachStdout: true,
            AttachStderr: true,
            Tty: false,
            Labels: {
              'io.rgrid.role': 'run',
              'io.rgrid.agent': deps.agentId,
              'io.rgrid.account': ensured.account,
              'io.rgrid.image-key': ensured.image_key,
            },
            HostConfig: {
              Binds: [`${inputsDir}:/work/inputs:ro`],
              NetworkMode: config.run_network,
              Memory: p.memoryBytes,
              MemorySwap: p.memoryBytes,
              NanoCpus: p.nanoCpus,
              PidsLimit: config.run_pids_limit,
              CapDrop: ['ALL'],
              SecurityOpt: ['no-new-privileges'],
            },
          });
        } catch (err) {
          throw engineError('creating the run container failed', err);
        }
        const c = container;
        const streamed = attachOutput(await c.attach({ stream: true, stdout: true, stderr: true }), docker, onEvent);
        let timedOut = false;
        const kill = (): void => void c.kill({ signal: 'SIGKILL' }).catch(() => undefined);
        const timer = setTimeout(() => {
          timedOut = true;
          kill();
        }, p.timeoutMs);
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
        const outputs = await copyOutputs(c, p.collectOutputs ? (chunk) => onEvent({ type: 'output', ...chunk }) : undefined);
        if (outputs.skipped.length) logger.info({ skipped: outputs.skipped }, 'outputs that are not regular files were not copied');
        return {
          exit_code: state.ExitCode,
          image_id: ensured.image_id,
          image_key: ensured.image_key,
          deps_key: ensured.deps_key,
          input_sha256: p.inputSha256,
          script_cache_hit: ensured.script_cache_hit,
          dependency_cache_hit: ensured.dependency_cache_hit,
          built: ensured.built,
          build_ms: buildMs,
          run_ms: runMs,
          total_ms: now() - p.ensure.startedAt,
          outputs: outputs.files,
          timed_out: timedOut,
          oom_killed: state.OOMKilled,
        };
      } finally {
        active--;
        if (container) await container.remove({ force: true }).catch((err: unknown) => logger.warn({ err }, 'run container not removed'));
        lease?.release();
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** Demultiplexes the attach stream into stdout/stderr events (UTF-8, split code points rejoined). */
function attachOutput(stream: NodeJS.ReadWriteStream, docker: Docker, onEvent: (event: RunEvent) => void): Promise<void> {
  const make = (type: 'stdout' | 'stderr'): PassThrough => {
    const decoder = new StringDecoder('utf8');
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => {
      const data = decoder.write(chunk);
      if (data) onEvent({ type, data });
    });
    sink.on('end', () => {
      const rest = decoder.end();
      if (rest) onEvent({ type, data: rest });
    });
    return sink;
  };
  const out = make('stdout');
  const err = make('stderr');
  docker.modem.demuxStream(stream, out, err);
  return new Promise((resolve) => {
    const finish = (): void => {
      out.end();
      err.end();
      resolve();
    };
    stream.on('end', finish);
    stream.on('close', finish);
    stream.on('error', finish);
  });
}
