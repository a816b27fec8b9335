/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// A worker registers, syncs a snapshot, then deltas; a retried batch changes nothing
// the second time; the scheduler's resolve sees exactly the worker's entries.
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, createToken, entry, registerWorker, sha, snapshot, useTestDatabase } from './support.js';

const db = useTestDatabase();

async function tableState() {
  const { rows } = await db.pool.query(
    `SELECT worker_id, account_id, kind, key, use_count, last_used_at, image_id FROM cache_entries ORDER BY worker_id, account_id, kind, key`,
  );
  return rows;
}

describe('worker sync', () => {
  it('registers, takes a snapshot, applies deltas idempotently, and resolve sees exactly those entries', async () => {
    const app = await build(db);
    const worker = await createToken(app, 'acme', 'worker', 'w1');
    const scheduler = await createToken(app, 'acme', 'scheduler');

    // Deltas before registration: the control plane does not know the worker → resync.
    const early = await call(app, 'POST', '/v1/workers/w1/ops', worker, { ops: [{ id: 'x', type: 'delete', kind: 'image', account: 'acme', key: sha(1) }] });
    expect(early.statusCode).toBe(409);
    expect(early.json()).toMatchObject({ error: 'conflict', detail: { resync_required: true } });
    const hb0 = await call(app, 'POST', '/v1/workers/w1/heartbeat', worker, { load: { running: 0 } });
    expect(hb0.json()).toMatchObject({ known: false, resync_required: true });

    const reg = await call(app, 'POST', '/v1/workers/w1/register', worker, { host: 'w1.test', capacity: 4, load: { running: 1 } });
    expect(reg.statusCode).toBe(200);
    expect(reg.json()).toMatchObject({ worker_id: 'w1', known: false, snapshot_required: true, accounts: ['acme'] });

    // Registered but no snapshot yet: deltas are refused, heartbeat asks for a resync.
    const noSnap = await call(app, 'POST', '/v1/workers/w1/ops', worker, { ops: [{ id: 'x', type: 'delete', kind: 'image', account: 'acme', key: sha(1) }] });
    expect(noSnap.statusCode).toBe(409);

    const img = entry({ account: 'acme', script: 's1' });
    const deps = entry({ account: 'acme', kind: 'deps' });
    const other = entry({ account: 'acme', script: 's2' });
    const snap = await snapshot(app, worker, 'w1', [img, deps, other]);
    expect(snap.statusCode).toBe(200);
    expect(snap.json()).toMatchObject({ accounts: ['acme'], entries: 3, removed: 0 });
    const hb1 = await call(app, 'POST', '/v1/workers/w1/heartbeat', worker, { load: { running: 1 } });
    expect(hb1.json()).toMatchObject({ known: true, resync_required: false });

    const third = entry({ account: 'acme', script: 's3' });
    const batch = {
      ops: [
        { id: 'op-1', type: 'upsert', ...third },
        { id: 'op-2', type: 'touch', kind: 'image', account: 'acme', key: img.key, count: 1000, last_used_at: new Date(Date.now() + 1000).toISOString() },
        { id: 'op-3', type: 'delete', kind: 'image', account: 'acme', key: other.key },
        { id: 'op-4', type: 'touch', kind: 'image', account: 'acme', key: third.key, count: 5, last_used_at: third.last_used_at },
      ],
    };
    const first = await call(app, 'POST', '/v1/workers/w1/ops', worker, batch);
    expect(first.statusCode).toBe(200);
    expect(first.json()).toMatchObject({ applied: 4, duplicates: 0 });
    const afterFirst = await tableState();
    expect(afterFirst.map((r) => r.key).sort()).toEqual([img.key, deps.key, third.key].sort());
    expect(afterFirst.find((r) => r.key === img.key)?.use_count).toBe(1001);
    expect(afterFirst.find((r) => r.key === third.key)?.use_count).toBe(6);

    // The same batch again (the agent did not see the acknowledgement): nothing changes.
    const retry = await call(app, 'POST', '/v1/workers/w1/ops', worker, batch);
    expect(retry.statusCode).toBe(200);
    expect(retry.json()).toMatchObject({ applied: 0, duplicates: 4 });
    expect(await tableState()).toEqual(afterFirst);

    // A batch mixing a seen op and a new one applies only the new one.
    const mixed = await call(app, 'POST', '/v1/workers/w1/ops', worker, {
      ops: [batch.ops[1], { id: 'op-5', type: 'touch', kind: 'image', account: 'acme', key: img.key, count: 1, last_used_at: img.last_used_at }],
    });
    expect(mixed.json()).toMatchObject({ applied: 1, duplicates: 1 });
    expect((await tableState()).find((r) => r.key === img.key)?.use_count).toBe(1002);

    // resolve sees exactly the worker's entries: image s1 and its deps on w1, s2 gone, s3 present.
    const resolve = async (script: string) =>
      (await call(app, 'POST', '/v1/resolve', scheduler, { runtime: 'python3.11', script_sha256: sha(script), requirements_sha256: sha('reqs'), include_entries: true })).json();
    const r1 = await resolve('s1');
    expect(r1.image).toMatchObject({ cached: true, workers: ['w1'] });
    expect(r1.image.entries[0]).toMatchObject({ worker_id: 'w1', key: img.key, image_id: img.image_id, size_bytes: img.size_bytes });
    expect(r1.deps).toMatchObject({ cached: true, workers: ['w1'] });
    expect(r1.placement[0]).toMatchObject({ worker_id: 'w1' });
    expect((await resolve('s2')).image).toEqual({ cached: false, workers: [], entries: [] });
    expect((await resolve('s3')).image.workers).toEqual(['w1']);

    // The entries endpoint returns the worker's view as stored.
    const listed = await call(app, 'GET', '/v1/workers/w1/entries', worker);
    expect(listed.json().entries.map((e: { key: string }) => e.key).sort()).toEqual([img.key, deps.key, third.key].sort());

    // A new snapshot replaces: only `deps` remains.
    const snap2 = await snapshot(app, worker, 'w1', [deps]);
    expect(snap2.json()).toMatchObject({ entries: 1, removed: 2 });
    expect((await tableState()).map((r) => r.key)).toEqual([deps.key]);
  });

  it('keeps the order of ops inside one batch and ignores touches of deleted entries', async () => {
    const app = await build(db);
    const worker = await createToken(app, 'order', 'worker', 'w-order');
    await registerWorker(app, worker, 'w-order');
    expect((await snapshot(app, worker, 'w-order', [])).statusCode).toBe(200);
    const e = entry({ account: 'order', script: 'o1', useCount: 1 });
    const res = await call(app, 'POST', '/v1/workers/w-order/ops', worker, {
      ops: [
        { id: 'a', type: 'upsert', ...e },
        { id: 'b', type: 'delete', kind: 'image', account: 'order', key: e.key },
        { id: 'c', type: 'touch', kind: 'image', account: 'order', key: e.key, count: 3, last_used_at: e.last_used_at },
        { id: 'd', type: 'upsert', ...e, use_count: 2 },
        { id: 'e', type: 'touch', kind: 'image', account: 'order', key: e.key, count: 3, last_used_at: e.last_used_at },
      ],
    });
    expect(res.json()).toMatchObject({ applied: 5, duplicates: 0 });
    const { rows } = await db.pool.query('SELECT use_count FROM cache_entries WHERE worker_id = $1', ['w-order']);
    expect(rows).toEqual([{ use_count: 5 }]);
  });

  it('syncs a snapshot for one account without touching the worker’s entries of another', async () => {
    const app = await build(db);
    const a = await createToken(app, 'multi-a', 'worker', 'w-multi');
    // w-multi belongs to multi-a (its first token); the operator shares it with multi-b.
    const share = await call(app, 'POST', '/v1/admin/workers/w-multi/shares', ADMIN_TOKEN, { account: 'multi-b', reason: 'test' });
    expect(share.statusCode).toBe(201);
    await registerWorker(app, a, 'w-multi');
    // The owner's token serves both accounts; the worker names the accounts of its snapshot.
    const full = await snapshot(app, a, 'w-multi', [entry({ account: 'multi-a' }), entry({ account: 'multi-b' })]);
    expect(full.json()).toMatchObject({ accounts: ['multi-a', 'multi-b'], entries: 2 });
    const onlyA = await snapshot(app, a, 'w-multi', [], ['multi-a']);
    expect(onlyA.json()).toMatchObject({ removed: 1 });
    const { rows } = await db.pool.query('SELECT account_id FROM cache_entries WHERE worker_id = $1', ['w-multi']);
    expect(rows).toEqual([{ account_id: 'multi-b' }]);
  });
});
