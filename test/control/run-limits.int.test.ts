/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Run limits set by the operator: memory_mb up to 1 TiB, timeout_s up to 7 days and max_attempts up to
// 20 used to reach the worker unchanged. Now a submission above its account's ceiling is refused with
// 400 naming the limit (nothing is recorded), and an account may have its own ceilings.
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, useTestDatabase } from './support.js';
import { claim, row, submit, submitted, world } from './dispatch-support.js';

const db = useTestDatabase();

async function executions(account: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM executions WHERE account_id = $1', [account]);
  return rows[0]!.n;
}

describe('run limits', () => {
  it('refuses a submission above the default ceilings with 400 naming the limit, and records nothing', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'rl-a', 'rl-a-w');
    for (const [limit, asked, ceiling] of [['memory_mb', 1_048_576, 4096], ['timeout_s', 7 * 86_400, 86_400], ['max_attempts', 20, 5]] as const) {
      const res = await submit(app, w, { [limit]: asked });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'bad_request', detail: { limit, requested: asked, ceiling } });
      expect(res.json().message).toContain(limit);
    }
    expect(await executions('rl-a')).toBe(0);

    // At the ceiling is allowed, and reaches the worker as asked.
    const id = await submitted(app, w, { memory_mb: 4096, timeout_s: 86_400, max_attempts: 5 });
    const [c] = await claim(app, w.worker, w.workerId);
    expect(c).toMatchObject({ execution_id: id, memory_mb: 4096, timeout_s: 86_400 });
    expect((await row(db, id)).max_attempts).toBe(5);
  });

  it('caps the default attempts by the ceiling', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0, maxAttempts: 4, runMaxAttempts: 2 });
    const w = await world(app, 'rl-b', 'rl-b-w');
    expect((await row(db, await submitted(app, w))).max_attempts).toBe(2);
    expect((await submit(app, w, { max_attempts: 3 })).statusCode).toBe(400);
  });

  it('an account’s own ceilings, set by the admin only, replace the defaults for that account alone', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const big = await world(app, 'rl-big', 'rl-big-w');
    const small = await world(app, 'rl-small', 'rl-small-w');
    const url = '/v1/admin/accounts/rl-big/run-limits';
    expect((await call(app, 'PUT', url, big.client, { memory_mb: 65_536 })).statusCode).toBe(403);
    expect((await call(app, 'PUT', url, ADMIN_TOKEN, { memory_mb: 2 ** 31 })).statusCode).toBe(400);
    expect((await call(app, 'PUT', url, ADMIN_TOKEN, { memory_mb: 8, reason: 'x' })).statusCode).toBe(400);

    const set = await call(app, 'PUT', url, ADMIN_TOKEN, { memory_mb: 65_536, max_attempts: 1, reason: 'genomics batch', by: 'carol' });
    expect(set.statusCode).toBe(200);
    expect(set.json()).toMatchObject({
      account: 'rl-big', ceilings: { memory_mb: 65_536, timeout_s: 86_400, max_attempts: 1 },
      overrides: { memory_mb: 65_536, timeout_s: null, max_attempts: 1 }, updated_by: 'admin:carol', reason: 'genomics batch',
    });
    expect((await submit(app, big, { memory_mb: 65_536 })).statusCode).toBe(201);
    expect((await submit(app, big, { memory_mb: 65_537 })).json()).toMatchObject({ detail: { limit: 'memory_mb', ceiling: 65_536 } });
    expect((await submit(app, big, { max_attempts: 2 })).statusCode).toBe(400);
    expect((await submit(app, small, { memory_mb: 65_536 })).statusCode).toBe(400);

    // A field left out keeps its setting; null returns it to the default.
    const partial = await call(app, 'PUT', url, ADMIN_TOKEN, { max_attempts: null });
    expect(partial.json().ceilings).toEqual({ memory_mb: 65_536, timeout_s: 86_400, max_attempts: 5 });
    const cleared = await call(app, 'DELETE', url, ADMIN_TOKEN);
    expect(cleared.json()).toMatchObject({ ceilings: { memory_mb: 4096 }, overrides: { memory_mb: null }, updated_at: null });
    expect((await submit(app, big, { memory_mb: 65_536 })).statusCode).toBe(400);
  });
});
