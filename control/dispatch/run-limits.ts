/**
 * Run limits: the most memory, time and attempts one submission may ask for, set by the operator. The
 * defaults are configuration (`runMaxMemoryMb`, `runMaxTimeoutS`, `runMaxAttempts`); an account may
 * have its own ceilings (table account_run_limits, set through the admin API), higher or lower. A request
 * above its account's ceiling is refused with 400 naming the limit — never clamped silently, so a
 * client never believes it got 64 GiB when it got 4. (The agent clamps again to its host's own bounds.)
 */
import { RgridError } from '../../common/errors.js';
import { shown } from '../../common/names.js';
import type { RunLimits, RunLimitsResponse, SetRunLimitsRequest } from '../../common/wire/tenancy-api.js';
import type { Queryable } from '../db/pool.js';

export interface RunLimitDefaults {
  runMaxMemoryMb: number;
  runMaxTimeoutS: number;
  runMaxAttempts: number;
  /** Attempts of a submission that names none. */
  maxAttempts: number;
}

interface OverrideRow {
  memory_mb: number | null;
  timeout_s: number | null;
  max_attempts: number | null;
  updated_at: Date;
  updated_by: string;
  reason: string | null;
}

export type Overrides = Pick<OverrideRow, 'memory_mb' | 'timeout_s' | 'max_attempts'>;

/** The account's ceilings: its own where set, the configured default otherwise. */
export function ceilingsOf(defaults: RunLimitDefaults, overrides: Overrides | undefined): RunLimits {
  return {
    memory_mb: overrides?.memory_mb ?? defaults.runMaxMemoryMb,
    timeout_s: overrides?.timeout_s ?? defaults.runMaxTimeoutS,
    max_attempts: overrides?.max_attempts ?? defaults.runMaxAttempts,
  };
}

/**
 * Checks a submission against the ceilings; returns the attempts it gets (its own, else the default
 * capped by the ceiling). Throws 400 naming the first limit exceeded.
 */
export function checkRunRequest(
  account: string,
  request: { memory_mb?: number | undefined; timeout_s?: number | undefined; max_attempts?: number | undefined },
  ceilings: RunLimits,
  defaultAttempts: number,
): { maxAttempts: number } {
  for (const limit of ['memory_mb', 'timeout_s', 'max_attempts'] as const) {
    const asked = request[limit];
    if (asked !== undefined && asked > ceilings[limit]) {
      throw new RgridError(
        'bad_request',
        `${limit} ${asked} is above the run limit of account ${shown(account)} (${limit} at most ${ceilings[limit]}; the operator sets it)`,
        { limit, requested: asked, ceiling: ceilings[limit] },
      );
    }
  }
  return { maxAttempts: request.max_attempts ?? Math.min(defaultAttempts, ceilings.max_attempts) };
}

export async function readOverrides(q: Queryable, account: string): Promise<OverrideRow | undefined> {
  const { rows } = await q.query<OverrideRow>(
    'SELECT memory_mb, timeout_s, max_attempts, updated_at, updated_by, reason FROM account_run_limits WHERE account_id = $1',
    [account],
  );
  return rows[0];
}

/** Fields absent from the request keep their current setting; null clears one back to the default. */
export async function writeOverrides(q: Queryable, account: string, body: SetRunLimitsRequest, updatedBy: string): Promise<void> {
  const has = (k: 'memory_mb' | 'timeout_s' | 'max_attempts'): boolean => Object.prototype.hasOwnProperty.call(body, k);
  await q.query('INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING', [account]);
  await q.query(
    `INSERT INTO account_run_limits (account_id, memory_mb, timeout_s, max_attempts, updated_by, reason)
     VALUES ($1, $3, $5, $7, $8, $9)
     ON CONFLICT (account_id) DO UPDATE SET
       memory_mb = CASE WHEN $2 THEN EXCLUDED.memory_mb ELSE account_run_limits.memory_mb END,
       timeout_s = CASE WHEN $4 THEN EXCLUDED.timeout_s ELSE account_run_limits.timeout_s END,
       max_attempts = CASE WHEN $6 THEN EXCLUDED.max_attempts ELSE account_run_limits.max_attempts END,
       updated_at = now(), updated_by = EXCLUDED.updated_by, reason = EXCLUDED.reason`,
    [account, has('memory_mb'), body.memory_mb ?? null, has('timeout_s'), body.timeout_s ?? null, has('max_attempts'), body.max_attempts ?? null, updatedBy, body.reason ?? null],
  );
}

export async function clearOverrides(q: Queryable, account: string): Promise<boolean> {
  const res = await q.query('DELETE FROM account_run_limits WHERE account_id = $1', [account]);
  return (res.rowCount ?? 0) > 0;
}

export async function describeLimits(q: Queryable, account: string, defaults: RunLimitDefaults): Promise<RunLimitsResponse> {
  const row = await readOverrides(q, account);
  return {
    account,
    ceilings: ceilingsOf(defaults, row),
    overrides: { memory_mb: row?.memory_mb ?? null, timeout_s: row?.timeout_s ?? null, max_attempts: row?.max_attempts ?? null },
    updated_at: row?.updated_at.toISOString() ?? null,
    updated_by: row?.updated_by ?? null,
    reason: row?.reason ?? null,
  };
}
