import type { BuildLogEvent, EnsureRequest, EnsureResult, PreparedEnsure } from '../builder/ensure-types.js';
import type { OutputChunk, OutputSink } from './outputs.js';
import type { RunLimits } from './sandbox.js';

// The runner's request, result and event types (agent/runner/run.ts runs them).

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

/** What the run's ensure answered, as it answered it (ensure-types.ts has each field's meaning). */
type EnsuredFields = Pick<EnsureResult,
  'image_id' | 'image_key' | 'deps_key' | 'lock_sha256' | 'resolved' | 'resolution' | 'script_cache_hit' | 'dependency_cache_hit' | 'built' | 'image_origin'>;

export interface RunResult extends EnsuredFields {
  exit_code: number;
  input_sha256: string;
  build_ms: number;
  run_ms: number;
  total_ms: number;
  /** Output files copied out (none when the copy was cut at a limit). */
  outputs: string[];
  /** Why the outputs were cut (a limit of run_max_output_*), or null. */
  output_limit: string | null;
  timed_out: boolean;
  oom_killed: boolean;
  /** Where the run's time went (the benchmark prints them); see RunPhases. */
  phases: RunPhases;
}

export interface RunPhases {
  /** The container was made ahead (a hot container) and only started here. */
  hot: boolean;
  /** The outputs archive was read (false: the outputs directory was unchanged, so empty). */
  outputs_read: boolean;
  /** From the run's start in the runner to the image ensured (a hit: the index; a miss: the build). */
  ensure_ms: number;
  /** Inputs written and the container taken (hot) or created. */
  container_ms: number;
  /** The engine's start call. */
  start_ms: number;
  /** From the start call to the exit seen. */
  exec_ms: number;
  /** From the exit to the answer: the state, the outputs, the end of the output stream. */
  after_exit_ms: number;
}

export interface RunOptions {
  onEvent: (event: RunEvent) => void;
  signal?: AbortSignal;
  /** Where output files go; without it, `collect_outputs` decides between `output` events and names only. */
  outputSink?: OutputSink;
}

export interface RunnerStats {
  /** Runs whose container is alive now. */
  active: number;
  /** Finished runs whose container, outputs holder and directory are still being removed. */
  cleaning: number;
  /** Hot containers ready (hot-containers.ts). */
  hot: number;
}

