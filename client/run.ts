/**
 * `rgrid run`: hash locally (streaming), tell the control plane which blobs the run needs (two
 * manifests: the inputs, and the code = script + requirements file), upload only the blobs it reports
 * missing, submit, wait (the finished execution comes back with its logs), then fetch the outputs. The script's bytes and the requirements file are
 * blobs like the inputs: a re-run uploads nothing, and a worker that has them cached downloads nothing.
 */
import { readFile } from 'node:fs/promises';
import { isTerminal } from '../common/executions.js';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { canonicalManifest, inputSha256, requirementsDigest } from '../common/cache-keys.js';
import { sha256File } from '../common/digest.js';
import { isRgridError, RgridError } from '../common/errors.js';
import type { Resolution } from '../common/lock.js';
import type { Execution } from '../common/wire/control-api.js';
import type { LogsResponse } from '../common/wire/dispatch-api.js';
import type { ControlApi } from './api.js';
import { writeOutputs } from './outputs.js';
import { createProgress } from './progress.js';

export interface RunOptions {
  script: string;
  inputs: string[];
  requirements?: string | undefined;
  runtime: string;
  outputDir?: string | undefined;
  timeoutS?: number | undefined;
  memoryMb?: number | undefined;
  /** Progress bar for uploads (a terminal on stderr). */
  progress: boolean;
}

export interface RunSummary {
  execution_id: string;
  worker_id: string | null;
  exit_code: number | null;
  script_cache_hit: boolean | null;
  dependency_cache_hit: boolean | null;
  input_cache_hit: boolean | null;
  uploaded_blobs: number;
  downloaded_blobs: number | null;
  /** Where the worker got the image: `local` (a hit), `pulled` (from the registry) or `built`; null if not reported. */
  image_origin: 'local' | 'pulled' | 'built' | null;
  /** The dependency lock the run installed (common/lock.ts); null without requirements or when not reported. */
  lock_sha256: string | null;
  /** Its pins, `name==version`, sorted. */
  resolved: string[] | null;
  /** How the worker got the lock: `locked` (the file is one), `cached`, `resolved` (now), `stale` (the refresh failed). */
  resolution: Resolution | null;
  timings: Record<string, number>;
  outputs: string[];
  /** Present when the outputs were refused or could not be written (none of a refused list is written). */
  outputs_error?: string;
}


export interface RunResult {
  summary: RunSummary;
  execution: Execution;
  stdout: string;
  stderr: string;
  /** Where the outputs were written; null without outputs or when writing them failed. */
  outputDir: string | null;
  outputsError?: RgridError | undefined;
}

export async function runRemote(api: ControlApi, o: RunOptions): Promise<RunResult> {
  const t0 = Date.now();
  const script = await sha256File(o.script);
  const code = [{ name: 'script.py', sha256: script.sha256, size: script.size }];
  const paths = new Map<string, string>([[script.sha256, o.script]]);
  let requirementsSha: string | null = null;
  let requirementsBlob: string | null = null;
  if (o.requirements) {
    const bytes = await readFile(o.requirements);
    const digest = requirementsDigest(bytes); // rejects lines a worker cannot reproduce, naming them
    // A file without a single requirement installs nothing: the same as no requirements (as the agent does).
    if (digest.lines.length > 0) {
      requirementsSha = digest.sha256;
      requirementsBlob = createHash('sha256').update(bytes).digest('hex');
      code.push({ name: 'requirements.txt', sha256: requirementsBlob, size: bytes.length });
      paths.set(requirementsBlob, o.requirements);
    }
  }
  const inputFiles = [];
  for (const path of o.inputs) {
    const d = await sha256File(path);
    inputFiles.push({ name: basename(path), sha256: d.sha256, size: d.size });
    paths.set(d.sha256, path);
  }
  const manifest = canonicalManifest(inputFiles); // bad or duplicate names fail here, before any upload
  const inputSha = manifest.length > 0 ? inputSha256(manifest) : null;
  const hashMs = Date.now() - t0;

  const tUpload = Date.now();
  // The two manifests at once: one round trip of latency instead of two.
  const [codeAnswer, inputAnswer] = await Promise.all([api.recordManifest(code), inputSha ? api.recordManifest(manifest, inputSha) : undefined]);
  const missing = new Set(codeAnswer.missing);
  for (const m of inputAnswer?.missing ?? []) missing.add(m);
  const sizes = new Map([...code, ...manifest].map((f) => [f.sha256, f.size]));
  const total = [...missing].reduce((s, m) => s + (sizes.get(m) ?? 0), 0);
  const bar = createProgress(o.progress && total >= 8 * 1024 * 1024, total, 'upload');
  for (const sha of missing) await api.putBlob(sha, paths.get(sha)!, sizes.get(sha) ?? 0, bar.tick);
  bar.done();
  const uploadMs = Date.now() - tUpload;

  const tWait = Date.now();
  let execution = await api.submit({
    runtime: o.runtime, script_sha256: script.sha256, requirements_sha256: requirementsSha, requirements_blob_sha256: requirementsBlob,
    input_sha256: inputSha, ...(o.timeoutS ? { timeout_s: o.timeoutS } : {}), ...(o.memoryMb ? { memory_mb: o.memoryMb } : {}),
  });
  // The wait brings the logs along with the finished execution; a control plane without that answers
  // without `logs`, and they are asked for separately.
  let logs: LogsResponse | undefined;
  while (!isTerminal(execution.status)) ({ logs, ...execution } = await api.wait(execution.id, undefined, true));
  const waitMs = Date.now() - tWait;
  logs ??= await api.logs(execution.id);

  const tDownload = Date.now();
  let outputDir: string | null = null;
  let outputsError: RgridError | undefined;
  if (execution.outputs.length > 0) {
    outputDir = o.outputDir ?? join('rgrid-outputs', execution.id);
    try {
      await writeOutputs(api, outputDir, execution.outputs);
    } catch (err) {
      // The script ran and its logs are in: they are still shown, then this error (the exit status is 1).
      if (!isRgridError(err)) throw err;
      outputsError = err;
    }
  }
  const downloadMs = Date.now() - tDownload;
  const summary: RunSummary = {
    execution_id: execution.id,
    worker_id: execution.worker_id,
    exit_code: execution.exit_code,
    script_cache_hit: execution.script_cache_hit,
    dependency_cache_hit: execution.dependency_cache_hit,
    input_cache_hit: execution.input_cache_hit,
    uploaded_blobs: missing.size,
    downloaded_blobs: execution.downloaded_blobs,
    image_origin: execution.image_origin ?? null,
    // Absent from control planes older than locks.
    lock_sha256: execution.lock_sha256 ?? null,
    resolved: execution.resolved ?? null,
    resolution: execution.resolution ?? null,
    timings: {
      ...execution.timings, client_hash_ms: hashMs, client_upload_ms: uploadMs, client_wait_ms: waitMs,
      client_download_ms: downloadMs, client_total_ms: Date.now() - t0,
    },
    outputs: execution.outputs.map((f) => f.name),
    ...(outputsError ? { outputs_error: `${outputsError.code}: ${outputsError.message}` } : {}),
  };
  return { summary, execution, stdout: logs.stdout, stderr: logs.stderr, outputDir: outputsError ? null : outputDir, outputsError };
}

/** The process exit status for a finished execution: the script's own, like `docker run`. */
