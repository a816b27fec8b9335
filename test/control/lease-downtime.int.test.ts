// Outages cost work: after a control-plane outage longer than the claim lease, the first sweep used to
// re-queue every claim whose worker was still running it (and still trying to renew). Leases now count
// only while some replica is up (control/dispatch/lease-clock.ts). Downtime is simulated by closing the
// app, waiting, and building a new one on the same database; PostgreSQL's clock keeps running meanwhile.
import { describe, expect, it } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import { checkContract, testConfig, useTestDatabase } from './support.js';
import { claim, complete, renew, row, sleep, submitted, world } from './dispatch-support.js';

const db = useTestDatabase();
const LEASE_MS = 3000;

async function open(overrides: Parameters<typeof testConfig>[1] = {}) {
  const app = await buildControlApp(testConfig(db, { claimLeaseMs: LEASE_MS, dispatchSweepIntervalMs: 0, ...overrides }), { logger: false });
  checkContract(app);
  await app.ready();
  return app;
}

async function expiry(id: string): Promise<string> {
  const { rows } = await db.pool.query<{ at: string }>('SELECT claim_expires_at::text AS at FROM executions WHERE execution_id = $1', [id]);
  return rows[0]!.at;
}

describe('lease accounting across control-plane downtime', () => {
  it('a claim survives a downtime longer than its lease: not re-queued, and its old claim id renews', async () => {
    const first = await open();
    const { w, id, c } = await (async () => {
      try {
        const w = await world(first, 'dt-a', 'dt-a-w');
        const id = await submitted(first, w);
        const [c] = await claim(first, w.worker, w.workerId);
        return { w, id, c: c! };
      } finally {
        await first.close();
      }
    })();

    // Every replica down for longer than the lease (and than the downtime threshold).
    await sleep(LEASE_MS + 2000);
    const { rows } = await db.pool.query<{ expired: boolean }>('SELECT claim_expires_at < now() AS expired FROM executions WHERE execution_id = $1', [id]);
    expect(rows[0]!.expired).toBe(true);

    const second = await open();
    try {
      // Starting extended the lease by the downtime: the sweep leaves the claim alone.
      expect(await second.dispatch.executions.sweep()).toMatchObject({ expired: 0 });
      expect(await row(db, id)).toMatchObject({ status: 'running', claim_id: c.claim_id, attempts: 1 });
      expect((await row(db, id)).lease_left_ms).toBeGreaterThan(0);
      const renewed = await renew(second, w.worker, w.workerId, c);
      expect(renewed.statusCode, renewed.body).toBe(200);
      expect((await complete(second, w.worker, w.workerId, c, { exit_code: 0 })).json()).toMatchObject({ status: 'succeeded', attempts: 1 });
    } finally {
      await second.close();
    }
  });

  it('a replica restarting while another runs extends nothing: a dead worker’s claim still expires', async () => {
    // The default lease (30 s): the running replica ticks every second, far inside the downtime threshold.
    const running = await open({ claimLeaseMs: 30_000 });
    try {
      const w = await world(running, 'dt-b', 'dt-b-w');
      const id = await submitted(running, w);
      await claim(running, w.worker, w.workerId);
      const before = await expiry(id);
      // Another replica restarts three times; the worker never renews.
      for (let i = 0; i < 3; i++) {
        const restarting = await open({ claimLeaseMs: 30_000 });
        await restarting.dispatch.executions.tickClock();
        await restarting.close();
      }
      expect(await expiry(id)).toBe(before);
      // Its lease runs out (moved into the past here rather than waited for): the sweep re-queues it.
      await db.pool.query("UPDATE executions SET claim_expires_at = now() - interval '1 second' WHERE execution_id = $1", [id]);
      expect(await running.dispatch.executions.sweep()).toMatchObject({ expired: 1 });
      expect(await row(db, id)).toMatchObject({ status: 'assigned', attempts: 1, lost_by: ['dt-b-w'] });
    } finally {
      await running.close();
    }
  });
  it('a claim with little lease left when the outage began gets a whole lease after it, to reach the worker', async () => {
    const first = await open();
    const { w, id, c } = await (async () => {
      try {
        const w = await world(first, 'dt-c', 'dt-c-w');
        const id = await submitted(first, w);
        const [c] = await claim(first, w.worker, w.workerId);
        // The worker's last renewal was long ago: 300 ms of the lease are left when every replica stops.
        await db.pool.query("UPDATE executions SET claim_expires_at = clock_timestamp() + interval '300 milliseconds' WHERE execution_id = $1", [id]);
        await first.dispatch.executions.tickClock();
        return { w, id, c: c! };
      } finally {
        await first.close();
      }
    })();
    await sleep(LEASE_MS + 1000);

    const second = await open();
    try {
      // Keeping only the 300 ms it had would let the first sweep take it before the worker's next
      // renewal attempt could find the control plane back; it gets a whole lease from now instead.
      expect((await row(db, id)).lease_left_ms).toBeGreaterThan(LEASE_MS - 1000);
      await sleep(1000);
      expect(await second.dispatch.executions.sweep()).toMatchObject({ expired: 0 });
      expect((await renew(second, w.worker, w.workerId, c)).statusCode).toBe(200);
      expect(await row(db, id)).toMatchObject({ status: 'running', attempts: 1 });
    } finally {
      await second.close();
    }
  });
});
