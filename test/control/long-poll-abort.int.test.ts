// A long poll (claim, wait) whose client closes the connection stops at once: the admission plugin has
// already freed the token's slot, so polling on until the deadline would be unaccounted database work.
// Observed from outside the route: its debug line on a captured pino stream, the calls it makes per round
// (counted around the real execution service and repository), and the worker's last_seen_at in
// PostgreSQL, which a claim poll refreshes on every round.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { describe, expect, it, onTestFinished } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import { eventually } from '../fleet/helpers.js';
import { submitted, world } from './dispatch-support.js';
import { testConfig, useTestDatabase } from './support.js';

const db = useTestDatabase();

/** A listening app whose log lines (debug and up) are collected. */
async function listening(): Promise<{ app: FastifyInstance; port: number; lines: Array<Record<string, unknown>> }> {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  // The sweep is off so the only statements on executions are the ones the long poll makes.
  const config = testConfig(db, { claimWaitMaxMs: 60_000, dispatchSweepIntervalMs: 0, logLevel: 'debug' });
  const app = await buildControlApp(config, { logger: pino({ level: 'debug' }, stream) });
  onTestFinished(async () => {
    await app.close();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, port: (app.server.address() as AddressInfo).port, lines };
}

/** Opens a request and leaves it pending; the caller destroys it. */
function openRequest(port: number, method: string, path: string, token: string, body?: unknown): http.ClientRequest {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const req = http.request({
    host: '127.0.0.1', port, method, path,
    headers: { authorization: `Bearer ${token}`, ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
  });
  req.on('error', () => undefined);
  req.end(payload);
  return req;
}

/**
 * Counts the calls of `obj[method]` whose first `match.length` arguments equal `match`, still calling the
 * real method (the real database answers): how many rounds a long poll made.
 */
function countCalls<T extends object, K extends keyof T>(obj: T, method: K, match: (args: unknown[]) => boolean): () => number {
  const real = obj[method] as (...args: unknown[]) => unknown;
  let n = 0;
  (obj as Record<K, unknown>)[method] = (...args: unknown[]) => {
    if (match(args)) n++;
    return real.apply(obj, args);
  };
  return () => n;
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('long polls end when the client leaves', () => {
  it('claim: the loop stops claiming and touching the worker once the connection closes', async () => {
    const { app, port, lines } = await listening();
    const w = await world(app, 'abort-claim', 'w-abort-claim');
    const lastSeen = async (): Promise<number> =>
      (await db.pool.query<{ t: Date }>('SELECT last_seen_at AS t FROM workers WHERE worker_id = $1', [w.workerId])).rows[0]!.t.getTime();
    const rounds = countCalls(app.dispatch.executions, 'claim', ([worker]) => (worker as { workerId: string }).workerId === w.workerId);
    const before = await lastSeen();
    const req = openRequest(port, 'POST', `/v1/workers/${w.workerId}/claim`, w.worker, { max: 1, wait_ms: 60_000 });
    // The poll is running: a second round has refreshed the worker's last_seen_at.
    await eventually('the claim poll to refresh last_seen_at', async () => (rounds() >= 2 && (await lastSeen()) > before ? true : undefined), 15_000, 50);
    req.destroy();
    await eventually('the claim loop to end', () => Promise.resolve(lines.some((l) => l.msg === 'client left; claim long poll ended' && l.worker_id === w.workerId) ? true : undefined), 10_000, 50);
    const roundsAtEnd = rounds();
    const seenAtEnd = await lastSeen();
    // Several poll periods (one second each) later: no claim round ran, the worker was not touched.
    await pause(2500);
    expect(rounds()).toBe(roundsAtEnd);
    expect(await lastSeen()).toBe(seenAtEnd);
  });

  it('wait: the loop stops reading the execution once the connection closes', async () => {
    const { app, port, lines } = await listening();
    const w = await world(app, 'abort-wait', 'w-abort-wait');
    const id = await submitted(app, w);
    const reads = countCalls(app.repos.executions, 'get', ([, executionId]) => executionId === id);
    const req = openRequest(port, 'GET', `/v1/executions/${id}/wait?timeout_ms=60000`, w.client);
    // The poll is running: it has read the execution in two rounds.
    await eventually('the wait poll to read the execution', () => Promise.resolve(reads() >= 2 ? true : undefined), 15_000, 50);
    req.destroy();
    await eventually('the wait loop to end', () => Promise.resolve(lines.some((l) => l.msg === 'client left; wait long poll ended' && l.execution_id === id) ? true : undefined), 10_000, 50);
    const readsAtEnd = reads();
    // Several poll periods (one second each) later: the execution was not read again.
    await pause(2500);
    expect(reads()).toBe(readsAtEnd);
  });

  it('a client that stays gets its answer as before (the route still answers at its deadline)', async () => {
    const { app, lines } = await listening();
    const w = await world(app, 'abort-stay', 'w-abort-stay');
    const res = await app.inject({ method: 'POST', url: `/v1/workers/${w.workerId}/claim`, headers: { authorization: `Bearer ${w.worker}` }, payload: { max: 1, wait_ms: 300 } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ claims: [] });
    expect(lines.some((l) => l.msg === 'client left; claim long poll ended')).toBe(false);
  });
});
