/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Every transition of an execution through the control plane's API (inject against real PostgreSQL):
// submit → claim → renew → complete, a lost claim (409), the sweep re-queueing an expired claim,
// exhausted attempts; and the state machine has no other writer (no PATCH, no unfinished records).
// Lease expiry is simulated by moving a claim's expiry into the past: the sweep only compares it with
// the database clock, and waiting out a real lease would make the tests slow and timing-dependent.
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, createToken, registerWorker, useTestDatabase } from './support.js';
import { claim, complete, renew, row, submitted, world } from './dispatch-support.js';

const db = useTestDatabase();

/** The claim's lease ran out a minute ago (its worker stopped renewing). */
async function expire(id: string): Promise<void> {
  await db.pool.query("UPDATE executions SET claim_expires_at = now() - interval '1 minute' WHERE execution_id = $1", [id]);
}

describe('dispatch transitions', () => {
  it('submit places on a live worker; claim takes it under a lease; renew extends it; complete finishes it', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-a', 'tr-a-w');
    const id = await submitted(app, w, { memory_mb: 256, timeout_s: 30 });
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: 'tr-a-w', attempts: 0 });

    const [c] = await claim(app, w.worker, w.workerId);
    expect(c).toMatchObject({ execution_id: id, account: 'tr-a', attempt: 1, memory_mb: 256, timeout_s: 30, lease_ms: 30_000 });
    const claimed = await row(db, id);
    expect(claimed).toMatchObject({ status: 'running', worker_id: 'tr-a-w', claim_id: c!.claim_id, attempts: 1 });
    // Nothing else to claim: the execution is handed out once.
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);

    await db.pool.query("UPDATE executions SET claim_expires_at = now() + interval '1 second' WHERE execution_id = $1", [id]);
    const renewed = await renew(app, w.worker, w.workerId, c!);
    expect(renewed.statusCode).toBe(200);
    expect((await row(db, id)).lease_left_ms).toBeGreaterThan(20_000);

    const done = await complete(app, w.worker, w.workerId, c!, { exit_code: 0, stdout: 'hello\n', timings: { run_ms: 5 } });
    expect(done.statusCode, done.body).toBe(200);
    expect(done.json()).toMatchObject({ id, status: 'succeeded', exit_code: 0, failure: null, attempts: 1 });
    const waited = await call(app, 'GET', `/v1/executions/${id}/wait?timeout_ms=0&logs=true`, w.client);
    expect(waited.json()).toMatchObject({ status: 'succeeded', logs: { stdout: 'hello\n' } });
  });

  it('a renewal or result of a lost claim is a 409 claim_lost and changes nothing', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-b', 'tr-b-w');
    const id = await submitted(app, w);
    const [c] = await claim(app, w.worker, w.workerId);
    await expire(id);
    await app.dispatch.executions.sweep();
    const requeued = await row(db, id);
    expect(requeued).toMatchObject({ status: 'assigned', claim_id: null, attempts: 1 });

    for (const res of [
      await renew(app, w.worker, w.workerId, c!),
      await complete(app, w.worker, w.workerId, c!, { exit_code: 0 }),
      await complete(app, w.worker, w.workerId, c!, { outcome: 'retry', error: 'engine down' }),
    ]) {
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ error: 'conflict', detail: { claim_lost: true } });
    }
    expect(await row(db, id)).toEqual(requeued);

    // The next claim is a new attempt with a new claim id; the old id stays refused.
    const [again] = await claim(app, w.worker, w.workerId);
    expect(again).toMatchObject({ execution_id: id, attempt: 2 });
    expect(again!.claim_id).not.toBe(c!.claim_id);
    expect((await renew(app, w.worker, w.workerId, c!)).statusCode).toBe(409);
    expect((await renew(app, w.worker, w.workerId, again!)).statusCode).toBe(200);
    // Another worker of the account cannot renew or complete it: its token acts as its own worker only.
    const other = await createToken(app, 'tr-b', 'worker', 'tr-b-other');
    await registerWorker(app, other, 'tr-b-other');
    expect((await call(app, 'POST', `/v1/workers/tr-b-w/claims/${id}/renew`, other, { claim_id: again!.claim_id })).statusCode).toBe(403);
    expect((await call(app, 'POST', `/v1/workers/tr-b-other/claims/${id}/renew`, other, { claim_id: again!.claim_id })).statusCode).toBe(409);
  });

  it('the sweep re-queues an expired claim to another live worker and remembers who lost it', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-c', 'tr-c-1');
    const second = await createToken(app, 'tr-c', 'worker', 'tr-c-2');
    await registerWorker(app, second, 'tr-c-2');
    const id = await submitted(app, w);
    const first = (await row(db, id)).worker_id!;
    const firstToken = first === 'tr-c-1' ? w.worker : second;
    await claim(app, firstToken, first);

    // Not expired yet: the sweep leaves it alone.
    expect(await app.dispatch.executions.sweep()).toMatchObject({ expired: 0 });
    expect(await row(db, id)).toMatchObject({ status: 'running', worker_id: first });

    await expire(id);
    expect(await app.dispatch.executions.sweep()).toMatchObject({ expired: 1 });
    const other = first === 'tr-c-1' ? 'tr-c-2' : 'tr-c-1';
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: other, attempts: 1, lost_by: [first], claim_id: null });
    const [c] = await claim(app, other === 'tr-c-1' ? w.worker : second, other);
    expect(c).toMatchObject({ execution_id: id, attempt: 2 });
  });

  it('out of attempts, an expired claim or a handed-back one fails as lost', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-d', 'tr-d-w');
    const swept = await submitted(app, w, { max_attempts: 1 });
    await claim(app, w.worker, w.workerId);
    await expire(swept);
    await app.dispatch.executions.sweep();
    expect(await row(db, swept)).toMatchObject({ status: 'failed', failure: 'lost', attempts: 1, claim_id: null });
    const failed = await call(app, 'GET', `/v1/executions/${swept}`, w.client);
    expect(failed.json().error).toContain('gave up after 1 attempt(s)');
    expect(failed.json().finished_at).not.toBeNull();

    const handedBack = await submitted(app, w, { max_attempts: 2 });
    const [c1] = await claim(app, w.worker, w.workerId);
    expect((await complete(app, w.worker, w.workerId, c1!, { outcome: 'retry', error: 'engine unavailable' })).json()).toMatchObject({ status: 'assigned', attempts: 1 });
    const [c2] = await claim(app, w.worker, w.workerId);
    expect(c2).toMatchObject({ execution_id: handedBack, attempt: 2 });
    const last = await complete(app, w.worker, w.workerId, c2!, { outcome: 'retry', error: 'engine unavailable' });
    expect(last.json()).toMatchObject({ status: 'failed', failure: 'lost', attempts: 2 });
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);
  });
});

describe('claim and complete are the only writers of a submitted execution', () => {
  it('PATCH /v1/executions/:id does not exist: a worker cannot revive a finished execution, a scheduler cannot re-queue it', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-e', 'tr-e-w');
    const sched = await createToken(app, 'tr-e', 'scheduler');
    const id = await submitted(app, w);
    const [c] = await claim(app, w.worker, w.workerId);
    expect((await complete(app, w.worker, w.workerId, c!, { exit_code: 0 })).statusCode).toBe(200);
    const finished = await row(db, id);

    const revive = await call(app, 'PATCH', `/v1/executions/${id}`, w.worker, { status: 'running' });
    expect([403, 404, 405]).toContain(revive.statusCode);
    const requeue = await call(app, 'PATCH', `/v1/executions/${id}`, sched, { status: 'queued' });
    expect([403, 404, 405]).toContain(requeue.statusCode);
    const admin = await call(app, 'PATCH', `/v1/executions/${id}`, ADMIN_TOKEN, { status: 'queued' });
    expect([403, 404, 405]).toContain(admin.statusCode);
    expect(await row(db, id)).toEqual(finished);
    // It is not handed out again, and the wait returns at once.
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);
    expect((await call(app, 'GET', `/v1/executions/${id}/wait?timeout_ms=5000`, w.client)).json()).toMatchObject({ status: 'succeeded' });
  });

  it('POST /v1/executions cannot create a running or assigned row that nothing would end', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'tr-f', 'tr-f-w');
    for (const status of ['running', 'assigned', 'queued']) {
      const res = await call(app, 'POST', '/v1/executions', w.client, { runtime: 'python3.11', script_sha256: w.script, status, worker_id: w.workerId });
      expect(res.statusCode).toBe(400);
    }
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM executions WHERE account_id = 'tr-f'");
    expect(rows[0].n).toBe(0);
    // A finished record is never claimable.
    const recorded = await call(app, 'POST', '/v1/executions', w.client, { runtime: 'python3.11', script_sha256: w.script, status: 'failed', exit_code: 1 });
    expect(recorded.statusCode).toBe(201);
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);
  });
});
