/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Valid-looking input that PostgreSQL refuses is a 400, never a 500: values past their column,
// NUL and lone surrogates in text and jsonb, leap seconds. First the reported cases through the real
// routes, then the safety net itself: real PostgreSQL errors of each class through the one error handler.
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { describe, expect, it, onTestFinished } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import { ADMIN_TOKEN, build, call, createToken, entry, registerWorker, sha, snapshot, testConfig, useTestDatabase } from './support.js';

const db = useTestDatabase();

function expect4xx(res: LightMyRequestResponse, status = 400): void {
  expect(res.statusCode, res.body).toBe(status);
  const body = res.json();
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
}

describe('values PostgreSQL would refuse, through the routes', () => {
  it('answers 400 for integers past their column, NUL and lone surrogates in stored text, and leap seconds', async () => {
    const app = await build(db);
    const client = await createToken(app, 'dbin', 'client');
    const scheduler = await createToken(app, 'dbin', 'scheduler');
    const worker = await createToken(app, 'dbin', 'worker', 'dbin-w1');
    await registerWorker(app, worker, 'dbin-w1');
    // Recorded executions are finished ones (only dispatch creates live ones).
    const run = { runtime: 'python3.11', script_sha256: sha('dbin-script'), status: 'succeeded' };

    expect4xx(await call(app, 'POST', '/v1/executions', client, { ...run, exit_code: 2 ** 31 }));
    expect4xx(await call(app, 'POST', '/v1/executions', client, { ...run, error: 'failed\u0000here' }));
    expect4xx(await call(app, 'POST', '/v1/executions', client, { ...run, timings: { 'run\u0000': 1 } }));
    const created = await call(app, 'POST', '/v1/executions', client, run);
    expect(created.statusCode).toBe(201);
    expect4xx(await call(app, 'POST', '/v1/executions', scheduler, { ...run, exit_code: -(2 ** 31) - 1 }));

    expect4xx(await call(app, 'POST', '/v1/workers/dbin-w1/heartbeat', worker, { load: { running: 2 ** 31 } }));
    expect4xx(await call(app, 'POST', '/v1/workers/dbin-w1/register', worker, { host: 'a\u0000b', capacity: 1 }));
    expect4xx(await call(app, 'POST', '/v1/workers/dbin-w1/register', worker, { host: 'x', capacity: 1, labels: { zone: '\ud800' } }));
    // jsonb free-form fields: PostgreSQL refuses NUL (\u0000) and lone surrogates inside JSON strings.
    for (const engine of [{ version: 'a\u0000b' }, { version: '\udc00' }, { nested: { deep: ['\u0000'] } }]) {
      const res = await call(app, 'POST', '/v1/workers/dbin-w1/register', worker, { host: 'x', capacity: 1, engine });
      expect(res.statusCode, res.body).toBeLessThan(500);
    }
    expect4xx(await snapshot(app, worker, 'dbin-w1', [{ ...entry({ account: 'dbin' }), size_bytes: 2 ** 63 }]));

    expect4xx(await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'dbin', role: 'client', description: 'a\u0000b' }));
    expect4xx(await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'dbin', role: 'client', expires_at: '2016-12-31T23:59:60Z' }));
    // A UUID in a form the validator's "uuid" format admits and PostgreSQL does not.
    expect4xx(await call(app, 'GET', '/v1/executions/urn:uuid:00000000-0000-0000-0000-000000000000', client));
    expect4xx(await call(app, 'DELETE', '/v1/admin/tokens/urn:uuid:00000000-0000-0000-0000-000000000000', ADMIN_TOKEN));
  });
});

describe('the error handler maps PostgreSQL errors', () => {
  /** The real app with one extra route that runs `sql` with `params` on the real database. */
  async function appWithQueryRoute(): Promise<FastifyInstance> {
    const app = await buildControlApp(testConfig(db), { logger: false });
    onTestFinished(() => app.close());
    app.post<{ Body: { setup?: string; sql: string; params?: unknown[] } }>('/test-query', async (request) => {
      const client = await app.db.connect();
      try {
        if (request.body.setup) await client.query(request.body.setup);
        await client.query(request.body.sql, request.body.params ?? []);
        return { ok: true };
      } finally {
        client.release();
      }
    });
    await app.ready();
    return app;
  }

  it('data exceptions, not-null and check violations → 400; unique and foreign-key violations → 409', async () => {
    const app = await appWithQueryRoute();
    const run = (sql: string, params?: unknown[], setup?: string) => app.inject({ method: 'POST', url: '/test-query', payload: { sql, params, setup } });
    const temp = 'CREATE TEMP TABLE IF NOT EXISTS t (id int PRIMARY KEY, n int NOT NULL CHECK (n > 0), p int REFERENCES t (id))';
    const cases: Array<[string, unknown[] | undefined, string | undefined, number, string]> = [
      ['SELECT $1::int', ['2147483648'], undefined, 400, '22003'], // numeric value out of range
      ['SELECT $1::bigint', ['9223372036854775808'], undefined, 400, '22003'],
      ['SELECT $1::text', ['a\u0000b'], undefined, 400, '22021'], // NUL is not valid UTF-8 text for PostgreSQL
      ['SELECT $1::jsonb', ['{"a":"\\u0000"}'], undefined, 400, '22P05'], // untranslatable character
      ['SELECT $1::uuid', ['urn:uuid:0'], undefined, 400, '22P02'], // invalid text representation
      ['SELECT $1::timestamptz', ['2016-13-01T00:00:00Z'], undefined, 400, '22008'],
      ['SELECT 1 / 0', undefined, undefined, 400, '22012'],
      ['INSERT INTO t (id, n) VALUES (1, NULL)', undefined, temp, 400, '23502'],
      ['INSERT INTO t (id, n) VALUES (1, -1)', undefined, temp, 400, '23514'],
      ['INSERT INTO t (id, n) VALUES (2, 1), (2, 1)', undefined, temp, 409, '23505'],
      ['INSERT INTO t (id, n, p) VALUES (3, 1, 99)', undefined, temp, 409, '23503'],
    ];
    for (const [sql, params, setup, status, state] of cases) {
      const res = await run(sql, params, setup);
      expect(res.statusCode, `${sql}: ${res.body}`).toBe(status);
      expect(Object.keys(res.json()).sort()).toEqual(['error', 'message']);
      expect(res.json().error).toBe(status === 400 ? 'bad_request' : 'conflict');
      if (status === 400) expect(res.json().message).toContain(state);
    }
    // Anything else from the database is still an internal error, with nothing of it in the answer.
    const other = await run('SELECT * FROM no_such_table');
    expect(other.statusCode).toBe(500);
    expect(other.json()).toEqual({ error: 'internal', message: 'internal error' });
  });

  it('an unreachable database → 503 with Retry-After, never a 500', async () => {
    const app = await build(db, { databaseUrl: 'postgres://nobody:wrong@127.0.0.1:1/none' });
    const res = await app.inject({ method: 'GET', url: '/v1/executions', headers: { authorization: 'Bearer rgrid_anything' } });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ error: 'unavailable', message: 'database unreachable; retry' });
    expect(res.headers['retry-after']).toBe('2');
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(503);
    expect(health.json()).toMatchObject({ status: 'unavailable' });
    expect(health.json().reason).not.toContain('wrong');
  });
});
