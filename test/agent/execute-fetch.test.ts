/**
 * The worker fetches a claim's blobs several at a time (agent/worker/execute.ts): a run with many inputs
 * waits for the slowest few round trips, not their sum; and the first blob that cannot be had stops the
 * others and fails the claim before anything runs. The blob cache is the real one (LMDB and files in a
 * temporary directory); the control plane and the runner are in-memory fakes behind their interfaces.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import type { ClaimedExecution, CompleteRequest } from '../../common/wire/dispatch-api.js';
import { createBlobCache, type BlobCache } from '../../agent/worker/blob-cache.js';
import { BLOB_FETCH_CONCURRENCY, executeClaim, type ExecuteDeps } from '../../agent/worker/execute.js';
import type { Runner, RunRequest } from '../../agent/runner/run.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function blobCache(): BlobCache {
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-exec-fetch-'));
  const blobs = createBlobCache({ dataDir });
  cleanups.push(async () => {
    await blobs.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return blobs;
}

/** A control plane that hands out blobs only once `release` is called, counting downloads in flight. */
function heldBlobs(contents: Map<string, Buffer>, refuse?: string) {
  let inFlight = 0;
  let maxInFlight = 0;
  const aborted: string[] = [];
  const waiting: Array<() => void> = [];
  const reports: CompleteRequest[] = [];
  const client: ExecuteDeps['client'] = {
    async getBlob(_account, digest, call) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        if (digest === refuse) throw new RgridError('not_found', `no blob ${digest}`);
        await new Promise<void>((resolve, reject) => {
          waiting.push(resolve);
          call?.signal?.addEventListener('abort', () => {
            aborted.push(digest);
            reject(new Error('aborted'));
          }, { once: true });
        });
        return Readable.from([contents.get(digest)!]);
      } finally {
        inFlight--;
      }
    },
    renew: () => Promise.resolve({ lease_expires_at: new Date(Date.now() + 30_000).toISOString() } as never),
    complete: (_id, body) => {
      reports.push(body);
      return Promise.resolve(null);
    },
    putBlob: () => Promise.reject(new Error('no outputs expected')),
    recordManifest: () => Promise.reject(new Error('no outputs expected')),
  };
  return {
    client, reports, aborted,
    get maxInFlight() { return maxInFlight; },
    get inFlight() { return inFlight; },
    /** Lets every download waiting now go on. */
    releaseAll(): void {
      for (const go of waiting.splice(0)) go();
    },
  };
}

/** A runner that records what it was asked to run and succeeds. */
function recordingRunner(): Runner & { requests: RunRequest[]; runs: number } {
  const requests: RunRequest[] = [];
  const runner = {
    requests,
    runs: 0,
    prepare(request: RunRequest) {
      requests.push(request);
      return Promise.resolve({ ensure: {} as never, inputs: request.inputs, inputSha256: 'x', limits: { timeoutMs: 60_000 } as never, collectOutputs: false });
    },
    run() {
      runner.runs++;
      return Promise.resolve({
        exit_code: 0, image_id: 'sha256:x', image_key: 'k', deps_key: null, input_sha256: 'x', lock_sha256: null, resolved: null, resolution: null,
        script_cache_hit: true, dependency_cache_hit: null, built: false, image_origin: 'local' as const, build_ms: 0, run_ms: 1, total_ms: 1,
        outputs: [], output_limit: null, timed_out: false, oom_killed: false,
        phases: { hot: false, outputs_read: false, ensure_ms: 0, container_ms: 0, start_ms: 0, exec_ms: 0, after_exit_ms: 0 },
      });
    },
    active: 0,
    stats: () => ({ active: 0, cleaning: 0, hot: 0 }),
    spare: {} as never,
    drain: () => undefined,
    close: () => Promise.resolve(),
  };
  return runner;
}

function claimOf(script: Buffer, inputs: Buffer[]): ClaimedExecution {
  return {
    execution_id: randomUUID(), claim_id: randomUUID(), account: 'acme', runtime: 'python3.11', attempt: 1, lease_ms: 30_000,
    script_sha256: sha(script), requirements_sha256: null, requirements_blob_sha256: null,
    inputs: inputs.map((b, n) => ({ name: `in-${n}.txt`, sha256: sha(b), size: b.length })),
    timeout_s: null, memory_mb: null,
  } as unknown as ClaimedExecution;
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(check()).toBe(true);
}

describe('a claim\'s blobs', () => {
  it(`are fetched ${BLOB_FETCH_CONCURRENCY} at a time, and each reaches the run under its own name`, async () => {
    const script = Buffer.from('print("hi")\n');
    const inputs = Array.from({ length: 9 }, (_, n) => Buffer.from(`input number ${n}\n`));
    const contents = new Map([script, ...inputs].map((b) => [sha(b), b]));
    const plane = heldBlobs(contents);
    const runner = recordingRunner();
    const claim = claimOf(script, inputs);
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-exec-data-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const done = executeClaim({
      client: plane.client, blobs: blobCache(), runner, logger: pino({ level: 'silent' }), dataDir, blobMaxBytes: 1 << 20, onBuilt: () => Promise.resolve(),
    }, claim, new AbortController().signal);
    // The first downloads are all in flight before any of them has finished.
    await until(() => plane.inFlight === BLOB_FETCH_CONCURRENCY);
    while (runner.requests.length === 0) {
      plane.releaseAll();
      await new Promise((r) => setTimeout(r, 5));
    }
    const outcome = await done;
    expect(outcome.status).toBe('completed');
    expect(plane.maxInFlight).toBe(BLOB_FETCH_CONCURRENCY);
    const request = runner.requests[0]!;
    expect(request.script.toString()).toBe(script.toString());
    expect(request.inputs.map((i) => i.name)).toEqual(inputs.map((_, n) => `in-${n}.txt`));
    for (const [n, input] of request.inputs.entries()) {
      expect('path' in input && readFileSync(input.path).toString()).toBe(inputs[n]!.toString());
    }
    expect(plane.reports[0]).toMatchObject({ outcome: 'done', exit_code: 0, downloaded_blobs: 10 });
  });

  it('one that cannot be had stops the downloads in flight and fails the claim before anything runs', async () => {
    const script = Buffer.from('print("hi")\n');
    const inputs = Array.from({ length: 6 }, (_, n) => Buffer.from(`input ${n}\n`));
    const contents = new Map([script, ...inputs].map((b) => [sha(b), b]));
    const missing = sha(inputs[2]!);
    const plane = heldBlobs(contents, missing);
    const runner = recordingRunner();
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-exec-data-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const outcome = await executeClaim({
      client: plane.client, blobs: blobCache(), runner, logger: pino({ level: 'silent' }), dataDir, blobMaxBytes: 1 << 20, onBuilt: () => Promise.resolve(),
    }, claimOf(script, inputs), new AbortController().signal);
    expect(outcome.status).toBe('completed');
    expect(runner.requests).toHaveLength(0);
    expect(runner.runs).toBe(0);
    expect(plane.reports[0]).toMatchObject({ outcome: 'done', failure: 'input_unavailable' });
    expect(plane.reports[0]?.error).toContain(missing);
    // The script and the first inputs were waiting when the refusal came: they were called off.
    expect(plane.aborted.length).toBeGreaterThan(0);
    expect(plane.inFlight).toBe(0);
  });
});
