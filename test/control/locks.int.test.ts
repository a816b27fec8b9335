/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Locks (common/lock.ts) on the control plane: the lock of a cached layer round-trips through snapshots
// (whole and in parts), op batches and the entries listing; the lock a run used is stored at complete
// and shown by GET, wait and list; a report the wire or the lock's own rules forbid is a 400 that
// changes nothing.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { build, call, createToken, entry, registerWorker, sha, snapshot, useTestDatabase } from './support.js';
import { claim, complete, renew, submitted, upload, world, type World } from './dispatch-support.js';

const db = useTestDatabase();
const L1 = sha('lock-1');
const L2 = sha('lock-2');
const L3 = sha('lock-3');

async function entryLocks(workerId: string): Promise<Record<string, string | null>> {
  const { rows } = await db.pool.query<{ kind: string; key: string; lock_sha256: string | null }>(
    'SELECT kind, key, lock_sha256 FROM cache_entries WHERE worker_id = $1 ORDER BY kind, key', [workerId],
  );
  return Object.fromEntries(rows.map((r) => [`${r.kind}:${r.key}`, r.lock_sha256]));
}

async function listedLocks(app: Awaited<ReturnType<typeof build>>, token: string, workerId: string): Promise<Record<string, string | null>> {
  const res = await call(app, 'GET', `/v1/workers/${workerId}/entries`, token);
  expect(res.statusCode).toBe(200);
  const entries = res.json<{ entries: { kind: string; key: string; lock_sha256: string | null }[] }>().entries;
  return Object.fromEntries(entries.map((e) => [`${e.kind}:${e.key}`, e.lock_sha256]));
}

describe('the lock of a cached layer through sync', () => {
  it('round-trips through a snapshot, a snapshot in parts and op batches; absent is null; the listing returns it', async () => {
    const app = await build(db);
    const worker = await createToken(app, 'lk-a', 'worker', 'lk-w1');
    const scheduler = await createToken(app, 'lk-a', 'scheduler');
    await registerWorker(app, worker, 'lk-w1');

    const deps = { ...entry({ account: 'lk-a', kind: 'deps' }), lock_sha256: L1 };
    const image = { ...entry({ account: 'lk-a', script: 's1' }), lock_sha256: L1 };
    const textKeyed = entry({ account: 'lk-a', kind: 'deps', requirements: sha('other-reqs') }); // no lock_sha256 at all
    const bare = entry({ account: 'lk-a', script: 's0', requirements: null });
    expect((await snapshot(app, worker, 'lk-w1', [deps, image, textKeyed, bare])).statusCode).toBe(200);
    const afterSnapshot = { [`deps:${deps.key}`]: L1, [`image:${image.key}`]: L1, [`deps:${textKeyed.key}`]: null, [`image:${bare.key}`]: null };
    expect(await entryLocks('lk-w1')).toEqual(afterSnapshot);
    expect(await listedLocks(app, worker, 'lk-w1')).toEqual(afterSnapshot);
    expect(await listedLocks(app, scheduler, 'lk-w1')).toEqual(afterSnapshot);

    // Ops: an upsert carries the whole entry (a new lock, or none); a touch leaves the lock alone.
    const ops = await call(app, 'POST', '/v1/workers/lk-w1/ops', worker, {
      ops: [
        { id: 'lk-1', type: 'upsert', ...deps, lock_sha256: L2 },
        { id: 'lk-2', type: 'upsert', ...image, lock_sha256: undefined },
        { id: 'lk-3', type: 'upsert', ...textKeyed, lock_sha256: L3 },
        { id: 'lk-4', type: 'touch', kind: 'deps', account: 'lk-a', key: textKeyed.key, count: 2, last_used_at: textKeyed.last_used_at },
      ],
    });
    expect(ops.statusCode, ops.body).toBe(200);
    const afterOps = { ...afterSnapshot, [`deps:${deps.key}`]: L2, [`image:${image.key}`]: null, [`deps:${textKeyed.key}`]: L3 };
    expect(await listedLocks(app, worker, 'lk-w1')).toEqual(afterOps);

    // A snapshot in two parts: each part's entries keep their locks; the final part removes the rest.
    const id = randomUUID();
    const part0 = await call(app, 'PUT', '/v1/workers/lk-w1/snapshot', worker, { entries: [{ ...deps, lock_sha256: L3 }], snapshot: { id, part: 0, final: false } });
    expect(part0.statusCode, part0.body).toBe(200);
    const part1 = await call(app, 'PUT', '/v1/workers/lk-w1/snapshot', worker, { entries: [{ ...image, lock_sha256: L2 }], snapshot: { id, part: 1, final: true } });
    expect(part1.statusCode, part1.body).toBe(200);
    expect(await listedLocks(app, worker, 'lk-w1')).toEqual({ [`deps:${deps.key}`]: L3, [`image:${image.key}`]: L2 });
  });

  it('refuses a lock that is not a sha256, or a lock without requirements, with 400, changing nothing', async () => {
    const app = await build(db);
    const worker = await createToken(app, 'lk-b', 'worker', 'lk-w2');
    await registerWorker(app, worker, 'lk-w2');
    const deps = { ...entry({ account: 'lk-b', kind: 'deps' }), lock_sha256: L1 };
    expect((await snapshot(app, worker, 'lk-w2', [deps])).statusCode).toBe(200);
    const before = await entryLocks('lk-w2');

    const noReqs = { ...entry({ account: 'lk-b', script: 'x', requirements: null }), lock_sha256: L2 };
    // A malformed digest is named as such (the naming contract's code); any other bad value is a bad request.
    const bad: [Record<string, unknown>, string][] = [
      [{ ...deps, lock_sha256: L2.toUpperCase() }, 'bad_digest'], [{ ...deps, lock_sha256: 'sha256:' + L2 }, 'bad_digest'],
      [{ ...deps, lock_sha256: 7 }, 'bad_digest'], [noReqs, 'bad_request'],
    ];
    for (const [e, error] of bad) {
      const snap = await snapshot(app, worker, 'lk-w2', [e]);
      expect(snap.statusCode, JSON.stringify(e.lock_sha256)).toBe(400);
      expect(snap.json()).toEqual({ error, message: expect.any(String) });
      const op = await call(app, 'POST', '/v1/workers/lk-w2/ops', worker, { ops: [{ id: `bad-${randomUUID()}`, type: 'upsert', ...e }] });
      expect(op.statusCode, JSON.stringify(e.lock_sha256)).toBe(400);
      expect(op.json()).toEqual({ error, message: expect.any(String) });
    }
    expect((await snapshot(app, worker, 'lk-w2', [noReqs])).json().message).toMatch(/names a lock without requirements/);
    expect(await entryLocks('lk-w2')).toEqual(before);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM sync_applied_ops WHERE worker_id = $1', ['lk-w2']);
    expect(rows).toEqual([{ n: 0 }]);
  });
});

/** An execution with requirements (its file uploaded), claimed by the world's worker. */
async function claimedWithRequirements(app: Awaited<ReturnType<typeof build>>, w: World): Promise<{ execution_id: string; claim_id: string }> {
  const requirementsBlob = await upload(app, w.client, Buffer.from('numpy>=2\nattrs\n'));
  const id = await submitted(app, w, { requirements_sha256: sha('reqs'), requirements_blob_sha256: requirementsBlob });
  const [c] = await claim(app, w.worker, w.workerId);
  expect(c!.execution_id).toBe(id);
  return c!;
}

interface LockColumns {
  status: string;
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: string | null;
  claim_id: string | null;
}

async function lockColumns(id: string): Promise<LockColumns> {
  const { rows } = await db.pool.query<LockColumns>('SELECT status, lock_sha256, resolved, resolution, claim_id FROM executions WHERE execution_id = $1', [id]);
  return rows[0]!;
}

describe('the lock a run used, reported at complete', () => {
  it('is stored (pins sorted) and shown by GET, wait and list; executions without one show null', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'lk-c', 'lk-w3');
    const plain = await submitted(app, w);
    const [p] = await claim(app, w.worker, w.workerId);
    expect((await complete(app, w.worker, w.workerId, p!, { exit_code: 0 })).statusCode).toBe(200);

    const c = await claimedWithRequirements(app, w);
    const res = await complete(app, w.worker, w.workerId, c, {
      exit_code: 0, dependency_cache_hit: false, lock_sha256: L1, resolved: ['numpy==2.1.0', 'attrs==24.2.0'], resolution: 'resolved',
    });
    expect(res.statusCode, res.body).toBe(200);
    const lock = { lock_sha256: L1, resolved: ['attrs==24.2.0', 'numpy==2.1.0'], resolution: 'resolved' };
    expect(res.json()).toMatchObject({ status: 'succeeded', ...lock });
    expect((await call(app, 'GET', `/v1/executions/${c.execution_id}`, w.client)).json()).toMatchObject(lock);
    expect((await call(app, 'GET', `/v1/executions/${c.execution_id}/wait?timeout_ms=0&logs=true`, w.client)).json()).toMatchObject(lock);
    const listed = (await call(app, 'GET', '/v1/executions', w.client)).json().executions;
    expect(listed.find((e: { id: string }) => e.id === c.execution_id)).toMatchObject(lock);
    const none = { lock_sha256: null, resolved: null, resolution: null };
    expect(listed.find((e: { id: string }) => e.id === plain)).toMatchObject(none);
    expect((await call(app, 'GET', `/v1/executions/${plain}`, w.client)).json()).toMatchObject(none);

    // A file that is its own lock: no pins reported is fine.
    const c2 = await claimedWithRequirements(app, w);
    const locked = await complete(app, w.worker, w.workerId, c2, { exit_code: 0, lock_sha256: L2, resolution: 'locked' });
    expect(locked.json()).toMatchObject({ lock_sha256: L2, resolved: null, resolution: 'locked' });
  });

  it('refuses values the wire or the lock forbid with 400 {error, message}, changing nothing; the claim stays held', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'lk-d', 'lk-w4');
    const c = await claimedWithRequirements(app, w);
    const before = await lockColumns(c.execution_id);
    expect(before).toMatchObject({ status: 'running', lock_sha256: null, resolved: null, resolution: null });
    const good = { lock_sha256: L1, resolved: ['numpy==2.1.0'], resolution: 'cached' };
    const bad: Record<string, unknown>[] = [
      { ...good, lock_sha256: L1.toUpperCase() },
      { ...good, lock_sha256: 'abc' },
      { ...good, resolution: 'fresh' },
      { ...good, resolution: 'Cached' },
      { ...good, resolved: ['numpy>=2'] },
      { ...good, resolved: ['Numpy==2.1.0'] },
      { ...good, resolved: ['numpy==2.1.0\u0000'] },
      { ...good, resolved: ['numpy==2.1.0\u001b[2J'] },
      { ...good, resolved: { numpy: '2.1.0' } },
      { ...good, resolved: [`numpy==${'1'.repeat(200)}`] },
      { ...good, resolved: Array.from({ length: 2001 }, (_, i) => `p${i}==1`) },
      { ...good, resolved: ['numpy==2.1.0', 'attrs==1', 'numpy==1.26.4'] },
      { lock_sha256: null, resolution: 'cached' },
      { resolved: ['numpy==2.1.0'] },
    ];
    for (const body of bad) {
      const res = await complete(app, w.worker, w.workerId, c, { exit_code: 0, ...body });
      const what = JSON.stringify(body).slice(0, 120);
      expect(res.statusCode, what).toBe(400);
      // A malformed digest is named as such (the naming contract's code); any other bad value is a bad request.
      const error = body.lock_sha256 !== undefined && body.lock_sha256 !== null && body.lock_sha256 !== L1 ? 'bad_digest' : 'bad_request';
      expect(res.json(), what).toEqual({ error, message: expect.any(String) });
      expect(await lockColumns(c.execution_id), what).toEqual(before);
    }
    expect((await renew(app, w.worker, w.workerId, c)).statusCode).toBe(200);

    // A lock for an execution without requirements describes nothing it installed.
    await submitted(app, w);
    const [plain] = await claim(app, w.worker, w.workerId);
    const plainBefore = await lockColumns(plain!.execution_id);
    const res = await complete(app, w.worker, w.workerId, plain!, { exit_code: 0, ...good });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ error: 'bad_request', message: 'lock_sha256 given for an execution without requirements' });
    expect(await lockColumns(plain!.execution_id)).toEqual(plainBefore);

    const ok = await complete(app, w.worker, w.workerId, c, { exit_code: 0, ...good });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(await lockColumns(c.execution_id)).toMatchObject({ status: 'succeeded', ...good });
  });

  it('has columns that refuse what the wire refuses, should a write ever bypass the schema', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'lk-e', 'lk-w5');
    const id = await submitted(app, w);
    for (const [column, value] of [
      ['lock_sha256', 'ABC'], ['resolution', 'fresh'], ['resolved', Array.from({ length: 2001 }, (_, i) => `p${i}==1`)], ['resolved', [`p==${'1'.repeat(400_000)}`]],
    ] as const) {
      await expect(db.pool.query(`UPDATE executions SET ${column} = $2 WHERE execution_id = $1`, [id, value]), column).rejects.toMatchObject({ code: '23514' });
    }
    expect((await snapshot(app, w.worker, w.workerId, [entry({ account: 'lk-e', kind: 'deps' })])).statusCode).toBe(200);
    await expect(db.pool.query("UPDATE cache_entries SET lock_sha256 = 'ABC' WHERE worker_id = $1", [w.workerId])).rejects.toMatchObject({ code: '23514' });
  });
});
