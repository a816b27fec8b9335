/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-return --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Account isolation (a scheduler of A never sees B's entries, blobs or executions; a
// worker token cannot write as another worker), plus bad input: malformed digests, bad file names,
// foreign, unknown, expired and revoked tokens get the right status, and nothing changes.
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import { ADMIN_TOKEN, build, call, createToken, entry, registerWorker, sha, snapshot, useTestDatabase } from './support.js';

const db = useTestDatabase();

async function counts() {
  const { rows } = await db.pool.query(
    `SELECT (SELECT count(*) FROM cache_entries)::int AS entries, (SELECT count(*) FROM blobs)::int AS blobs,
            (SELECT count(*) FROM input_manifests)::int AS manifests, (SELECT count(*) FROM executions)::int AS executions,
            (SELECT count(*) FROM tokens)::int AS tokens, (SELECT count(*) FROM workers)::int AS workers,
            (SELECT count(*) FROM sync_applied_ops)::int AS ops`,
  );
  return rows[0];
}

describe('account isolation', () => {
  it('keeps accounts apart for entries, blobs, manifests and executions', async () => {
    const app = await build(db);
    const workerA = await createToken(app, 'A', 'worker', 'wa');
    const workerB = await createToken(app, 'B', 'worker', 'wb');
    const schedA = await createToken(app, 'A', 'scheduler');
    const schedB = await createToken(app, 'B', 'scheduler');
    const clientA = await createToken(app, 'A', 'client');
    const clientB = await createToken(app, 'B', 'client');
    await registerWorker(app, workerA, 'wa');
    await registerWorker(app, workerB, 'wb');
    // Same script, requirements and runtime in both accounts: keys are per account.
    expect((await snapshot(app, workerA, 'wa', [entry({ account: 'A' })])).statusCode).toBe(200);
    expect((await snapshot(app, workerB, 'wb', [entry({ account: 'B' })])).statusCode).toBe(200);

    const resolveA = (await call(app, 'POST', '/v1/resolve', schedA, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') })).json();
    expect(resolveA.image.workers).toEqual(['wa']);
    expect(resolveA.deps.workers).toEqual([]);
    const resolveB = (await call(app, 'POST', '/v1/resolve', schedB, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') })).json();
    expect(resolveB.image.workers).toEqual(['wb']);

    // Blobs: B uploads; A does not see it (HEAD/GET 404), and A's manifest lists it as missing.
    const bytes = Buffer.from('secret data of B\n');
    const digest = sha256Hex(bytes);
    const put = await app.inject({ method: 'PUT', url: `/v1/blobs/${digest}`, headers: { authorization: `Bearer ${clientB}`, 'content-type': 'application/octet-stream' }, payload: bytes });
    expect(put.statusCode).toBe(201);
    expect((await call(app, 'HEAD', `/v1/blobs/${digest}`, clientB)).statusCode).toBe(200);
    expect((await call(app, 'HEAD', `/v1/blobs/${digest}`, clientA)).statusCode).toBe(404);
    expect((await call(app, 'GET', `/v1/blobs/${digest}`, schedA)).statusCode).toBe(404);
    const manifestA = await call(app, 'POST', '/v1/manifests', clientA, { files: [{ name: 'b.txt', sha256: digest, size: bytes.length }] });
    expect(manifestA.json().missing).toEqual([digest]);
    // Naming another account explicitly is refused, not silently ignored.
    expect((await call(app, 'HEAD', `/v1/blobs/${digest}?account=B`, clientA)).statusCode).toBe(403);

    // Executions: B's execution is invisible to A (404 by id, absent from the list).
    const exec = await call(app, 'POST', '/v1/executions', clientB, { runtime: 'python3.11', script_sha256: sha('script'), status: 'succeeded', exit_code: 0 });
    expect(exec.statusCode).toBe(201);
    const id = exec.json().id as string;
    expect((await call(app, 'GET', `/v1/executions/${id}`, schedA)).statusCode).toBe(404);
    expect((await call(app, 'GET', '/v1/executions', schedA)).json().executions).toEqual([]);
    expect((await call(app, 'GET', `/v1/executions/${id}`, schedB)).json()).toMatchObject({ id, status: 'succeeded', account: 'B' });

    // Entries listing: a scheduler sees only its account's entries of a worker.
    expect((await call(app, 'GET', '/v1/workers/wb/entries', schedA)).json().entries).toEqual([]);
  });

  it('refuses a worker token acting as another worker or writing another account, changing nothing', async () => {
    const app = await build(db);
    const w1 = await createToken(app, 'C', 'worker', 'w1');
    const w2 = await createToken(app, 'C', 'worker', 'w2');
    await registerWorker(app, w1, 'w1');
    await registerWorker(app, w2, 'w2');
    await snapshot(app, w1, 'w1', [entry({ account: 'C', script: 'c1' })]);
    await snapshot(app, w2, 'w2', []);
    const before = await counts();
    const e = entry({ account: 'C', script: 'c2' });

    // w2's token writing as w1: 403 everywhere.
    expect((await snapshot(app, w2, 'w1', [e])).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/workers/w1/ops', w2, { ops: [{ id: 'x1', type: 'upsert', ...e }] })).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/workers/w1/register', w2, { host: 'evil', capacity: 1 })).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/workers/w1/heartbeat', w2, { load: { running: 0 } })).statusCode).toBe(403);
    // w1 writing entries of an account it does not serve: the whole batch is refused.
    const foreign = await call(app, 'POST', '/v1/workers/w1/ops', w1, {
      ops: [{ id: 'ok-looking', type: 'upsert', ...e }, { id: 'x2', type: 'upsert', ...entry({ account: 'A' }) }],
    });
    expect(foreign.statusCode).toBe(403);
    expect((await snapshot(app, w1, 'w1', [entry({ account: 'A' })], ['A'])).statusCode).toBe(403);
    // Other roles cannot use worker endpoints; workers cannot resolve or mint tokens.
    const sched = await createToken(app, 'C', 'scheduler');
    expect((await call(app, 'POST', '/v1/workers/w1/ops', sched, { ops: [{ id: 'x3', type: 'upsert', ...e }] })).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/resolve', w1, { runtime: 'python3.11', script_sha256: sha(1) })).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/admin/tokens', sched, { account: 'C', role: 'scheduler' })).statusCode).toBe(403);
    expect((await call(app, 'POST', '/v1/resolve', ADMIN_TOKEN, { runtime: 'python3.11', script_sha256: sha(1) })).statusCode).toBe(403);
    // Nothing changed (the only new row is the scheduler token itself).
    expect(await counts()).toEqual({ ...before, tokens: before!.tokens + 1 });
    const { rows } = await db.pool.query("SELECT host FROM workers WHERE worker_id = 'w1'");
    expect(rows[0].host).toBe('w1.test');
  });
});

describe('authentication and bad input', () => {
  it('answers 401 for missing, unknown, expired and revoked tokens', async () => {
    const app = await build(db);
    const body = { runtime: 'python3.11', script_sha256: sha(1) };
    expect((await call(app, 'POST', '/v1/resolve', null, body)).statusCode).toBe(401);
    expect((await call(app, 'POST', '/v1/resolve', 'rgrid_not-a-real-token', body)).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/v1/resolve', headers: { authorization: 'Basic abc' }, payload: body })).statusCode).toBe(401);

    const expired = await createToken(app, 'D', 'scheduler', undefined, { expires_at: new Date(Date.now() - 1000).toISOString() });
    expect((await call(app, 'POST', '/v1/resolve', expired, body)).statusCode).toBe(401);
    const future = await createToken(app, 'D', 'scheduler', undefined, { expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    expect((await call(app, 'POST', '/v1/resolve', future, body)).statusCode).toBe(200);

    const created = await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'D', role: 'client' });
    const { token, id } = created.json<{ token: string; id: string }>();
    expect((await call(app, 'GET', '/v1/executions', token)).statusCode).toBe(200);
    expect((await call(app, 'DELETE', `/v1/admin/tokens/${id}`, ADMIN_TOKEN)).json()).toMatchObject({ id, revoked: true });
    const revoked = await call(app, 'GET', '/v1/executions', token);
    expect(revoked.statusCode).toBe(401);
    expect(revoked.json()).toMatchObject({ error: 'unauthorized' });
    // Only a hash is stored.
    const { rows } = await db.pool.query('SELECT token_sha256 FROM tokens WHERE token_id = $1', [id]);
    expect(rows[0].token_sha256).toBe(sha256Hex(token));
    // Admin token mistakes.
    expect((await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'D', role: 'worker' })).statusCode).toBe(400);
    expect((await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'D', role: 'admin' })).statusCode).toBe(400);
    expect((await call(app, 'DELETE', '/v1/admin/tokens/00000000-0000-4000-8000-000000000000', ADMIN_TOKEN)).statusCode).toBe(404);
  });

  it('a token revoked through another replica stops working within tokenCacheMs; through this one at once', async () => {
    const a = await build(db, { tokenCacheMs: 60_000 });
    const b = await build(db, { tokenCacheMs: 300 });
    const created = await call(a, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'R', role: 'client' });
    const { token, id } = created.json<{ token: string; id: string }>();
    expect((await call(a, 'GET', '/v1/executions', token)).statusCode).toBe(200);
    expect((await call(b, 'GET', '/v1/executions', token)).statusCode).toBe(200);
    expect((await call(a, 'DELETE', `/v1/admin/tokens/${id}`, ADMIN_TOKEN)).statusCode).toBe(200);
    expect((await call(a, 'GET', '/v1/executions', token)).statusCode).toBe(401);
    // b still holds its lookup (at most 300 ms), then reads the revocation.
    await new Promise((r) => setTimeout(r, 350));
    expect((await call(b, 'GET', '/v1/executions', token)).statusCode).toBe(401);
    // A token that expires is never accepted past its expiry, whatever the cache time.
    const soon = await createToken(a, 'R', 'client', undefined, { expires_at: new Date(Date.now() + 1500).toISOString() });
    expect((await call(a, 'GET', '/v1/executions', soon)).statusCode).toBe(200);
    await new Promise((r) => setTimeout(r, 1600));
    expect((await call(a, 'GET', '/v1/executions', soon)).statusCode).toBe(401);
  });

  it('answers 400 for malformed digests, bodies and file names, and stores nothing', async () => {
    const app = await build(db);
    const client = await createToken(app, 'E', 'client');
    const sched = await createToken(app, 'E', 'scheduler');
    const worker = await createToken(app, 'E', 'worker', 'we');
    await registerWorker(app, worker, 'we');
    await snapshot(app, worker, 'we', []);
    const before = await counts();
    const upper = sha(1).toUpperCase();

    for (const script of [upper, 'abc', sha(1).slice(0, 63), `${sha(1)}0`, 42]) {
      const res = await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: script });
      expect(res.statusCode).toBe(400);
      // Named as a digest error, also for 42 (Fastify coerces it to the string "42").
      expect(res.json().error).toBe('bad_digest');
    }
    expect((await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11' })).statusCode).toBe(400);
    expect((await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha(1), extra: 1 })).statusCode).toBe(400);
    const badJson = await app.inject({ method: 'POST', url: '/v1/resolve', headers: { authorization: `Bearer ${sched}`, 'content-type': 'application/json' }, payload: '{"runtime":' });
    expect(badJson.statusCode).toBe(400);

    expect((await call(app, 'HEAD', `/v1/blobs/${upper}`, client)).statusCode).toBe(400);
    const putBad = await app.inject({ method: 'PUT', url: '/v1/blobs/not-a-digest', headers: { authorization: `Bearer ${client}` }, payload: Buffer.from('x') });
    expect(putBad.statusCode).toBe(400);

    for (const name of ['../etc/passwd', 'a/b.csv', '..', '', 'nul\u0000byte', 'x'.repeat(300)]) {
      const res = await call(app, 'POST', '/v1/manifests', client, { files: [{ name, sha256: sha(2), size: 1 }] });
      expect(res.statusCode, name).toBe(400);
      expect(['bad_file_name', 'bad_request']).toContain(res.json().error);
    }
    const badDigest = await call(app, 'POST', '/v1/manifests', client, { files: [{ name: 'a.csv', sha256: upper, size: 1 }] });
    expect(badDigest.json()).toMatchObject({ error: 'bad_digest' });
    const dup = await call(app, 'POST', '/v1/manifests', client, { files: [{ name: 'a.csv', sha256: sha(2), size: 1 }, { name: 'a.csv', sha256: sha(3), size: 1 }] });
    expect(dup.statusCode).toBe(400);
    const wrongInput = await call(app, 'POST', '/v1/manifests', client, { files: [{ name: 'a.csv', sha256: sha(2), size: 1 }], input_sha256: sha(9) });
    expect(wrongInput.statusCode).toBe(400);

    const badOp = await call(app, 'POST', '/v1/workers/we/ops', worker, { ops: [{ id: 'b1', type: 'upsert', ...entry({ account: 'E' }), key: 'XYZ' }] });
    expect(badOp.statusCode).toBe(400);
    const badTouch = await call(app, 'POST', '/v1/workers/we/ops', worker, { ops: [{ id: 'b2', type: 'touch', kind: 'image', account: 'E', key: sha(1), count: 0, last_used_at: new Date().toISOString() }] });
    expect(badTouch.statusCode).toBe(400);
    expect((await call(app, 'GET', '/v1/executions/not-a-uuid', client)).statusCode).toBe(400);
    expect((await call(app, 'GET', '/v1/executions/00000000-0000-4000-8000-000000000000', client)).statusCode).toBe(404);
    expect((await call(app, 'GET', '/v1/executions?cursor=garbage', client)).statusCode).toBe(400);

    expect(await counts()).toEqual(before);
  });
});
