import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildAgentApp, type DaemonPhase } from '../../agent/api/app.js';
import type { ImageCache } from '../../agent/builder/image-cache.js';
import { resolveConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import type { Runner } from '../../agent/runner/run.js';
import { RgridError } from '../../common/errors.js';

// Routes, NDJSON framing and the one error handler, through app.inject(). The cache and runner are
// stand-ins here (their engine behaviour is covered by the *.int.test.ts files against real Docker).
describe('agent socket API', () => {
  let dir: string;
  let index: AgentIndex;
  let phase: DaemonPhase;
  let ensureImpl: ImageCache['ensure'];
  let prepareImpl: ImageCache['prepare'];
  let app: ReturnType<typeof buildAgentApp>;

  const build = async (): Promise<void> => {
    const cache: ImageCache = {
      prepare: (r) => prepareImpl(r),
      ensure: (p, o) => ensureImpl(p, o),
      stats: () => ({ queued: 0, building: 0, inflight: 0 }),
      drain: () => Promise.resolve(),
      abandon: () => undefined,
      close: () => Promise.resolve(),
    };
    const runner = {
      active: 0, stats: () => ({ active: 0, cleaning: 1, hot: 2 }),
      prepare: async () => Promise.reject(new Error('unused')), run: async () => Promise.reject(new Error('unused')),
    } as unknown as Runner;
    app = buildAgentApp({
      config: resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { py: 'img' } }, {}),
      index,
      leases: createLeaseTable(),
      cache,
      runner,
      logger: pino({ level: 'silent' }),
      phase: () => phase,
      version: 'test',
      startedAt: Date.now(),
    });
    await app.ready();
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-api-'));
    index = createIndex({ path: join(dir, 'index') });
    phase = 'running';
    prepareImpl = async () => Promise.reject(new RgridError('unknown_runtime', 'unknown runtime "x"'));
    ensureImpl = async () => Promise.reject(new Error('unused'));
    await build();
  });

  afterEach(async () => {
    await app.close();
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('GET /v1/health reports the phase and counts', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/health' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ status: 'ok', phase: 'running', agent_id: index.agentId, entries: { image: 0, deps: 0 }, leases: [], runs_active: 0, runs: { active: 0, cleaning: 1, hot: 2 } });
  });

  it('GET /v1/entries renders the ls fields with ISO timestamps', async () => {
    await index.putBuilt({
      kind: 'deps', account: 'a', key: 'd'.repeat(64), image_id: 'sha256:x', image_tag: 't', runtime: 'py', base_image_id: 'sha256:b',
      script_sha256: null, requirements_sha256: 'r'.repeat(64), deps_key: 'd'.repeat(64), size_bytes: 5, created_at: 0, last_used_at: 1000, use_count: 1,
    });
    const res = await app.inject({ method: 'GET', url: '/v1/entries?kind=deps' });
    expect(res.json()).toEqual([
      expect.objectContaining({ kind: 'deps', key: 'd'.repeat(64), image_id: 'sha256:x', runtime: 'py', account: 'a', created_at: '1970-01-01T00:00:00.000Z', last_used_at: '1970-01-01T00:00:01.000Z', use_count: 1, size_bytes: 5 }),
    ]);
    expect((await app.inject({ method: 'GET', url: '/v1/entries?kind=image' })).json()).toEqual([]);
    expect((await app.inject({ method: 'GET', url: '/v1/entries?kind=bogus' })).statusCode).toBe(400);
  });

  it('maps a typed error found before streaming to its HTTP status and body', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: Buffer.from('x').toString('base64'), runtime: 'x' } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ error: 'unknown_runtime', message: 'unknown runtime "x"' });
  });

  it('rejects a body that does not match the schema, and bad base64', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { scrip: 'x' } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'bad_request' });
    const b64 = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: '%%%' } });
    expect(b64.json()).toMatchObject({ error: 'bad_request', message: 'script is not base64' });
  });

  it('streams NDJSON: progress events, then one result line', async () => {
    prepareImpl = () => Promise.resolve({} as Awaited<ReturnType<ImageCache['prepare']>>);
    ensureImpl = (_p, o) => {
      o?.onEvent?.({ type: 'log', stage: 'deps', line: 'Step 1/9' });
      return Promise.resolve({ result: { image_id: 'sha256:i', built: true } as unknown as Awaited<ReturnType<ImageCache['ensure']>>['result'] });
    };
    const res = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/x-ndjson/);
    expect(res.body.trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { type: 'log', stage: 'deps', line: 'Step 1/9' },
      { type: 'result', image_id: 'sha256:i', built: true },
    ]);
  });

  it('ends a started stream with an error line; fails with a plain HTTP error before any event', async () => {
    prepareImpl = () => Promise.resolve({} as Awaited<ReturnType<ImageCache['prepare']>>);
    const failure = new RgridError('build_failed', 'image build failed: ERROR: nope', { output_tail: ['ERROR: nope'] });
    ensureImpl = (_p, o) => {
      o?.onEvent?.({ type: 'log', stage: 'deps', line: 'Step 6/9' });
      return Promise.reject(failure);
    };
    const streamed = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(streamed.statusCode).toBe(200);
    expect(JSON.parse(streamed.body.trim().split('\n')[1]!)).toEqual({ type: 'error', error: 'build_failed', message: 'image build failed: ERROR: nope', detail: { output_tail: ['ERROR: nope'] } });
    ensureImpl = async () => Promise.reject(failure);
    const early = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(early.statusCode).toBe(422);
    expect(early.json()).toEqual({ error: 'build_failed', message: 'image build failed: ERROR: nope', detail: { output_tail: ['ERROR: nope'] } });
  });

  it('never leaks an internal error message', async () => {
    prepareImpl = () => Promise.resolve({} as Awaited<ReturnType<ImageCache['prepare']>>);
    ensureImpl = (_p, o) => {
      o?.onEvent?.({ type: 'log', stage: 'deps', line: 'Step 1/9' });
      return Promise.reject(new Error('ENOENT /secret/host/path'));
    };
    const streamed = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(streamed.body).not.toContain('secret');
    expect(JSON.parse(streamed.body.trim().split('\n')[1]!)).toMatchObject({ type: 'error', error: 'internal' });
    ensureImpl = async () => Promise.reject(new Error('ENOENT /secret/host/path'));
    const early = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(early.statusCode).toBe(500);
    expect(early.body).not.toContain('secret');
    expect(early.json()).toEqual({ error: 'internal', message: 'internal error (see the agent log)' });
  });

  it('answers 404 in the error shape, and 503 shutting_down while draining (health still answers)', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/nope' })).json()).toMatchObject({ error: 'not_found' });
    phase = 'draining';
    const res = await app.inject({ method: 'POST', url: '/v1/ensure', payload: { script: 'eA==' } });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ error: 'shutting_down' });
    expect((await app.inject({ method: 'GET', url: '/v1/health' })).json()).toMatchObject({ phase: 'draining' });
  });
});
