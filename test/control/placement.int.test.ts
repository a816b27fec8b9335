/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Placement ranks workers by what each would have to do (run, pull, build the script layer, pull
// the dependency layer, build everything) and by load, spreads when every worker can get the image
// cheaply, and skips dead workers.
import { describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { sha256Hex } from '../../common/digest.js';
import { ADMIN_TOKEN, build, call, createToken, entry, MB, registerWorker, sha, snapshot, useTestDatabase } from './support.js';
import { upload } from './dispatch-support.js';

const db = useTestDatabase();

interface Placement {
  worker_id: string;
  score: number;
  reasons: { factor: string; score: number; detail: string; estimate_s?: number }[];
}

async function setLoad(app: FastifyInstance, token: string, workerId: string, running: number): Promise<void> {
  const res = await call(app, 'POST', `/v1/workers/${workerId}/heartbeat`, token, { load: { running } });
  expect(res.statusCode).toBe(200);
}

describe('placement', () => {
  it('prefers the image holder, then the dependency holder, then the least loaded worker, weighing the small script layer against load', async () => {
    const app = await build(db);
    const sched = await createToken(app, 'p1', 'scheduler');
    const tokens: Record<string, string> = {};
    for (const w of ['a1', 'a2', 'a3', 'a4']) {
      tokens[w] = await createToken(app, 'p1', 'worker', w);
      await registerWorker(app, tokens[w], w, { capacity: 4 });
    }
    await snapshot(app, tokens.a1!, 'a1', [entry({ account: 'p1', kind: 'deps', size: 400 * MB })]);
    await snapshot(app, tokens.a2!, 'a2', [entry({ account: 'p1', size: 500 * MB }), entry({ account: 'p1', kind: 'deps', size: 400 * MB })]);
    await snapshot(app, tokens.a3!, 'a3', []);
    await snapshot(app, tokens.a4!, 'a4', []);
    // a2 holds the image but is the busiest; a4 is idle and holds nothing.
    await setLoad(app, tokens.a2!, 'a2', 3);
    await setLoad(app, tokens.a1!, 'a1', 1);
    await setLoad(app, tokens.a3!, 'a3', 2);
    await setLoad(app, tokens.a4!, 'a4', 0);

    const res = await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ placement: Placement[]; live_workers: number; image: { workers: string[] }; deps: { workers: string[] }; registry: unknown }>();
    expect(body.live_workers).toBe(4);
    expect(body.image.workers).toEqual(['a2']);
    expect(body.deps.workers).toEqual(['a1', 'a2']);
    expect(body.registry).toEqual({ image: false, deps: false });
    // a1 only builds the ~2 s script layer on its dependency layer and is far less loaded than a2 (1/4
    // against 3/4): it goes first. Both are far ahead of the workers that would build for a minute.
    expect(body.placement.map((p) => p.worker_id)).toEqual(['a1', 'a2', 'a4', 'a3']);
    const byId = new Map(body.placement.map((p) => [p.worker_id, p]));
    expect(byId.get('a2')!.reasons.map((r) => r.factor)).toEqual(['cost', 'load']);
    expect(byId.get('a2')!.reasons[0]).toMatchObject({ estimate_s: 0, detail: expect.stringMatching(/^script image present ≈ 0 s \(spread factor 0\.88: 1\/4 live workers/) as unknown });
    expect(byId.get('a1')!.reasons[0]).toMatchObject({ estimate_s: 2, detail: expect.stringMatching(/^dependency layer present, build the script layer ≈ 2 s/) as unknown });
    expect(byId.get('a4')!.reasons[0]).toMatchObject({ estimate_s: 60, score: 0 });
    for (const p of body.placement) expect(p.score).toBeCloseTo(p.reasons.reduce((s, r) => s + r.score, 0), 5);
    // limit bounds the list.
    const limited = await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs'), limit: 2 });
    expect(limited.json().placement.map((p: Placement) => p.worker_id)).toEqual(['a1', 'a2']);
    // At equal load the image holder is ahead of the dependency holder.
    await setLoad(app, tokens.a1!, 'a1', 3);
    const equal = await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') });
    expect(equal.json().placement.map((p: Placement) => p.worker_id)).toEqual(['a2', 'a1', 'a4', 'a3']);
  });

  it('spreads by load when every worker holds the image, with the image weight scaled down', async () => {
    const app = await build(db);
    const sched = await createToken(app, 'p2', 'scheduler');
    const ws = ['b1', 'b2', 'b3'];
    const tokens: Record<string, string> = {};
    for (const w of ws) {
      tokens[w] = await createToken(app, 'p2', 'worker', w);
      await registerWorker(app, tokens[w], w, { capacity: 4 });
      await snapshot(app, tokens[w], w, [entry({ account: 'p2', size: 500 * MB })]);
    }
    const resolve = async () =>
      (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') })).json<{ placement: Placement[] }>();

    await setLoad(app, tokens.b1!, 'b1', 2);
    await setLoad(app, tokens.b2!, 'b2', 0);
    await setLoad(app, tokens.b3!, 'b3', 1);
    const first = await resolve();
    expect(first.placement.map((p) => p.worker_id)).toEqual(['b2', 'b3', 'b1']);
    const imageScores = first.placement.map((p) => p.reasons.find((r) => r.factor === 'cost')!.score);
    expect(new Set(imageScores).size).toBe(1);
    expect(first.placement[0]!.reasons[0]!.detail).toMatch(/\(spread factor 0\.5: 3\/3 live workers can get the script image without building\)/);

    // As work lands on the top worker, the next placement moves on: a batch spreads over all holders.
    await setLoad(app, tokens.b2!, 'b2', 3);
    expect((await resolve()).placement[0]!.worker_id).toBe('b3');
    await setLoad(app, tokens.b3!, 'b3', 4);
    expect((await resolve()).placement[0]!.worker_id).toBe('b1');

    // With one holder among the three, the same image counts for more (spread factor near 1).
    const single = await createToken(app, 'p2', 'worker', 'b4');
    await registerWorker(app, single, 'b4', { capacity: 4 });
    await snapshot(app, single, 'b4', [entry({ account: 'p2', script: 'only-b4', size: 500 * MB })]);
    const lone = (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('only-b4'), requirements_sha256: sha('reqs') })).json<{ placement: Placement[] }>();
    expect(lone.placement[0]!.worker_id).toBe('b4');
    expect(lone.placement[0]!.reasons[0]!.score).toBeGreaterThan(imageScores[0]!);
  });

  it('skips dead workers, even when they hold the image', async () => {
    const app = await build(db, { workerDeadAfterMs: 60_000 });
    const sched = await createToken(app, 'p3', 'scheduler');
    const dead = await createToken(app, 'p3', 'worker', 'c-dead');
    const live = await createToken(app, 'p3', 'worker', 'c-live');
    await registerWorker(app, dead, 'c-dead');
    await registerWorker(app, live, 'c-live');
    await snapshot(app, dead, 'c-dead', [entry({ account: 'p3' })]);
    await snapshot(app, live, 'c-live', []);
    await db.pool.query("UPDATE workers SET last_seen_at = now() - interval '2 minutes' WHERE worker_id = 'c-dead'");

    const body = (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') })).json();
    // Only workers serving the account count (the other tests' workers are live but serve other accounts).
    expect(body.live_workers).toBe(1);
    expect(body.image).toEqual({ cached: false, workers: [] });
    expect(body.placement.map((p: Placement) => p.worker_id)).not.toContain('c-dead');
    expect(body.placement.map((p: Placement) => p.worker_id)).toContain('c-live');

    // A heartbeat brings it back.
    await call(app, 'POST', '/v1/workers/c-dead/heartbeat', dead, { load: { running: 0 } });
    const again = (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') })).json();
    expect(again.image.workers).toEqual(['c-dead']);
    expect(again.placement[0].worker_id).toBe('c-dead');
  });

  it('answers one holder per worker (its largest entry), only among live workers still serving the account', async () => {
    const app = await build(db, { workerDeadAfterMs: 60_000 });
    const sched = await createToken(app, 'p4', 'scheduler');
    const tokens: Record<string, string> = {};
    for (const w of ['d-two', 'd-one', 'd-dead', 'd-left']) {
      tokens[w] = await createToken(app, 'p4', 'worker', w);
      await registerWorker(app, tokens[w], w, { capacity: 4 });
    }
    // d-two holds two matching images (built on different base images) and the dependency layer.
    await snapshot(app, tokens['d-two']!, 'd-two', [
      entry({ account: 'p4', size: 100 * MB, key: sha('base-a') }),
      entry({ account: 'p4', size: 900 * MB, key: sha('base-b') }),
      entry({ account: 'p4', kind: 'deps', size: 300 * MB }),
    ]);
    await snapshot(app, tokens['d-one']!, 'd-one', [entry({ account: 'p4', size: 200 * MB })]);
    await snapshot(app, tokens['d-dead']!, 'd-dead', [entry({ account: 'p4' }), entry({ account: 'p4', kind: 'deps' })]);
    await snapshot(app, tokens['d-left']!, 'd-left', [entry({ account: 'p4' }), entry({ account: 'p4', kind: 'deps' })]);
    await db.pool.query("UPDATE workers SET last_seen_at = now() - interval '2 minutes' WHERE worker_id = 'd-dead'");
    // d-left stops serving p4 (its token is revoked) but its rows are still there.
    const listed = await call(app, 'GET', '/v1/admin/tokens?account=p4', ADMIN_TOKEN);
    const leftId = listed.json<{ tokens: { id: string; worker_id: string | null }[] }>().tokens.find((t) => t.worker_id === 'd-left')!.id;
    expect((await call(app, 'DELETE', `/v1/admin/tokens/${leftId}`, ADMIN_TOKEN)).statusCode).toBe(200);
    // Another account's scheduler sees none of it.
    const other = await createToken(app, 'p4-other', 'scheduler');

    const request = { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') };
    const body = (await call(app, 'POST', '/v1/resolve', sched, request)).json();
    expect(body.live_workers).toBe(2);
    expect(body.image).toEqual({ cached: true, workers: ['d-one', 'd-two'] });
    expect(body.deps).toEqual({ cached: true, workers: ['d-two'] });
    // Both run it now (holding the dependency layer as well saves d-two nothing more): the id breaks the tie.
    expect(body.placement.map((p: Placement) => p.worker_id)).toEqual(['d-one', 'd-two']);
    for (const p of body.placement as Placement[]) {
      expect(p.reasons[0]).toMatchObject({ estimate_s: 0, detail: expect.stringMatching(/^script image present ≈ 0 s \(spread factor 0\.5: 2\/2 live workers/) as unknown });
    }

    // include_entries lists every live entry (both of d-two's images), still none of the dead or departed.
    const detailed = (await call(app, 'POST', '/v1/resolve', sched, { ...request, include_entries: true })).json();
    expect(detailed.image.workers).toEqual(['d-one', 'd-two']);
    expect(detailed.image.entries.map((e: { worker_id: string; size_bytes: number }) => `${e.worker_id}:${e.size_bytes / MB}`).sort()).toEqual(['d-one:200', 'd-two:100', 'd-two:900']);
    expect(detailed.deps.entries.map((e: { worker_id: string }) => e.worker_id)).toEqual(['d-two']);
    expect(detailed.placement).toEqual(body.placement);

    const foreign = (await call(app, 'POST', '/v1/resolve', other, { ...request, include_entries: true })).json();
    expect(foreign.image).toEqual({ cached: false, workers: [], entries: [] });
    expect(foreign.deps).toEqual({ cached: false, workers: [], entries: [] });
    expect(foreign.live_workers).toBe(0);
  });

  it('ranks a worker that can pull the image from the registry above the busy holder, where building put it below', async () => {
    const app = await build(db);
    const sched = await createToken(app, 'p6', 'scheduler');
    const tokens: Record<string, string> = {};
    for (const w of ['e-holder', 'e-bare']) {
      tokens[w] = await createToken(app, 'p6', 'worker', w);
      await registerWorker(app, tokens[w], w, { capacity: 4 });
    }
    await snapshot(app, tokens['e-holder']!, 'e-holder', [entry({ account: 'p6', size: 500 * MB })]);
    await snapshot(app, tokens['e-bare']!, 'e-bare', []);
    await setLoad(app, tokens['e-holder']!, 'e-holder', 4);
    await setLoad(app, tokens['e-bare']!, 'e-bare', 0);
    const request = { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') };
    const resolve = async () => (await call(app, 'POST', '/v1/resolve', sched, request)).json<{ placement: Placement[]; registry: { image: boolean; deps: boolean } }>();

    // e-bare holds nothing and the registry has nothing: it must build for a minute, so the full holder wins.
    const before = await resolve();
    expect(before.registry).toEqual({ image: false, deps: false });
    expect(before.placement.map((p) => p.worker_id)).toEqual(['e-holder', 'e-bare']);
    expect(before.placement[1]!.reasons[0]).toMatchObject({ factor: 'cost', estimate_s: 60 });

    // Another worker pushed the image (and its dependency layer) to the registry: e-bare pulls 170 MB.
    const depsKey = sha('deps:python3.11:' + sha('reqs'));
    await db.pool.query(
      `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id,
                                    requirements_sha256, script_sha256, deps_key, pushed_by)
       VALUES ('p6', 'image', $1, '127.0.0.1:5000', $2, $3, 'python3.11', $4, $5, $6, $7, 'e-other'),
              ('p6', 'deps',  $7, '127.0.0.1:5000', $8, $9, 'python3.11', $4, $5, NULL, NULL, 'e-other')`,
      [sha('image-key'), `sha256:${sha('manifest')}`, 170 * MB, `sha256:${sha('base')}`, sha('reqs'), sha('script'), depsKey, `sha256:${sha('deps-manifest')}`, 400 * MB],
    );
    const after = await resolve();
    expect(after.registry).toEqual({ image: true, deps: true });
    expect(after.placement.map((p) => p.worker_id)).toEqual(['e-bare', 'e-holder']);
    expect(after.placement[0]!.reasons[0]).toMatchObject({
      factor: 'cost', estimate_s: 2.7, detail: expect.stringMatching(/^pull script image \(170 MB\) ≈ 2\.7 s \(spread factor 0\.5: 2\/2 live workers/) as unknown,
    });

    // Registry rows of another account, runtime or requirements are not this submission's.
    const other = await createToken(app, 'p6-other', 'scheduler');
    expect((await call(app, 'POST', '/v1/resolve', other, request)).json<{ registry: unknown }>().registry).toEqual({ image: false, deps: false });
    const noReqs = (await call(app, 'POST', '/v1/resolve', sched, { ...request, requirements_sha256: null })).json<{ registry: unknown }>();
    expect(noReqs.registry).toEqual({ image: false, deps: false });
    const otherRuntime = (await call(app, 'POST', '/v1/resolve', sched, { ...request, runtime: 'python3.12' })).json<{ registry: unknown }>();
    expect(otherRuntime.registry).toEqual({ image: false, deps: false });
  });

  it('prefers holders of the newest lock of the requirements; holders of an older lock rank below them, above workers that must build', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const sched = await createToken(app, 'p7', 'scheduler');
    const tokens: Record<string, string> = {};
    for (const w of ['f-new', 'f-old', 'f-bare', 'f-img-old', 'f-text']) {
      tokens[w] = await createToken(app, 'p7', 'worker', w);
      await registerWorker(app, tokens[w], w, { capacity: 4 });
    }
    const [L1, L2] = [sha('lock-1'), sha('lock-2')];
    const hoursAgo = (h: number): string => new Date(Date.now() - h * 3600_000).toISOString();
    // f-old built the dependency layer on L1 two hours ago; f-new on L2 an hour ago: L2 is the newest lock.
    // f-img-old holds the script image, built on L1. f-text built the layer just now without a lock (keyed
    // on the text: an agent that does not resolve): once any entry names a lock, that counts as older.
    // f-bare holds nothing.
    const deps = (lock: string, at: string) => ({ ...entry({ account: 'p7', kind: 'deps', size: 400 * MB }), lock_sha256: lock, created_at: at });
    await snapshot(app, tokens['f-old']!, 'f-old', [deps(L1, hoursAgo(2))]);
    await snapshot(app, tokens['f-new']!, 'f-new', [deps(L2, hoursAgo(1))]);
    await snapshot(app, tokens['f-img-old']!, 'f-img-old', [{ ...entry({ account: 'p7', size: 500 * MB }), lock_sha256: L1, created_at: hoursAgo(3) }]);
    await snapshot(app, tokens['f-text']!, 'f-text', [{ ...entry({ account: 'p7', kind: 'deps', size: 400 * MB }), created_at: hoursAgo(0) }]);
    await snapshot(app, tokens['f-bare']!, 'f-bare', []);
    const request = { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') };
    const resolve = async () =>
      (await call(app, 'POST', '/v1/resolve', sched, request)).json<{ placement: Placement[]; image: { workers: string[] }; deps: { workers: string[] } }>();

    const body = await resolve();
    // Every holder is listed whatever its lock; placement ranks by it.
    expect(body.image.workers).toEqual(['f-img-old']);
    expect(body.deps.workers).toEqual(['f-new', 'f-old', 'f-text']);
    expect(body.placement.map((p) => p.worker_id)).toEqual(['f-new', 'f-img-old', 'f-old', 'f-text', 'f-bare']);
    const cost = new Map(body.placement.map((p) => [p.worker_id, p.reasons[0]!]));
    expect(cost.get('f-new')).toMatchObject({ estimate_s: 2, detail: expect.stringMatching(/^dependency layer present, build the script layer ≈ 2 s/) as unknown });
    expect(cost.get('f-img-old')).toMatchObject({ estimate_s: 30, detail: expect.stringMatching(/^script image present on an older lock \(may rebuild on the newest\) ≈ 30 s/) as unknown });
    expect(cost.get('f-old')).toMatchObject({ estimate_s: 31, detail: expect.stringMatching(/^dependency layer present on an older lock \(may rebuild on the newest\) ≈ 31 s/) as unknown });
    expect(cost.get('f-text')).toEqual(cost.get('f-old'));
    expect(cost.get('f-bare')).toMatchObject({ estimate_s: 60, score: 0 });
    // Before locks the image holder came first: f-img-old would run at once on L1.
    expect(cost.get('f-img-old')!.score).toBeLessThan(cost.get('f-new')!.score);

    // Dispatch places by the same ranking: the execution goes to the holder of the newest lock.
    const client = await createToken(app, 'p7', 'client');
    const script = await upload(app, client, Buffer.from('print("p7")\n'));
    const requirements = await upload(app, client, Buffer.from('numpy>=2\n'));
    const submitted = await call(app, 'POST', '/v1/executions/submit', client, { ...request, script_sha256: script, requirements_blob_sha256: requirements });
    expect(submitted.statusCode, submitted.body).toBe(201);
    expect(submitted.json<{ worker_id: string }>().worker_id).toBe('f-new');

    // f-old resolves again and builds a newer layer on L1 (the index went back, say): L1 is now the newest
    // lock — judged over entries of both kinds — and the order turns around.
    await snapshot(app, tokens['f-old']!, 'f-old', [deps(L1, hoursAgo(2)), { ...entry({ account: 'p7', script: 'other', size: 500 * MB }), lock_sha256: L1, created_at: hoursAgo(0) }]);
    const after = await resolve();
    expect(after.placement.map((p) => p.worker_id)).toEqual(['f-img-old', 'f-old', 'f-new', 'f-text', 'f-bare']);
    expect(after.placement[2]!.reasons[0]!.detail).toMatch(/^dependency layer present on an older lock/);
  });

  it('answers the inputs state in the same request when asked', async () => {
    const app = await build(db);
    const sched = await createToken(app, 'p5', 'scheduler');
    const client = await createToken(app, 'p5', 'client');
    const blob = Buffer.from('input bytes');
    const blobSha = sha256Hex(blob);
    const files = [{ name: 'a.txt', sha256: blobSha, size: blob.length }];
    const manifest = await call(app, 'POST', '/v1/manifests', client, { files });
    expect(manifest.statusCode).toBe(201);
    const inputSha = manifest.json<{ input_sha256: string }>().input_sha256;
    const request = { runtime: 'python3.11', script_sha256: sha('script'), input_sha256: inputSha };
    const before = (await call(app, 'POST', '/v1/resolve', sched, request)).json();
    expect(before.inputs).toEqual({ input_sha256: inputSha, manifest: true, stored: false, missing_blobs: [blobSha] });
    expect(before.image).toEqual({ cached: false, workers: [] });
    const put = await app.inject({ method: 'PUT', url: `/v1/blobs/${blobSha}`, headers: { authorization: `Bearer ${client}`, 'content-type': 'application/octet-stream' }, payload: blob });
    expect(put.statusCode).toBeLessThan(300);
    const after = (await call(app, 'POST', '/v1/resolve', sched, request)).json();
    expect(after.inputs).toEqual({ input_sha256: inputSha, manifest: true, stored: true, missing_blobs: [] });
    const unknown = (await call(app, 'POST', '/v1/resolve', sched, { ...request, input_sha256: sha('nothing') })).json();
    expect(unknown.inputs).toEqual({ input_sha256: sha('nothing'), manifest: false, stored: false, missing_blobs: [] });
  });
});
