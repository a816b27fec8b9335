/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Executions: create, get, list by account with the cache-hit flags and timings; hit
// rates per cache kind in /metrics. Plus the unauthenticated surface: /healthz, /readyz, /metrics,
// /docs/json.
import { describe, expect, it } from 'vitest';
import { build, call, createToken, registerWorker, sha, useTestDatabase } from './support.js';

const db = useTestDatabase();

describe('executions', () => {
  it('records finished executions with flags and timings, refuses unfinished ones, lists newest first with a cursor', async () => {
    const app = await build(db);
    const client = await createToken(app, 'ex', 'client');
    const sched = await createToken(app, 'ex', 'scheduler');
    const worker = await createToken(app, 'ex', 'worker', 'ex-w');
    await registerWorker(app, worker, 'ex-w');

    // A record outside dispatch is of a finished run: a queued/assigned/running one would never end.
    for (const status of [undefined, 'queued', 'assigned', 'running']) {
      const refused = await call(app, 'POST', '/v1/executions', client, { runtime: 'python3.11', script_sha256: sha('s'), ...(status ? { status } : {}) });
      expect(refused.statusCode).toBe(400);
      expect(refused.json().message).toContain('/v1/executions/submit');
    }
    expect((await call(app, 'GET', '/v1/executions', client)).json().executions).toEqual([]);

    const created = await call(app, 'POST', '/v1/executions', client, {
      runtime: 'python3.11', script_sha256: sha('s'), requirements_sha256: sha('r'), input_sha256: sha('i'), status: 'succeeded', worker_id: 'ex-w',
      exit_code: 0, script_cache_hit: false, dependency_cache_hit: true, input_cache_hit: true, timings: { queue_ms: 12, build_ms: 900.5, run_ms: 40 },
    });
    expect(created.statusCode).toBe(201);
    const e = created.json();
    expect(e).toMatchObject({
      account: 'ex', status: 'succeeded', worker_id: 'ex-w', exit_code: 0, script_cache_hit: false, dependency_cache_hit: true, input_cache_hit: true,
      timings: { queue_ms: 12, build_ms: 900.5, run_ms: 40 }, attempts: 0,
    });
    expect(e.finished_at).not.toBeNull();
    expect((await call(app, 'GET', `/v1/executions/${e.id}`, sched)).json()).toEqual(e);
    expect((await call(app, 'GET', `/v1/executions/${e.id}`, worker)).json().id).toBe(e.id);

    // Recorded in one call by a scheduler: three all-hit runs.
    for (let i = 0; i < 3; i++) {
      const r = await call(app, 'POST', '/v1/executions', sched, { runtime: 'python3.11', script_sha256: sha('s'), status: 'succeeded', exit_code: 0, script_cache_hit: true, dependency_cache_hit: true, input_cache_hit: true, timings: { run_ms: 30 } });
      expect(r.statusCode).toBe(201);
    }
    const page1 = (await call(app, 'GET', '/v1/executions?limit=3', client)).json();
    expect(page1.executions).toHaveLength(3);
    expect(page1.next_cursor).toEqual(expect.any(String));
    const page2 = (await call(app, 'GET', `/v1/executions?limit=3&cursor=${page1.next_cursor}`, client)).json();
    expect(page2.executions.map((x: { id: string }) => x.id)).toEqual([e.id]);
    expect(page2.next_cursor).toBeNull();
    const all = [...page1.executions, ...page2.executions].map((x: { created_at: string }) => x.created_at);
    expect([...all].sort().reverse()).toEqual(all);
    expect((await call(app, 'GET', '/v1/executions?status=running', client)).json().executions).toEqual([]);

    // Hit rates per cache kind: script 3/4, dependency 4/4, input 4/4.
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('rgrid_control_cache_hit_ratio{kind="script"} 0.75');
    expect(metrics).toContain('rgrid_control_cache_hit_ratio{kind="dependency"} 1');
    expect(metrics).toContain('rgrid_control_cache_hits{kind="script"} 3');
    expect(metrics).toContain('rgrid_control_cache_misses{kind="script"} 1');
    expect(metrics).toContain('rgrid_control_workers{state="live"} 1');
  });
});

describe('unauthenticated surface', () => {
  it('serves health, readiness, metrics and the OpenAPI document without a token', async () => {
    const app = await build(db);
    expect((await app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready' });
    const metrics = await app.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.statusCode).toBe(200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    expect(doc.openapi).toMatch(/^3\./);
    for (const path of ['/v1/resolve', '/v1/admin/tokens', '/v1/workers/{worker_id}/ops', '/v1/workers/{worker_id}/snapshot', '/v1/blobs/{sha256}', '/v1/manifests', '/v1/executions']) {
      expect(Object.keys(doc.paths)).toContain(path);
    }
    expect((await app.inject({ method: 'GET', url: '/v1/nowhere' })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/nowhere' })).json()).toMatchObject({ error: 'not_found' });
  });

  it('reports not ready when the database is unreachable, and never leaks a raw 5xx message', async () => {
    const app = await build(db, { databaseUrl: 'postgres://nobody:wrong@127.0.0.1:1/none' });
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    const res = await app.inject({ method: 'POST', url: '/v1/resolve', headers: { authorization: 'Bearer rgrid_x' }, payload: { runtime: 'python3.11', script_sha256: sha(1) } });
    // Unreachable is a temporary condition the caller retries, not an internal error.
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ error: 'unavailable', message: 'database unreachable; retry' });
  });
});
