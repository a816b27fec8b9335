/**
 * resolve's view of the live workers (control/placement/index.ts): kept fleetCacheMs, then answered with
 * while one read replaces it in the background (no request waits for that read), up to 2 × fleetCacheMs;
 * an older view, or none, is waited for. The database is an in-memory stand-in for the two queries
 * resolve sends (the SQL itself is covered by placement.int.test.ts against PostgreSQL); the clock is
 * vitest's.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createPlacement } from '../../control/placement/index.js';
import type { Db } from '../../control/db/pool.js';

interface Pending { resolve: () => void; reject: (err: Error) => void }

/** Fleet reads wait until released; each answers the workers `fleet` names at the time of release. */
function fakeDb() {
  const state = { fleet: ['w1'], reads: 0, pending: [] as Pending[] };
  const db = {
    query(config: { name?: string }) {
      if (config.name === 'rgrid-fleet') {
        state.reads++;
        return new Promise((resolve, reject) => {
          state.pending.push({
            resolve: () => resolve({ rows: state.fleet.map((worker_id) => ({ worker_id, capacity: 4, running: 0 })) }),
            reject,
          });
        });
      }
      return Promise.resolve({ rows: [{ image: null, deps: null, registry_image: null, registry_deps: null }] });
    },
  };
  const releaseAll = (): void => {
    for (const p of state.pending.splice(0)) p.resolve();
  };
  return { db: db as unknown as Db, state, releaseAll };
}

const body = { runtime: 'python3.11', script_sha256: 'a'.repeat(64) };
const config = { workerDeadAfterMs: 60_000, fleetCacheMs: 1000, placementLimit: 10, placementPullMbps: 100 };
/** Settles a resolve within the current turn's microtasks, or says it is still waiting. */
async function settledNow<T>(p: Promise<T>): Promise<T | 'waiting'> {
  return Promise.race([p, new Promise<'waiting'>((r) => setImmediate(() => r('waiting')))]);
}

describe('the fleet view resolve answers with', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_000_000);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is read once, kept fleetCacheMs, then refreshed in the background without a request waiting', async () => {
    const { db, state, releaseAll } = fakeDb();
    const placement = createPlacement(db, config);
    const first = placement.resolve('acme', body);
    expect(await settledNow(first)).toBe('waiting');
    releaseAll();
    expect((await first).live_workers).toBe(1);
    expect(state.reads).toBe(1);

    vi.setSystemTime(1_000_900);
    expect((await placement.resolve('acme', body)).live_workers).toBe(1);
    expect(state.reads).toBe(1);

    // Stale: answered at once from the old view, one read started (and only one for many requests).
    state.fleet = ['w1', 'w2'];
    vi.setSystemTime(1_001_200);
    const answers = await Promise.all([1, 2, 3].map(() => settledNow(placement.resolve('acme', body))));
    expect(answers.map((a) => (a === 'waiting' ? a : a.live_workers))).toEqual([1, 1, 1]);
    expect(state.reads).toBe(2);
    releaseAll();
    await new Promise((r) => setImmediate(r));
    // The new view replaces the old one, and is fresh from the time its read started.
    expect((await placement.resolve('acme', body)).live_workers).toBe(2);
    vi.setSystemTime(1_002_100);
    expect((await placement.resolve('acme', body)).live_workers).toBe(2);
    expect(state.reads).toBe(2);
  });

  it('waits for a new read once the view is older than 2 × fleetCacheMs', async () => {
    const { db, state, releaseAll } = fakeDb();
    const placement = createPlacement(db, config);
    const first = placement.resolve('acme', body);
    releaseAll();
    await first;
    state.fleet = [];
    vi.setSystemTime(1_002_000);
    const late = placement.resolve('acme', body);
    expect(await settledNow(late)).toBe('waiting');
    releaseAll();
    expect((await late).live_workers).toBe(0);
  });

  it('keeps the old view when the background read fails, and tries again on the next request', async () => {
    const { db, state, releaseAll } = fakeDb();
    const placement = createPlacement(db, config);
    const first = placement.resolve('acme', body);
    releaseAll();
    await first;
    vi.setSystemTime(1_001_500);
    await placement.resolve('acme', body);
    expect(state.reads).toBe(2);
    state.pending.splice(0).forEach((p) => p.reject(new Error('connection reset')));
    await new Promise((r) => setImmediate(r));
    expect((await placement.resolve('acme', body)).live_workers).toBe(1);
    expect(state.reads).toBe(3);
    releaseAll();
  });
});
