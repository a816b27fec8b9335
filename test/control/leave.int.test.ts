/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// A worker whose agent is stopping leaves placement at once (POST /v1/workers/{id}/leave), not after the
// dead-after window: resolve and submit skip it while another worker serves the account, the work waiting
// in its queue is placed again, it claims nothing new, and it keeps renewing and completing the claims it
// holds. Heartbeats, renewals, results and sync batches (all sent while it drains) do not bring it back;
// registering (an agent that starts again) does. The dead-after window is 60 s in every test: the worker
// never looks dead here, so only the leave can take it out.
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, createToken, entry, registerWorker, snapshot, useTestDatabase } from './support.js';
import { claim, complete, renew, row, submitted, world, type World } from './dispatch-support.js';

const db = useTestDatabase();
const LIVE = { workerDeadAfterMs: 60_000, dispatchSweepIntervalMs: 0 };

const leave = (app: FastifyInstance, token: string, workerId: string, body?: unknown) => call(app, 'POST', `/v1/workers/${workerId}/leave`, token, body);

/** The world's worker holds the script's image: placement prefers it to any worker that would build. */
async function holdImage(app: FastifyInstance, w: World): Promise<void> {
  const held = { ...entry({ account: w.account, requirements: null, script: `held:${w.workerId}` }), script_sha256: w.script };
  expect((await snapshot(app, w.worker, w.workerId, [held])).statusCode).toBe(200);
}

async function resolve(app: FastifyInstance, scheduler: string, w: World) {
  const res = await call(app, 'POST', '/v1/resolve', scheduler, { runtime: 'python3.11', script_sha256: w.script });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ live_workers: number; image: { workers: string[] }; placement: Array<{ worker_id: string }> }>();
}

async function leavingAt(workerId: string): Promise<Date | null> {
  const { rows } = await db.pool.query<{ leaving_at: Date | null }>('SELECT leaving_at FROM workers WHERE worker_id = $1', [workerId]);
  return rows[0]!.leaving_at;
}

describe('a worker leaving', () => {
  it('is out of placement at once: its queue goes to the other worker, resolve and submit skip it although it holds the image', async () => {
    const app = await build(db, LIVE);
    const w = await world(app, 'lv-a', 'lv-a-hold');
    const otherToken = await createToken(app, 'lv-a', 'worker', 'lv-a-other');
    await registerWorker(app, otherToken, 'lv-a-other');
    await holdImage(app, w);
    const scheduler = await createToken(app, 'lv-a', 'scheduler');
    // Before: the holder is first, and a submission is assigned to it.
    expect((await resolve(app, scheduler, w)).placement[0]!.worker_id).toBe('lv-a-hold');
    const waiting = await submitted(app, w);
    expect(await row(db, waiting)).toMatchObject({ status: 'assigned', worker_id: 'lv-a-hold' });

    const res = await leave(app, w.worker, w.workerId);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ worker_id: 'lv-a-hold', reassigned: 1 });
    expect(new Date(res.json().leaving_at as string).getTime()).toBe((await leavingAt('lv-a-hold'))!.getTime());
    // Placed again by the leave itself, not an attempt: no sweep ran.
    expect(await row(db, waiting)).toMatchObject({ status: 'assigned', worker_id: 'lv-a-other', attempts: 0, lost_by: [] });

    const after = await resolve(app, scheduler, w);
    expect(after.live_workers).toBe(1);
    expect(after.image.workers).toEqual([]);
    expect(after.placement.map((p) => p.worker_id)).toEqual(['lv-a-other']);
    for (let i = 0; i < 4; i++) expect(await row(db, await submitted(app, w))).toMatchObject({ status: 'assigned', worker_id: 'lv-a-other' });

    // The admin listing says so, and the metrics count it apart from the live ones.
    const listed = (await call(app, 'GET', '/v1/admin/workers', ADMIN_TOKEN)).json().workers as Array<{ worker_id: string; leaving_at: string | null }>;
    expect(listed.find((x) => x.worker_id === 'lv-a-hold')!.leaving_at).toBe(res.json().leaving_at);
    expect(listed.find((x) => x.worker_id === 'lv-a-other')!.leaving_at).toBeNull();
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toContain('rgrid_control_workers{state="live"} 1');
    expect(metrics).toContain('rgrid_control_workers{state="leaving"} 1');
  });

  it('alone: its queue goes back to the shared one; it claims nothing new; work assigned to it after it left is re-placed by the sweep', async () => {
    const app = await build(db, LIVE);
    const w = await world(app, 'lv-b', 'lv-b-only');
    const id = await submitted(app, w);
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: 'lv-b-only' });
    // Asked twice (a retried request): the same time, nothing more to move. An empty body is accepted too.
    const first = await leave(app, w.worker, w.workerId, {});
    expect(first.json()).toMatchObject({ reassigned: 1 });
    const again = await leave(app, w.worker, w.workerId);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual({ ...first.json(), reassigned: 0 });
    expect(await row(db, id)).toMatchObject({ status: 'queued', worker_id: null, attempts: 0 });
    expect(await submitted(app, w).then((x) => row(db, x))).toMatchObject({ status: 'queued', worker_id: null });
    // Queued work of its account would be its to take: it is draining and takes none.
    expect(await claim(app, w.worker, w.workerId, 4)).toEqual([]);

    // A submission whose placement read the fleet just before the leave committed writes the leaving
    // worker down: the sweep moves it to a worker that takes work.
    await db.pool.query("UPDATE executions SET status = 'assigned', worker_id = 'lv-b-only' WHERE execution_id = $1", [id]);
    const newcomer = await createToken(app, 'lv-b', 'worker', 'lv-b-new');
    await registerWorker(app, newcomer, 'lv-b-new');
    expect(await app.dispatch.executions.sweep()).toMatchObject({ stranded: 1 });
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: 'lv-b-new', attempts: 0, lost_by: [] });
  });

  it('still renews and completes the claims it holds; heartbeats, sync batches and renewals do not bring it back, registering does', async () => {
    const app = await build(db, LIVE);
    const w = await world(app, 'lv-c', 'lv-c-w');
    const otherToken = await createToken(app, 'lv-c', 'worker', 'lv-c-o');
    await registerWorker(app, otherToken, 'lv-c-o');
    await holdImage(app, w);
    const scheduler = await createToken(app, 'lv-c', 'scheduler');
    const running = await submitted(app, w);
    const [c] = await claim(app, w.worker, w.workerId);
    expect(c).toMatchObject({ execution_id: running });

    const left = await leave(app, w.worker, w.workerId);
    expect(left.json()).toMatchObject({ reassigned: 0 });
    const since = await leavingAt('lv-c-w');
    expect(since).not.toBeNull();
    // Its claim is untouched and still its own.
    expect(await row(db, running)).toMatchObject({ status: 'running', worker_id: 'lv-c-w', claim_id: c!.claim_id });
    expect((await renew(app, w.worker, w.workerId, c!)).statusCode).toBe(200);
    expect((await call(app, 'POST', '/v1/workers/lv-c-w/heartbeat', w.worker, { load: { running: 1 } })).json()).toMatchObject({ known: true, resync_required: false });
    const op = { id: 'lv-c-op-1', type: 'touch', kind: 'image', account: 'lv-c', key: entry({ account: 'lv-c', requirements: null, script: 'held:lv-c-w' }).key, count: 1, last_used_at: new Date().toISOString() };
    expect((await call(app, 'POST', '/v1/workers/lv-c-w/ops', w.worker, { ops: [op] })).statusCode).toBe(200);
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);
    await app.dispatch.executions.sweep();

    expect(await leavingAt('lv-c-w')).toEqual(since);
    expect((await resolve(app, scheduler, w)).placement.map((p) => p.worker_id)).toEqual(['lv-c-o']);
    const meanwhile = await submitted(app, w);
    expect(await row(db, meanwhile)).toMatchObject({ worker_id: 'lv-c-o' });
    const done = await complete(app, w.worker, w.workerId, c!, { exit_code: 0, stdout: 'drained\n' });
    expect(done.statusCode, done.body).toBe(200);
    expect(done.json()).toMatchObject({ id: running, status: 'succeeded', attempts: 1 });

    // The agent starts again: it registers, and takes work from then on (it holds the image: first again).
    await registerWorker(app, w.worker, w.workerId);
    expect(await leavingAt('lv-c-w')).toBeNull();
    expect((await resolve(app, scheduler, w)).placement[0]!.worker_id).toBe('lv-c-w');
    expect(await row(db, await submitted(app, w))).toMatchObject({ worker_id: 'lv-c-w' });
  });

  it("acts for the token's own worker only; a worker the control plane does not know is told to register", async () => {
    const app = await build(db, LIVE);
    const w = await world(app, 'lv-d', 'lv-d-w');
    const stranger = await createToken(app, 'lv-d', 'worker', 'lv-d-x');
    const id = await submitted(app, w);

    const forOther = await leave(app, stranger, 'lv-d-w');
    expect(forOther.statusCode).toBe(403);
    expect(forOther.json()).toMatchObject({ error: 'forbidden' });
    expect((await leave(app, w.client, 'lv-d-w')).statusCode).toBe(403);
    expect(await leavingAt('lv-d-w')).toBeNull();
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: 'lv-d-w' });

    // lv-d-x never registered: nothing to leave, and no row appears for it.
    const unknown = await leave(app, stranger, 'lv-d-x');
    expect(unknown.statusCode).toBe(409);
    expect(unknown.json()).toMatchObject({ error: 'conflict', detail: { resync_required: true } });
    expect((await db.pool.query("SELECT 1 FROM workers WHERE worker_id = 'lv-d-x'")).rowCount).toBe(0);
  });
});
