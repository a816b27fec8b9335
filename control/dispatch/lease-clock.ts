/**
 * Leases count only while the control plane can accept renewals. A claim's lease runs out when its
 * worker stops renewing it — but while no replica is up (all restarting, the database away) no worker
 * can renew anything, and without this the first sweep after a longer outage would re-queue every claim
 * whose worker was still running it and still trying to renew.
 *
 * Every replica ticks `dispatch_clock.last_alive_at` about once a second (control/dispatch/plugin.ts),
 * and each tick first measures the gap since the last tick of *any* replica. A gap longer than a few
 * ticks is time during which nobody could renew: every claim that still had lease left when that gap
 * began gets its expiry moved forward by the gap, so it keeps the lease it had when the control plane
 * went quiet — and at least one whole lease from now: a worker finds the control plane back only at its
 * next renewal attempt, and a claim that had seconds left when the outage began would otherwise expire
 * before its worker could get through (seen under load: the run then ran twice). The tick and the extension are one transaction on the clock's row: replicas tick one at a
 * time, and a sweep (which ticks first) never sees a claim the extension has not reached yet.
 *
 * Why this is safe with several replicas: one replica restarting while others run leaves no gap (the
 * others keep ticking), so nothing is extended. A claim whose worker is really gone is extended only
 * across real downtime, so it expires at most one lease after the control plane is back.
 */
import type pg from 'pg';

/** How often each replica ticks: often enough that a normal gap is far below a lease. */
export function clockTickMs(claimLeaseMs: number): number {
  return Math.max(50, Math.min(1000, Math.floor(claimLeaseMs / 4)));
}

/**
 * A gap longer than this is downtime. Two missed ticks and some slack: a tick delayed by load counts as
 * downtime only when it is late by whole seconds, and then extending leases by that much is harmless.
 */
export function downtimeAfterMs(tickMs: number): number {
  return 2 * tickMs + 250;
}

export interface TickResult {
  /** Milliseconds since the last tick of any replica. */
  gapMs: number;
  /** Claims whose lease was moved forward by the gap (0 unless the gap was downtime). */
  extended: number;
}

/** One tick, inside the caller's transaction (clock_timestamp: the time now, not the transaction's start). */
export async function tickLeaseClock(tx: pg.PoolClient, downtimeMs: number, leaseMs: number): Promise<TickResult> {
  await tx.query('INSERT INTO dispatch_clock (id, last_alive_at) VALUES (true, clock_timestamp()) ON CONFLICT (id) DO NOTHING');
  // Lock first, then read: the gap is measured after any other replica's tick has committed.
  await tx.query('SELECT 1 FROM dispatch_clock WHERE id FOR UPDATE');
  const { rows } = await tx.query<{ gap_ms: number }>(
    'SELECT greatest(0, extract(epoch FROM clock_timestamp() - last_alive_at) * 1000)::float8 AS gap_ms FROM dispatch_clock WHERE id',
  );
  const gapMs = rows[0]!.gap_ms;
  let extended = 0;
  if (gapMs > downtimeMs) {
    const res = await tx.query(
      `UPDATE executions SET claim_expires_at = greatest(
         claim_expires_at + make_interval(secs => $1::float8 / 1000),
         clock_timestamp() + make_interval(secs => $2::float8 / 1000))
       WHERE dispatch AND status = 'running' AND claim_expires_at > (SELECT last_alive_at FROM dispatch_clock WHERE id)`,
      [gapMs, leaseMs],
    );
    extended = res.rowCount ?? 0;
  }
  await tx.query('UPDATE dispatch_clock SET last_alive_at = greatest(last_alive_at, clock_timestamp()) WHERE id');
  return { gapMs, extended };
}
