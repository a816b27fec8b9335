/**
 * One claimed execution on this worker (the claim already passed claim-check.ts): keep the claim renewed
 * throughout, fetch the script, requirements and input blobs into the blob cache (only what is missing,
 * each verified against its digest and size), run through the runner (ensure with single-flight, the
 * entry leased for the run, the sandbox's limits), upload the outputs as blobs, report the result.
 * Uploads and the report are retried through control-plane outages (common/retry.ts): the result is the
 * whole point of the work.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { requirementsDigest } from '../../common/cache-keys.js';
import { sha256File } from '../../common/digest.js';
import { isRgridError } from '../../common/errors.js';
import { storableLog } from '../../common/names.js';
import { isTransient, retryTransient } from '../../common/retry.js';
import { openInside } from '../../common/safe-write.js';
import type { ExecutionFailure, OutputFile } from '../../common/wire/control-api.js';
import type { ClaimedExecution, CompleteRequest } from '../../common/wire/dispatch-api.js';
import type { OutputSink } from '../runner/outputs.js';
import type { ControlPlaneClient } from '../control/client.js';
import type { Runner, RunEvent, RunResult } from '../runner/run.js';
import type { BlobCache } from './blob-cache.js';
import { keepClaim, type ClaimKeeper } from './claim-keeper.js';
import { reportError, runError, runFailure } from './report.js';
import { TailBuffer } from './tail-buffer.js';

/** Same default as the control plane's logMaxBytes: what is sent is what is kept. */
export const LOG_MAX_BYTES = 1024 * 1024;
/** Blobs of one claim downloaded at once: enough to hide round trips, few enough not to crowd the control plane. */
export const BLOB_FETCH_CONCURRENCY = 4;
/** Scripts and requirements files are read into memory and into a build context: bounded. */
export const SCRIPT_BLOB_MAX_BYTES = 64 * 1024 * 1024;

export interface RetryTuning {
  /** The retry policy's backoff (common/retry.ts, full jitter): first bound and cap of the delay. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** How long one output upload (and the manifest) is retried before the execution is handed back. */
  uploadBudgetMs: number;
  /** How long the report is retried (the claim renewed meanwhile) before the worker gives up on it. */
  completeBudgetMs: number;
}

/** Long enough to ride out a control-plane restart, or an outage of several minutes. */
export const DEFAULT_RETRY: RetryTuning = { initialDelayMs: 250, maxDelayMs: 15_000, uploadBudgetMs: 10 * 60_000, completeBudgetMs: 15 * 60_000 };

export interface ExecuteDeps {
  client: Pick<ControlPlaneClient, 'renew' | 'complete' | 'getBlob' | 'putBlob' | 'recordManifest'>;
  blobs: BlobCache;
  runner: Runner;
  logger: Logger;
  dataDir: string;
  /** The blob cache's size bound: a claim whose inputs could never fit is refused before any download. */
  blobMaxBytes: number;
  retry?: Partial<RetryTuning>;
  /**
   * Called when the run built an image or layer, so the control plane learns what this worker holds.
   * Awaited before the result is reported: whoever sees the result can rely on placement knowing the image.
   */
  onBuilt: () => Promise<void>;
}

export interface ExecuteOutcome {
  status: 'completed' | 'handed_back' | 'lost';
  built: boolean;
}

class Failure extends Error {
  constructor(readonly failure: ExecutionFailure | 'retry', message: string, readonly log?: string) {
    super(message);
  }
}

const transientOr = (err: unknown, failure: ExecutionFailure): ExecutionFailure | 'retry' => (isTransient(err) ? 'retry' : failure);

/** Where a run's output files are written on the way to the control plane; a name the agent chose. */
function outputStagingDir(dataDir: string): string {
  return join(dataDir, 'worker-outputs', randomUUID());
}

export async function executeClaim(deps: ExecuteDeps, claim: ClaimedExecution, stop: AbortSignal): Promise<ExecuteOutcome> {
  const log = deps.logger.child({ execution_id: claim.execution_id, attempt: claim.attempt });
  const retry = { ...DEFAULT_RETRY, ...deps.retry };
  const keeper = keepClaim(deps.client, claim, log);
  try {
    const produced = await produce(deps, claim, stop, keeper, retry, log);
    if (produced.report === null || keeper.lost.aborted) {
      log.warn('run stopped: the claim is lost, nothing is reported; the execution runs again elsewhere');
      return { status: 'lost', built: produced.built };
    }
    return await completeWithRetry(deps, claim, produced.report, keeper, retry, log, produced.built);
  } finally {
    keeper.stop();
  }
}

/** Fetch, run and upload; the report to send, or null when the claim was lost on the way. */
async function produce(
  deps: ExecuteDeps, claim: ClaimedExecution, stop: AbortSignal, keeper: ClaimKeeper, retry: RetryTuning, log: Logger,
): Promise<{ report: CompleteRequest | null; built: boolean }> {
  const { client, blobs } = deps;
  const abort = new AbortController();
  const kill = (): void => abort.abort();
  stop.addEventListener('abort', kill, { once: true });
  keeper.lost.addEventListener('abort', kill, { once: true });
  if (stop.aborted || keeper.lost.aborted) kill();
  const outDir = outputStagingDir(deps.dataDir);
  const stdout = new TailBuffer(LOG_MAX_BYTES);
  const stderr = new TailBuffer(LOG_MAX_BYTES);
  const timings: Record<string, number> = {};
  let unpin: () => void = () => undefined;
  let result: RunResult | undefined;
  try {
    // ---- fetch: everything the run needs, from the blob cache or the control plane
    const fetchStart = Date.now();
    const inputBytes = claim.inputs.reduce((sum, i) => sum + i.size, 0);
    if (inputBytes > deps.blobMaxBytes) {
      throw new Failure('input_unavailable', `the inputs total ${inputBytes} bytes, more than this worker's blob cache holds (blob_cache_max_mb)`);
    }
    const needed = [claim.script_sha256, ...(claim.requirements_blob_sha256 ? [claim.requirements_blob_sha256] : []), ...claim.inputs.map((i) => i.sha256)];
    unpin = blobs.pin(needed);
    let downloaded = 0;
    let inputsPresent = true;
    // A control plane that is away while the claim is held (its lease is extended by the downtime) is
    // waited for, like the uploads: handing the claim back would spend an attempt on an outage.
    const fetchAbort = new AbortController();
    const fetchRetry = {
      budgetMs: retry.uploadBudgetMs, initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs, signal: AbortSignal.any([abort.signal, fetchAbort.signal]),
      onRetry: (err: unknown, attempt: number, delayMs: number) => log.warn({ attempt, delay_ms: delayMs, msg: (err as Error).message }, 'blob download failed; retrying'),
    };
    const fetchOne = async (sha: string, size: number | undefined): Promise<string> => {
      try {
        const got = await retryTransient(
          (signal) => blobs.ensure(sha, () => client.getBlob(claim.account, sha, { signal }), { size, maxBytes: SCRIPT_BLOB_MAX_BYTES }),
          fetchRetry,
        );
        if (got.downloaded) downloaded++;
        return got.path;
      } catch (err) {
        throw new Failure(transientOr(err, 'input_unavailable'), `blob ${sha}: ${(err as Error).message}`);
      }
    };
    for (const i of claim.inputs) if (!(await blobs.has(i.sha256))) inputsPresent = false;
    // Several at a time: a run with many small inputs waits for the slowest few round trips, not their
    // sum. The first that fails for good stops the others (fetchAbort): the claim fails or is handed back.
    const fetching = new PQueue({ concurrency: BLOB_FETCH_CONCURRENCY });
    const fetchAll = (blobsWanted: ReadonlyArray<{ sha256: string; size: number | undefined }>): Promise<string[]> =>
      Promise.all(blobsWanted.map((b) => fetching.add(() => fetchOne(b.sha256, b.size)))).catch((err: unknown) => {
        fetchAbort.abort();
        fetching.clear();
        throw err;
      });
    const withRequirements = claim.requirements_blob_sha256 !== undefined && claim.requirements_blob_sha256 !== null;
    const paths = await fetchAll([
      { sha256: claim.script_sha256, size: undefined },
      ...(withRequirements ? [{ sha256: claim.requirements_blob_sha256!, size: undefined }] : []),
      ...claim.inputs.map((i) => ({ sha256: i.sha256, size: i.size })),
    ]);
    const scriptPath = paths[0]!;
    const reqPath = withRequirements ? paths[1]! : null;
    const inputPaths = paths.slice(withRequirements ? 2 : 1);
    const inputs = claim.inputs.map((i, n) => ({ name: i.name, sha256: i.sha256, size: i.size, path: inputPaths[n]! }));
    timings.input_fetch_ms = Date.now() - fetchStart;
    const script = await readFile(scriptPath);
    const requirements = reqPath ? await readFile(reqPath) : null;
    if (requirements && requirementsDigest(requirements).sha256 !== claim.requirements_sha256) {
      throw new Failure('error', `the requirements blob does not canonicalize to requirements_sha256 ${claim.requirements_sha256}`);
    }

    // ---- run: ensure (single-flight) + container, the entry leased throughout
    const prepared = await deps.runner.prepare({
      account: claim.account, runtime: claim.runtime, script, requirements, inputs,
      timeout_s: claim.timeout_s ?? undefined, memory_mb: claim.memory_mb ?? undefined,
    }).catch((err: unknown) => {
      // A requirements file the build policy refuses is the submission's own fault, like a failing pip
      // install: the execution fails as build_failed with the line named, and is not retried.
      const refused = isRgridError(err) && (err.code === 'bad_requirements' || err.code === 'build_failed');
      throw new Failure(refused ? 'build_failed' : transientOr(err, 'error'), (err as Error).message);
    });
    await mkdir(outDir, { recursive: true, mode: 0o700 });
    // Output names were checked against the naming contract by the copy; openInside checks them again
    // and never follows a link.
    const outputSink: OutputSink = async (file) => (await openInside(outDir, file.name, { mode: 0o600, dirMode: 0o700 })).createWriteStream();
    const buildLog = new TailBuffer(64 * 1024);
    const onEvent = (e: RunEvent): void => {
      if (e.type === 'stdout') stdout.push(e.data);
      else if (e.type === 'stderr') stderr.push(e.data);
      else if (e.type === 'log') buildLog.push(`[${e.stage}] ${e.line}\n`);
    };
    try {
      result = await deps.runner.run(prepared, { onEvent, signal: abort.signal, outputSink });
    } catch (err) {
      if (isRgridError(err) && err.code === 'build_failed') {
        const detail = err.detail ? `\n${JSON.stringify(err.detail)}` : '';
        throw new Failure('build_failed', err.message, `${buildLog.text()}${detail}`);
      }
      throw new Failure(transientOr(err, 'error'), (err as Error).message);
    }
    if (result.built) await deps.onBuilt();
    timings.build_ms = result.build_ms;
    timings.run_ms = result.run_ms;
    if (keeper.lost.aborted) return { report: null, built: result.built };
    if (stop.aborted) throw new Failure('retry', 'the agent is shutting down');

    // ---- outputs: blobs of the account, kept by a manifest so blob cleanup does not take them
    const uploadStart = Date.now();
    const outputs = await uploadOutputs(deps, claim, outDir, result.outputs, keeper, retry, log);
    timings.output_upload_ms = Date.now() - uploadStart;
    const failure = runFailure(result);
    return {
      report: {
        claim_id: claim.claim_id, outcome: 'done', exit_code: result.exit_code, failure, error: runError(result, prepared.limits.timeoutMs),
        script_cache_hit: result.script_cache_hit, dependency_cache_hit: result.dependency_cache_hit,
        input_cache_hit: claim.inputs.length > 0 ? inputsPresent : null, downloaded_blobs: downloaded, image_origin: result.image_origin,
        lock_sha256: result.lock_sha256, resolved: result.resolved, resolution: result.resolution,
        timings, outputs, ...logs(stdout, stderr, ''),
      },
      built: result.built,
    };
  } catch (err) {
    const built = result?.built ?? false;
    const f = err instanceof Failure ? err : new Failure('error', (err as Error).message);
    if (!(err instanceof Failure)) log.error({ err }, 'execution failed unexpectedly');
    if (f.failure === 'retry') return { report: { claim_id: claim.claim_id, outcome: 'retry', error: reportError(f.message) }, built };
    return {
      report: { claim_id: claim.claim_id, outcome: 'done', failure: f.failure, error: reportError(f.message), timings, ...logs(stdout, stderr, f.log ?? '') },
      built,
    };
  } finally {
    stop.removeEventListener('abort', kill);
    keeper.lost.removeEventListener('abort', kill);
    unpin();
    await rm(outDir, { recursive: true, force: true });
  }
}

/** Logs as sent: tails, with NUL made storable (common/names.ts storableLog). */
function logs(stdout: TailBuffer, stderr: TailBuffer, extra: string): Pick<CompleteRequest, 'stdout' | 'stderr' | 'logs_truncated'> {
  return { stdout: storableLog(stdout.text()), stderr: storableLog(`${stderr.text()}${extra}`), logs_truncated: stdout.truncated || stderr.truncated };
}

async function uploadOutputs(
  deps: ExecuteDeps, claim: ClaimedExecution, outDir: string, names: readonly string[], keeper: ClaimKeeper, retry: RetryTuning, log: Logger,
): Promise<OutputFile[]> {
  const options = {
    budgetMs: retry.uploadBudgetMs, initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs, signal: keeper.lost,
    onRetry: (err: unknown, attempt: number, delayMs: number) => log.warn({ attempt, delay_ms: delayMs, msg: (err as Error).message }, 'output upload failed; retrying'),
  };
  const outputs: OutputFile[] = [];
  try {
    for (const name of names) {
      const path = join(outDir, name);
      const { sha256, size } = await sha256File(path);
      // A fresh stream per attempt: a failed attempt may have consumed part of the previous one.
      await retryTransient((signal) => deps.client.putBlob(claim.account, sha256, size, createReadStream(path), { signal }), options);
      outputs.push({ name, sha256, size });
    }
    if (outputs.length > 0) {
      const unique = new Map(outputs.map((o) => [o.sha256, { name: o.sha256, sha256: o.sha256, size: o.size }]));
      await retryTransient((signal) => deps.client.recordManifest(claim.account, [...unique.values()], { signal }), options);
    }
  } catch (err) {
    // Still failing after the budget: another attempt (here or elsewhere) may succeed; a 4xx will not.
    throw new Failure(transientOr(err, 'error'), `uploading the outputs failed: ${(err as Error).message}`);
  }
  return outputs;
}

/** Reports the result, retrying through outages while the claim is kept; a 409 means another worker has it. */
async function completeWithRetry(
  deps: ExecuteDeps, claim: ClaimedExecution, report: CompleteRequest, keeper: ClaimKeeper, retry: RetryTuning, log: Logger, built: boolean,
): Promise<ExecuteOutcome> {
  try {
    const execution = await retryTransient((signal) => deps.client.complete(claim.execution_id, report, { signal }), {
      budgetMs: retry.completeBudgetMs, initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs, signal: keeper.lost,
      onRetry: (err, attempt, delayMs) => log.warn({ attempt, delay_ms: delayMs, msg: (err as Error).message }, 'reporting the result failed; retrying'),
    });
    log.info({ status: execution?.status, exit_code: execution?.exit_code, outcome: report.outcome, failure: report.failure ?? null }, 'execution reported');
    return { status: report.outcome === 'retry' ? 'handed_back' : 'completed', built };
  } catch (err) {
    if (keeper.lost.aborted || (isRgridError(err) && err.code === 'conflict')) {
      log.warn('claim lost before the result was reported; the execution runs again elsewhere');
      return { status: 'lost', built };
    }
    throw err;
  }
}
