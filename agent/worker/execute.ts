/**
 * One claimed execution on this worker: renew the claim while working, fetch the script, requirements and
 * input blobs into the blob cache (only what is missing), run through the existing runner (ensure with
 * single-flight, the entry leased for the run), upload the outputs as blobs, report the result.
 */
import { createReadStream, createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { requirementsDigest } from '../../common/cache-keys.js';
import { sha256File } from '../../common/digest.js';
import { isRgridError, RgridError } from '../../common/errors.js';
import type { ExecutionFailure, OutputFile } from '../../common/wire/control-api.js';
import type { ClaimedExecution, CompleteRequest } from '../../common/wire/dispatch-api.js';
import type { Runner, RunEvent, RunResult } from '../runner/run.js';
import type { BlobCache } from './blob-cache.js';
import type { ControlClient } from './control-client.js';
import { TailBuffer } from './tail-buffer.js';

/** Same default as the control plane's logMaxBytes: what is sent is what is kept. */
export const LOG_MAX_BYTES = 1024 * 1024;
/** Errors after which another worker (or this one later) may well succeed: hand the execution back. */
const TRANSIENT = new Set(['engine_unavailable', 'shutting_down', 'unavailable']);

export interface ExecuteDeps {
  client: ControlClient;
  blobs: BlobCache;
  runner: Runner;
  logger: Logger;
  dataDir: string;
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

export async function executeClaim(deps: ExecuteDeps, claim: ClaimedExecution, stop: AbortSignal): Promise<ExecuteOutcome> {
  const { client, blobs, logger } = deps;
  const log = logger.child({ execution_id: claim.execution_id, attempt: claim.attempt });
  const abort = new AbortController();
  const kill = (): void => abort.abort();
  stop.addEventListener('abort', kill, { once: true });
  let lost = false;
  // Renew at a third of the lease: two renewals may fail (a control plane restart) before it runs out.
  const renewal = setInterval(() => {
    client.renew(claim.execution_id, claim.claim_id).catch((err: unknown) => {
      if (isRgridError(err) && err.code === 'conflict') {
        lost = true;
        log.warn('claim lost (lease expired or re-queued); stopping the run');
        abort.abort();
      } else {
        log.warn({ msg: (err as Error).message }, 'claim renewal failed; retrying');
      }
    });
  }, Math.max(200, Math.floor(claim.lease_ms / 3)));
  const outDir = join(deps.dataDir, 'worker-outputs', claim.execution_id);
  const stdout = new TailBuffer(LOG_MAX_BYTES);
  const stderr = new TailBuffer(LOG_MAX_BYTES);
  const timings: Record<string, number> = {};
  let unpin: () => void = () => undefined;
  let result: RunResult | undefined;
  let report: CompleteRequest;
  try {
    // ---- fetch: everything the run needs, from the blob cache or the control plane
    const fetchStart = Date.now();
    const needed = [claim.script_sha256, ...(claim.requirements_blob_sha256 ? [claim.requirements_blob_sha256] : []), ...claim.inputs.map((i) => i.sha256)];
    unpin = blobs.pin(needed);
    let downloaded = 0;
    let inputsPresent = true;
    const fetchOne = async (sha: string): Promise<string> => {
      try {
        const got = await blobs.ensure(sha, () => client.getBlob(claim.account, sha));
        if (got.downloaded) downloaded++;
        return got.path;
      } catch (err) {
        if (isRgridError(err) && TRANSIENT.has(err.code)) throw new Failure('retry', err.message);
        throw new Failure('input_unavailable', `blob ${sha}: ${(err as Error).message}`);
      }
    };
    for (const i of claim.inputs) if (!(await blobs.has(i.sha256))) inputsPresent = false;
    const scriptPath = await fetchOne(claim.script_sha256);
    const reqPath = claim.requirements_blob_sha256 ? await fetchOne(claim.requirements_blob_sha256) : null;
    const inputs = [];
    for (const i of claim.inputs) inputs.push({ name: i.name, sha256: i.sha256, size: i.size, path: await fetchOne(i.sha256) });
    timings.input_fetch_ms = Date.now() - fetchStart;
    const script = await readFile(scriptPath);
    const requirements = reqPath ? await readFile(reqPath) : null;
    if (requirements && requirementsDigest(requirements).sha256 !== claim.requirements_sha256) {
      throw new Failure('error', `the requirements blob does not canonicalize to requirements_sha256 ${claim.requirements_sha256}`);
    }

    // ---- run: ensure (single-flight) + container, the entry leased throughout
    const prepared = await deps.runner.prepare({
      account: claim.account, runtime: claim.runtime, script, requirements, inputs,
      timeout_s: claim.timeout_s ?? undefined, memory_mb: claim.memory_mb ?? undefined, collect_outputs: true,
    }).catch((err: unknown) => {
      throw new Failure(isRgridError(err) && TRANSIENT.has(err.code) ? 'retry' : 'error', (err as Error).message);
    });
    await mkdir(outDir, { recursive: true });
    const files = new Map<string, WriteStream>();
    const buildLog = new TailBuffer(64 * 1024);
    const onEvent = (e: RunEvent): void => {
      if (e.type === 'stdout') stdout.push(e.data);
      else if (e.type === 'stderr') stderr.push(e.data);
      else if (e.type === 'log') buildLog.push(`[${e.stage}] ${e.line}\n`);
      else if (e.type === 'output') writeChunk(files, outDir, e.name, e.data, e.eof);
    };
    try {
      result = await deps.runner.run(prepared, { onEvent, signal: abort.signal });
    } catch (err) {
      if (isRgridError(err) && err.code === 'build_failed') {
        const detail = err.detail ? `\n${JSON.stringify(err.detail)}` : '';
        throw new Failure('build_failed', err.message, `${buildLog.text()}${detail}`);
      }
      throw new Failure(isRgridError(err) && TRANSIENT.has(err.code) ? 'retry' : 'error', (err as Error).message);
    } finally {
      await Promise.all([...files.values()].map((f) => {
        if (!f.writableEnded) f.end();
        return finished(f);
      }));
    }
    if (result.built) await deps.onBuilt();
    timings.build_ms = result.build_ms;
    timings.run_ms = result.run_ms;
    if (lost) return { status: 'lost', built: result.built };
    if (stop.aborted) throw new Failure('retry', 'the agent is shutting down');

    // ---- outputs: blobs of the account, kept by a manifest so blob cleanup does not take them
    const uploadStart = Date.now();
    const outputs: OutputFile[] = [];
    for (const name of result.outputs) {
      const path = join(outDir, name);
      const { sha256, size } = await sha256File(path);
      await client.putBlob(claim.account, sha256, size, createReadStream(path));
      outputs.push({ name, sha256, size });
    }
    if (outputs.length > 0) {
      const unique = new Map(outputs.map((o) => [o.sha256, { name: o.sha256, sha256: o.sha256, size: o.size }]));
      await client.recordManifest(claim.account, [...unique.values()]);
    }
    timings.output_upload_ms = Date.now() - uploadStart;
    const failure: ExecutionFailure | null = result.timed_out ? 'timeout' : result.oom_killed ? 'memory_limit' : result.exit_code !== 0 ? 'nonzero_exit' : null;
    report = {
      claim_id: claim.claim_id, outcome: 'done', exit_code: result.exit_code, failure,
      error: result.timed_out ? `killed after the ${claim.timeout_s ?? 'default'} s timeout` : result.oom_killed ? 'killed: out of memory (memory limit)' : null,
      script_cache_hit: result.script_cache_hit, dependency_cache_hit: result.dependency_cache_hit,
      input_cache_hit: claim.inputs.length > 0 ? inputsPresent : null, downloaded_blobs: downloaded,
      timings, outputs, stdout: stdout.text(), stderr: stderr.text(), logs_truncated: stdout.truncated || stderr.truncated,
    };
  } catch (err) {
    if (lost) return { status: 'lost', built: result?.built ?? false };
    const f = err instanceof Failure ? err : new Failure('error', (err as Error).message);
    if (!(err instanceof Failure)) log.error({ err }, 'execution failed unexpectedly');
    report = f.failure === 'retry'
      ? { claim_id: claim.claim_id, outcome: 'retry', error: f.message }
      : {
          claim_id: claim.claim_id, outcome: 'done', failure: f.failure, error: f.message.slice(0, 4000), timings,
          stdout: stdout.text(), stderr: `${stderr.text()}${f.log ?? ''}`, logs_truncated: stdout.truncated || stderr.truncated,
        };
  } finally {
    clearInterval(renewal);
    stop.removeEventListener('abort', kill);
    unpin();
    await rm(outDir, { recursive: true, force: true });
  }
  return completeWithRetry(deps, claim, report, log, result?.built ?? false);
}

/** The result is the whole point of the work: retry a few times through a control plane restart. */
async function completeWithRetry(deps: ExecuteDeps, claim: ClaimedExecution, report: CompleteRequest, log: Logger, built: boolean): Promise<ExecuteOutcome> {
  for (let attempt = 1; ; attempt++) {
    try {
      const execution = await deps.client.complete(claim.execution_id, report);
      log.info({ status: execution.status, exit_code: execution.exit_code, outcome: report.outcome }, 'execution reported');
      return { status: report.outcome === 'retry' ? 'handed_back' : 'completed', built };
    } catch (err) {
      if (isRgridError(err) && err.code === 'conflict') {
        log.warn('claim lost before the result was reported; the execution runs again elsewhere');
        return { status: 'lost', built };
      }
      if (attempt >= 5 || !(isRgridError(err) && TRANSIENT.has(err.code))) throw err;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
  }
}

function writeChunk(files: Map<string, WriteStream>, dir: string, name: string, data: string, eof: boolean): void {
  let file = files.get(name);
  if (!file) {
    const path = join(dir, name);
    // Output names were checked segment by segment by the runner (no traversal); subdirectories are kept.
    if (!path.startsWith(`${dir}/`)) throw new RgridError('bad_file_name', `output ${name} escapes the output directory`);
    // Synchronous on purpose: the file must be open before the next chunk event arrives.
    mkdirSync(dirname(path), { recursive: true });
    file = createWriteStream(path);
    files.set(name, file);
  }
  if (data) file.write(Buffer.from(data, 'base64'));
  if (eof) file.end();
}

