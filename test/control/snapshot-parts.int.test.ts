/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// A full snapshot sent in parts (PUT /v1/workers/:id/snapshot with `snapshot: {id, part, final}`) ends
// exactly like one snapshot of all its entries: nothing is removed before the final part, an abandoned
// snapshot removes nothing, a repeated part changes nothing, and a newer snapshot (or registration)
// supersedes an unfinished one, whose late parts are refused without effect.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { build, call, createToken, entry, registerWorker, snapshot, useTestDatabase } from './support.js';

const db = useTestDatabase();

type Entry = ReturnType<typeof entry>;

async function keys(workerId: string): Promise<string[]> {
  const { rows } = await db.pool.query<{ key: string }>('SELECT key FROM cache_entries WHERE worker_id = $1 ORDER BY key', [workerId]);
  return rows.map((r) => r.key);
}

async function table(workerId: string): Promise<unknown[]> {
  const { rows } = await db.pool.query<Record<string, unknown>>(
    'SELECT account_id, kind, key, image_id, use_count, last_used_at FROM cache_entries WHERE worker_id = $1 ORDER BY account_id, kind, key',
    [workerId],
  );
  return rows;
}

const sorted = (entries: Entry[]): string[] => entries.map((e) => e.key).sort();

interface Setup {
  app: FastifyInstance;
  token: string;
  worker: string;
  part(id: string, part: number, final: boolean, entries: Entry[], accounts?: string[]): ReturnType<typeof call>;
  heartbeat(): Promise<{ resync_required: boolean }>;
  touchOp(e: Entry, id: string): ReturnType<typeof call>;
}

async function setup(account: string, overrides: Parameters<typeof build>[1] = {}): Promise<Setup> {
  const app = await build(db, overrides);
  const worker = `w-${account}`;
  const token = await createToken(app, account, 'worker', worker);
  await registerWorker(app, token, worker);
  return {
    app,
    token,
    worker,
    part: (id, part, final, entries, accounts = [account]) =>
      call(app, 'PUT', `/v1/workers/${worker}/snapshot`, token, { accounts, entries, snapshot: { id, part, final } }),
    heartbeat: async () => (await call(app, 'POST', `/v1/workers/${worker}/heartbeat`, token, { load: { running: 0 } })).json(),
    touchOp: (e, id) =>
      call(app, 'POST', `/v1/workers/${worker}/ops`, token, { ops: [{ id, type: 'touch', kind: e.kind, account: e.account, key: e.key, count: 1, last_used_at: e.last_used_at }] }),
  };
}

const entries = (account: string, label: string, n: number): Entry[] =>
  Array.from({ length: n }, (_, i) => entry({ account, script: `${label}-${i}` }));

describe('snapshots in parts', () => {
  it('removes entries missing from the snapshot only when the final part arrives; deltas wait for it', async () => {
    const s = await setup('parts-final');
    const [a, b, c] = entries('parts-final', 'old', 3);
    expect((await snapshot(s.app, s.token, s.worker, [a!, b!, c!])).statusCode).toBe(200);
    expect(await s.heartbeat()).toMatchObject({ resync_required: false });

    const id = randomUUID();
    const changedA = { ...a!, image_id: `sha256:${'e'.repeat(64)}`, use_count: 9 };
    const [d, e] = entries('parts-final', 'new', 2);
    const p0 = await s.part(id, 0, false, [changedA]);
    expect(p0.statusCode).toBe(200);
    expect(p0.json()).toMatchObject({ entries: 1, removed: 0 });
    expect((await s.part(id, 1, false, [d!])).json()).toMatchObject({ entries: 2, removed: 0 });
    // Mid-snapshot: everything is still there (a's new version too), nothing removed.
    expect(await keys(s.worker)).toEqual(sorted([a!, b!, c!, d!]));
    // Deltas wait for the final part (its removal would undo them); a heartbeat asks for the snapshot.
    const early = await s.touchOp(changedA, 'op-mid');
    expect(early.statusCode).toBe(409);
    expect(early.json()).toMatchObject({ detail: { resync_required: true } });
    expect(await s.heartbeat()).toMatchObject({ resync_required: true });

    const last = await s.part(id, 2, true, [e!]);
    expect(last.statusCode).toBe(200);
    expect(last.json()).toMatchObject({ accounts: ['parts-final'], entries: 3, removed: 2 });
    expect(await keys(s.worker)).toEqual(sorted([changedA, d!, e!]));
    const rows = await table(s.worker);
    expect(rows.find((r) => (r as { key: string }).key === a!.key)).toMatchObject({ image_id: changedA.image_id, use_count: 9 });
    expect(await s.heartbeat()).toMatchObject({ resync_required: false });
    expect((await s.touchOp(changedA, 'op-after')).statusCode).toBe(200);
  });

  it('an abandoned snapshot removes nothing and is superseded by the next one', async () => {
    const s = await setup('parts-abandon');
    const old = entries('parts-abandon', 'old', 3);
    expect((await snapshot(s.app, s.token, s.worker, old)).statusCode).toBe(200);
    const abandoned = randomUUID();
    const [x, y] = entries('parts-abandon', 'abandoned', 2);
    expect((await s.part(abandoned, 0, false, [x!])).statusCode).toBe(200);
    expect((await s.part(abandoned, 1, false, [y!])).statusCode).toBe(200);
    // The agent died here: all old entries are still held, plus what the parts wrote.
    expect(await keys(s.worker)).toEqual(sorted([...old, x!, y!]));

    // The restarted agent registers and sends a new snapshot: it alone decides the result.
    await registerWorker(s.app, s.token, s.worker);
    const next = randomUUID();
    const [z, w] = entries('parts-abandon', 'next', 2);
    expect((await s.part(next, 0, false, [old[0]!, z!])).statusCode).toBe(200);
    const done = await s.part(next, 1, true, [w!]);
    expect(done.json()).toMatchObject({ entries: 3, removed: 4 });
    expect(await keys(s.worker)).toEqual(sorted([old[0]!, z!, w!]));

    // The abandoned snapshot's final part, arriving late, is refused and changes nothing.
    const before = await table(s.worker);
    const late = await s.part(abandoned, 2, true, []);
    expect(late.statusCode).toBe(409);
    expect(late.json()).toMatchObject({ error: 'conflict', detail: { resync_required: true } });
    expect(await table(s.worker)).toEqual(before);
  });

  it('applies a repeated part once, and a repeated part of a finished snapshot changes nothing', async () => {
    const s = await setup('parts-retry');
    const id = randomUUID();
    const [a, b, c] = entries('parts-retry', 'e', 3);
    expect((await s.part(id, 0, false, [a!, b!])).json()).toMatchObject({ entries: 2 });
    const afterFirst = await table(s.worker);
    // The answer was lost: the agent sends part 0 again. Same rows, counted once.
    const again = await s.part(id, 0, false, [a!, b!]);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ entries: 2, removed: 0 });
    expect(await table(s.worker)).toEqual(afterFirst);
    const final = await s.part(id, 1, true, [c!]);
    expect(final.json()).toMatchObject({ entries: 3, removed: 0 });

    // After the snapshot, a delta adds a hit and a new entry; then the final part's answer turns out
    // lost and it arrives again: the same answer, and the deltas stay.
    const d = entry({ account: 'parts-retry', script: 'delta' });
    const ops = await call(s.app, 'POST', `/v1/workers/${s.worker}/ops`, s.token, { ops: [{ id: 'op-d', type: 'upsert', ...d }] });
    expect(ops.statusCode).toBe(200);
    expect((await s.touchOp(a!, 'op-touch')).statusCode).toBe(200);
    const before = await table(s.worker);
    const repeat = await s.part(id, 1, true, [c!]);
    expect(repeat.statusCode).toBe(200);
    expect(repeat.json()).toMatchObject({ entries: 3, removed: 0 });
    expect(await s.part(id, 0, false, [{ ...a!, use_count: 0 }])).toMatchObject({ statusCode: 200 });
    expect(await table(s.worker)).toEqual(before);
    expect(await keys(s.worker)).toEqual(sorted([a!, b!, c!, d]));
  });

  it('a newer snapshot supersedes an unfinished older one; the older one’s parts are refused and change nothing', async () => {
    const s = await setup('parts-newest');
    const older = randomUUID();
    const newer = randomUUID();
    const olderEntries = entries('parts-newest', 'older', 3);
    const newerEntries = entries('parts-newest', 'newer', 2);
    expect((await s.part(older, 0, false, [olderEntries[0]!])).statusCode).toBe(200);
    expect((await s.part(newer, 0, false, [newerEntries[0]!])).statusCode).toBe(200);
    const snapshotState = await table(s.worker);
    // Interleaved parts of the older snapshot: the next one, a repeat of its first, and its final.
    for (const [part, final, list] of [[1, false, [olderEntries[1]!]], [0, false, [olderEntries[0]!]], [1, true, [olderEntries[2]!]]] as const) {
      const res = await s.part(older, part, final, [...list]);
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ detail: { resync_required: true } });
      expect(res.json().message).toMatch(/superseded/);
    }
    expect(await table(s.worker)).toEqual(snapshotState);
    const done = await s.part(newer, 1, true, [newerEntries[1]!]);
    expect(done.json()).toMatchObject({ entries: 2, removed: 1 });
    expect(await keys(s.worker)).toEqual(sorted(newerEntries));
  });

  it('refuses parts out of order, parts of a snapshot begun before the last registration, and inconsistent parts', async () => {
    const s = await setup('parts-order');
    const [a, b, c] = entries('parts-order', 'e', 3);
    const id = randomUUID();
    // A part other than 0 of a snapshot the control plane never saw begin.
    expect((await s.part(randomUUID(), 1, true, [a!])).statusCode).toBe(409);
    expect(await keys(s.worker)).toEqual([]);
    expect((await s.part(id, 0, false, [a!])).statusCode).toBe(200);
    // Part 2 before part 1: refused, nothing written (a lost part would make the final removal wrong).
    const skipped = await s.part(id, 2, true, [c!]);
    expect(skipped.statusCode).toBe(409);
    expect(skipped.json().message).toMatch(/arrived before part 1/);
    expect(await keys(s.worker)).toEqual([a!.key]);
    // Another set of accounts than part 0 named; a part applied as non-final sent again as final.
    const sharedAccounts = await s.part(id, 1, false, [], ['parts-order', 'someone-else']);
    expect(sharedAccounts.statusCode).toBe(403);
    expect((await s.part(id, 0, true, [a!])).statusCode).toBe(400);
    // A registration supersedes the snapshot begun before it.
    await registerWorker(s.app, s.token, s.worker);
    const stale = await s.part(id, 1, true, [b!]);
    expect(stale.statusCode).toBe(409);
    expect(stale.json().message).toMatch(/registration/);
    expect(await keys(s.worker)).toEqual([a!.key]);
    expect(await s.heartbeat()).toMatchObject({ resync_required: true });
  });

  it('refuses a part naming accounts other than its part 0 did', async () => {
    const app = await build(db);
    const worker = 'w-parts-accounts';
    const token = await createToken(app, 'parts-acc-a', 'worker', worker);
    const share = await call(app, 'POST', `/v1/admin/workers/${worker}/shares`, 'test-admin-token-0123456789abcdef', { account: 'parts-acc-b', reason: 'test' });
    expect(share.statusCode).toBe(201);
    await registerWorker(app, token, worker);
    const id = randomUUID();
    const put = (part: number, final: boolean, accounts: string[], list: Entry[]) =>
      call(app, 'PUT', `/v1/workers/${worker}/snapshot`, token, { accounts, entries: list, snapshot: { id, part, final } });
    expect((await put(0, false, ['parts-acc-a', 'parts-acc-b'], [entry({ account: 'parts-acc-b' })])).statusCode).toBe(200);
    const other = await put(1, true, ['parts-acc-a'], []);
    expect(other.statusCode).toBe(400);
    expect(other.json().message).toMatch(/other accounts/);
    // The same accounts in another order are the same set.
    expect((await put(1, true, ['parts-acc-b', 'parts-acc-a'], [entry({ account: 'parts-acc-a' })])).json()).toMatchObject({ entries: 2, removed: 0 });
  });

  it('checks the part info against the contract', async () => {
    const s = await setup('parts-input');
    const e = entry({ account: 'parts-input' });
    const bad = async (snapshotInfo: unknown) =>
      call(s.app, 'PUT', `/v1/workers/${s.worker}/snapshot`, s.token, { entries: [e], snapshot: snapshotInfo });
    for (const info of [
      { id: randomUUID().toUpperCase(), part: 0, final: true },
      { id: `urn:uuid:${randomUUID()}`, part: 0, final: true },
      { id: randomUUID(), part: -1, final: true },
      { id: randomUUID(), part: 2 ** 31, final: true },
      { id: randomUUID(), part: 0 },
      { id: randomUUID(), part: 0, final: true, extra: 1 },
    ]) {
      const res = await bad(info);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'bad_request' });
    }
    expect(await keys(s.worker)).toEqual([]);
  });

  it('takes a snapshot over the body limit in parts that each fit', async () => {
    const s = await setup('parts-limit', { snapshotBodyLimitBytes: 4096 });
    const all = entries('parts-limit', 'big', 24);
    const whole = await snapshot(s.app, s.token, s.worker, all);
    expect(whole.statusCode).toBe(413);
    const id = randomUUID();
    const size = 4;
    for (let i = 0; i < all.length; i += size) {
      const res = await s.part(id, i / size, i + size >= all.length, all.slice(i, i + size));
      expect(res.statusCode).toBe(200);
    }
    expect(await keys(s.worker)).toEqual(sorted(all));
    expect(await s.heartbeat()).toMatchObject({ resync_required: false });
  });
});
