import type { Db, Queryable } from '../db/pool.js';
import type { CreateExecutionRequest, Execution } from '../../common/wire/control-api.js';
import { TERMINAL_STATUSES } from '../../common/executions.js';

const TERMINAL = TERMINAL_STATUSES;

export const COLUMNS = `execution_id AS id, account_id AS account, status, runtime, script_sha256, requirements_sha256,
  input_sha256, worker_id, exit_code, script_cache_hit, dependency_cache_hit, input_cache_hit, timings, error,
  lock_sha256, resolved, resolution, attempts, max_attempts, failure, downloaded_blobs, image_origin, outputs, created_at,
  updated_at, finished_at`;

export type Row = Omit<Execution, 'created_at' | 'updated_at' | 'finished_at'> & { created_at: Date; updated_at: Date; finished_at: Date | null };

export function toWire(r: Row): Execution {
  return { ...r, created_at: r.created_at.toISOString(), updated_at: r.updated_at.toISOString(), finished_at: r.finished_at?.toISOString() ?? null };
}

/** Keyset cursor over (created_at, id): stable under concurrent inserts, unlike OFFSET. */
export function encodeCursor(e: Execution): string {
  return Buffer.from(JSON.stringify([e.created_at, e.id])).toString('base64url');
}
export function decodeCursor(cursor: string): [string, string] | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string' && !Number.isNaN(Date.parse(v[0])) && /^[0-9a-f-]{36}$/.test(v[1])) {
      return [v[0], v[1]];
    }
  } catch {
    // fall through: a malformed cursor is reported by the caller
  }
  return undefined;
}

export function createExecutionRepository(db: Db) {
  return {
    /** A record of an execution run outside dispatch (the execution service admits finished ones only). */
    async create(account: string, body: CreateExecutionRequest, q: Queryable = db): Promise<Execution> {
      const status = body.status ?? 'queued';
      const { rows } = await q.query<Row>(
        `INSERT INTO executions (account_id, status, runtime, script_sha256, requirements_sha256, input_sha256, worker_id,
           exit_code, script_cache_hit, dependency_cache_hit, input_cache_hit, timings, error, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CASE WHEN $2 = ANY($14::text[]) THEN now() END)
         RETURNING ${COLUMNS}`,
        [
          account, status, body.runtime, body.script_sha256, body.requirements_sha256 ?? null, body.input_sha256 ?? null,
          body.worker_id ?? null, body.exit_code ?? null, body.script_cache_hit ?? null, body.dependency_cache_hit ?? null,
          body.input_cache_hit ?? null, JSON.stringify(body.timings ?? {}), body.error ?? null, TERMINAL,
        ],
      );
      return toWire(rows[0]!);
    },

    async get(account: string, id: string, q: Queryable = db): Promise<Execution | undefined> {
      const { rows } = await q.query<Row>(`SELECT ${COLUMNS} FROM executions WHERE execution_id = $1 AND account_id = $2`, [id, account]);
      return rows[0] && toWire(rows[0]);
    },

    async list(account: string, opts: { limit: number; after?: [string, string]; status?: string }, q: Queryable = db): Promise<Execution[]> {
      const { rows } = await q.query<Row>(
        `SELECT ${COLUMNS} FROM executions
         WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, execution_id) < ($2::timestamptz, $3::uuid))
           AND ($4::text IS NULL OR status = $4)
         ORDER BY created_at DESC, execution_id DESC LIMIT $5`,
        [account, opts.after?.[0] ?? null, opts.after?.[1] ?? null, opts.status ?? null, opts.limit],
      );
      return rows.map(toWire);
    },

    /** Hits and misses per cache kind over executions created within the window (for /metrics). */
    async hitCounts(windowMs: number, q: Queryable = db): Promise<Record<'script' | 'dependency' | 'input', { hits: number; misses: number }>> {
      const { rows } = await q.query<Record<string, number>>(
        `SELECT count(*) FILTER (WHERE script_cache_hit)::int AS script_hits, count(*) FILTER (WHERE NOT script_cache_hit)::int AS script_misses,
           count(*) FILTER (WHERE dependency_cache_hit)::int AS dependency_hits, count(*) FILTER (WHERE NOT dependency_cache_hit)::int AS dependency_misses,
           count(*) FILTER (WHERE input_cache_hit)::int AS input_hits, count(*) FILTER (WHERE NOT input_cache_hit)::int AS input_misses
         FROM executions WHERE created_at > now() - make_interval(secs => $1::float8 / 1000)`,
        [windowMs],
      );
      const r = rows[0] ?? {};
      const pair = (k: string) => ({ hits: r[`${k}_hits`] ?? 0, misses: r[`${k}_misses`] ?? 0 });
      return { script: pair('script'), dependency: pair('dependency'), input: pair('input') };
    },
  };
}
export type ExecutionRepository = ReturnType<typeof createExecutionRepository>;
