/**
 * `rgrid run` across a control-plane outage: the wait rides out dropped connections, a restart
 * (connection refused), 503 and 429, and the run ends with the script's own status; a submit that may
 * have reached the control plane is not repeated, one that provably did not is.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlApi } from '../../client/api.js';
import { isSafeToResubmit, isTransient, HttpStatusError, UnreachableError } from '../../client/retry.js';
import { runRemote } from '../../client/run.js';
import { exitStatusOf as exitStatus } from '../../common/executions.js';
import { startFakeControl, type FakeControl } from './fake-control.js';

let fake: FakeControl | undefined;
let api: ControlApi | undefined;
let root: string | undefined;
afterEach(async () => {
  await api?.close();
  await fake?.close();
  if (root) rmSync(root, { recursive: true, force: true });
  api = fake = root = undefined;
});

function script(): string {
  root = mkdtempSync(join(tmpdir(), 'rgrid-client-outage-'));
  const path = join(root, 'job.py');
  writeFileSync(path, 'import sys; sys.exit(3)\n');
  return path;
}

/** Short backoff bounds: the policy is the same, the test just does not wait seconds. */
const FAST = { initialDelayMs: 20, maxDelayMs: 300 };

const run = (path: string) => runRemote(api!, { script: path, inputs: [], runtime: 'python3.11', outputDir: join(root!, 'out'), progress: false });

describe('the wait rides out a control-plane outage', () => {
  it('through dropped connections, a restart, 503 and 429, then exits with the script status', async () => {
    fake = await startFakeControl({ exitCode: 3, stdout: 'done\n', pendingWaits: 1 });
    const control = fake;
    let waits = 0;
    control.intercept(async (req, res) => {
      if (!req.url?.includes('/wait')) return false;
      waits++;
      if (waits === 2) {
        // A restart: the listener goes away for a while, every connection is dropped.
        await control.goDown();
        setTimeout(() => void control.comeBack(), 1500);
        return true;
      }
      if (waits === 3 || waits === 4) {
        req.socket.destroy();
        return true;
      }
      if (waits === 5 || waits === 6) {
        res.writeHead(waits === 5 ? 503 : 429, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'unavailable', message: 'restarting' }));
        return true;
      }
      return false;
    });
    const notices: string[] = [];
    api = new ControlApi(control.url, 'rgrid_test_token', { ...FAST, retryForMs: 120_000, notice: (line) => notices.push(line) });
    const result = await run(script());
    expect(waits).toBeGreaterThanOrEqual(7);
    expect(result.stdout).toBe('done\n');
    expect(exitStatus(result.execution)).toBe(3);
    expect(notices.some((n) => /control plane unreachable, retrying/.test(n))).toBe(true);
    expect(notices.every((n) => !n.includes('\n'))).toBe(true);
    expect(control.requests.filter((r) => r.path === '/v1/executions/submit')).toHaveLength(1);
  });

  it('gives up with one error when retries are off (--retry-for 0)', async () => {
    fake = await startFakeControl({ exitCode: 3 });
    fake.intercept((req, res) => {
      if (!req.url?.includes('/wait')) return false;
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unavailable', message: 'restarting' }));
      return true;
    });
    api = new ControlApi(fake.url, 'rgrid_test_token', { retryForMs: 0 });
    await expect(run(script())).rejects.toMatchObject({ code: 'unavailable', status: 503 });
  });

  it('retries a blob download broken mid-body and writes the verified file', async () => {
    const content = Buffer.alloc(200_000, 9);
    fake = await startFakeControl({ outputs: [{ name: 'big.bin', content }] });
    let gets = 0;
    fake.intercept((req, res) => {
      if (req.method !== 'GET' || !req.url?.startsWith('/v1/blobs/')) return false;
      if (++gets > 1) return false;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': content.length });
      res.write(content.subarray(0, 1000), () => res.socket?.destroy());
      return true;
    });
    api = new ControlApi(fake.url, 'rgrid_test_token', { ...FAST, retryForMs: 60_000 });
    const result = await run(script());
    expect(result.outputsError).toBeUndefined();
    expect(gets).toBe(2);
  });
});

describe('a submit is repeated only when it cannot have reached the control plane', () => {
  it('is not repeated after a 503 (the execution may exist)', async () => {
    fake = await startFakeControl();
    fake.intercept((req, res) => {
      if (req.url !== '/v1/executions/submit') return false;
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unavailable', message: 'database unavailable' }));
      return true;
    });
    api = new ControlApi(fake.url, 'rgrid_test_token', { ...FAST, retryForMs: 60_000 });
    await expect(run(script())).rejects.toMatchObject({ code: 'unavailable' });
    expect(fake.requests.filter((r) => r.path === '/v1/executions/submit')).toHaveLength(1);
  });

  it('is repeated when the connection was refused (a restart between upload and submit)', async () => {
    fake = await startFakeControl({ exitCode: 0 });
    const control = fake;
    control.intercept(async (req, res) => {
      if (req.method !== 'PUT') return false;
      res.writeHead(201, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ sha256: 'a'.repeat(64), size_bytes: 1, created: true }));
      await control.goDown();
      setTimeout(() => void control.comeBack(), 1000);
      return true;
    });
    api = new ControlApi(control.url, 'rgrid_test_token', { ...FAST, retryForMs: 60_000 });
    const result = await run(script());
    expect(exitStatus(result.execution)).toBe(0);
    expect(control.requests.filter((r) => r.path === '/v1/executions/submit')).toHaveLength(1);
  });

  it('classifies failures: transient for idempotent calls, resubmittable only when nothing was sent', () => {
    const refused = new UnreachableError('http://x', Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }));
    const reset = new UnreachableError('http://x', Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    const unknownHost = new UnreachableError('http://x', Object.assign(new Error('dns'), { code: 'ENOTFOUND' }));
    const http = (status: number) => new HttpStatusError(status, status >= 500 ? 'unavailable' : 'bad_request', 'x');
    expect([refused, reset, http(500), http(502), http(503), http(429)].map(isTransient)).toEqual([true, true, true, true, true, true]);
    expect([unknownHost, http(400), http(401), http(404), http(409), new Error('x')].map(isTransient)).toEqual([false, false, false, false, false, false]);
    expect([refused, http(429)].map(isSafeToResubmit)).toEqual([true, true]);
    expect([reset, http(503), http(500)].map(isSafeToResubmit)).toEqual([false, false, false]);
  });
});
