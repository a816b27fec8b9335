/**
 * Helpers of the control-tier dispatch tests: a client and a registered worker of one account, a
 * script blob uploaded through the API, and submit / claim / renew / complete calls through inject.
 */
import { expect } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sha256Hex } from '../../common/digest.js';
import type { ClaimedExecution } from '../../common/wire/dispatch-api.js';
import { call, createToken, registerWorker, type TestDatabase } from './support.js';

export interface World {
  account: string;
  workerId: string;
  client: string;
  worker: string;
  script: string;
}

/** Uploads `bytes` as a blob of the token's account; returns its digest. */
export async function upload(app: FastifyInstance, token: string, bytes: Buffer): Promise<string> {
  const digest = sha256Hex(bytes);
  const res = await app.inject({
    method: 'PUT', url: `/v1/blobs/${digest}`, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, payload: bytes,
  });
  expect([200, 201]).toContain(res.statusCode);
  return digest;
}

/** An account with a client token, a registered worker (its first token binds it) and an uploaded script. */
export async function world(app: FastifyInstance, account: string, workerId: string): Promise<World> {
  const client = await createToken(app, account, 'client');
  const worker = await createToken(app, account, 'worker', workerId);
  await registerWorker(app, worker, workerId);
  const script = await upload(app, client, Buffer.from(`print("hello from ${account}")\n`));
  return { account, workerId, client, worker, script };
}

export async function submit(app: FastifyInstance, w: World, extra: Record<string, unknown> = {}): Promise<LightMyRequestResponse> {
  return call(app, 'POST', '/v1/executions/submit', w.client, { runtime: 'python3.11', script_sha256: w.script, ...extra });
}

/** Submits and expects 201; returns the execution id. */
export async function submitted(app: FastifyInstance, w: World, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await submit(app, w, extra);
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string }>().id;
}

/** One claim round that does not wait; expects 200. */
export async function claim(app: FastifyInstance, token: string, workerId: string, max = 1): Promise<ClaimedExecution[]> {
  const res = await call(app, 'POST', `/v1/workers/${workerId}/claim`, token, { max, wait_ms: 0 });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ claims: ClaimedExecution[] }>().claims;
}

export function renew(app: FastifyInstance, token: string, workerId: string, c: Pick<ClaimedExecution, 'execution_id' | 'claim_id'>): Promise<LightMyRequestResponse> {
  return call(app, 'POST', `/v1/workers/${workerId}/claims/${c.execution_id}/renew`, token, { claim_id: c.claim_id });
}

export function complete(
  app: FastifyInstance, token: string, workerId: string, c: Pick<ClaimedExecution, 'execution_id' | 'claim_id'>, body: Record<string, unknown>,
): Promise<LightMyRequestResponse> {
  return call(app, 'POST', `/v1/workers/${workerId}/claims/${c.execution_id}/complete`, token, { claim_id: c.claim_id, outcome: 'done', ...body });
}

/** The execution's row as dispatch sees it (status, lease, attempts), read straight from PostgreSQL. */
export interface DispatchRow {
  status: string; worker_id: string | null; claim_id: string | null; attempts: number; max_attempts: number; failure: string | null;
  lease_left_ms: number | null; lost_by: string[]; stdout: string | null; memory_mb: number | null; timeout_s: number | null;
}

export async function row(db: TestDatabase, id: string): Promise<DispatchRow> {
  const { rows } = await db.pool.query<DispatchRow>(
    `SELECT status, worker_id, claim_id, attempts, max_attempts, failure, lost_by, stdout, memory_mb, timeout_s,
       (extract(epoch FROM claim_expires_at - clock_timestamp()) * 1000)::float8 AS lease_left_ms
     FROM executions WHERE execution_id = $1`,
    [id],
  );
  return rows[0]!;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
