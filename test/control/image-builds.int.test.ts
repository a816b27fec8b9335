/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// The grid-wide build lease and the registry index through the control plane's API (inject against real
// PostgreSQL): one builder per (account, kind, key), waiters woken by its push, take-over of a lease
// nobody renews, failures remembered for their window, releases, lease-less pushes, tenancy and hostile
// input. Lease and failure expiry are simulated by moving the expiry into the past: the control plane only
// compares it with the database clock, and waiting out a real lease would make the tests slow.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { describe, expect, it } from 'vitest';
import { eventually } from '../fleet/helpers.js';
import { build, call, createToken, sha, useTestDatabase } from './support.js';

const db = useTestDatabase();
const REGISTRY = '127.0.0.1:5000';
const digest = (label: string): string => `sha256:${sha(`manifest:${label}`)}`;

function image(account: string, label: string, extra: Record<string, unknown> = {}) {
  return {
    account,
    kind: 'image',
    key: sha(`key:${label}`),
    runtime: 'python3.11',
    base_image_id: `sha256:${sha('base')}`,
    requirements_sha256: sha('reqs'),
    script_sha256: sha(`script:${label}`),
    deps_key: sha('deps'),
    registry: REGISTRY,
    ...extra,
  };
}

const acquire = (app: FastifyInstance, token: string, workerId: string, body: unknown): Promise<LightMyRequestResponse> =>
  call(app, 'POST', `/v1/workers/${workerId}/image-builds`, token, body);
const renew = (app: FastifyInstance, token: string, workerId: string, leaseId: string): Promise<LightMyRequestResponse> =>
  call(app, 'POST', `/v1/workers/${workerId}/image-builds/${leaseId}/renew`, token);
const complete = (app: FastifyInstance, token: string, workerId: string, leaseId: string, body: unknown): Promise<LightMyRequestResponse> =>
  call(app, 'POST', `/v1/workers/${workerId}/image-builds/${leaseId}/complete`, token, body);
const record = (app: FastifyInstance, token: string, workerId: string, body: unknown): Promise<LightMyRequestResponse> =>
  call(app, 'PUT', `/v1/workers/${workerId}/registry-images`, token, body);

/** The fields the tests read from an answer (the rest is compared whole with toEqual). */
interface Answer {
  state?: string;
  lease_id: string;
  lease_expires_at: string;
  [field: string]: unknown;
}

async function ok(res: Promise<LightMyRequestResponse> | LightMyRequestResponse): Promise<Answer> {
  const r = await res;
  expect(r.statusCode, r.body).toBe(200);
  return r.json<Answer>();
}

/** Two workers of one account, each with its own token. */
async function workers(app: FastifyInstance, account: string, n = 2): Promise<Array<{ id: string; token: string }>> {
  const out = [];
  for (let i = 1; i <= n; i++) out.push({ id: `${account}-w${i}`, token: await createToken(app, account, 'worker', `${account}-w${i}`) });
  return out;
}

/**
 * An app whose long polls report when they start waiting on a build key: the test then knows the
 * waiter is parked (and not about to see the change on its first round) before it makes the change.
 */
async function appWithWaitProbe(overrides = {}): Promise<{ app: FastifyInstance; parked: () => Promise<void> }> {
  let onPark: (() => void) | undefined;
  const app = await build(db, overrides, (a) => {
    const wait = a.dispatch.wait.bind(a.dispatch);
    a.dispatch.wait = (keys, ms, signal) => {
      if (keys.some((k) => k.startsWith('b:'))) onPark?.();
      return wait(keys, ms, signal);
    };
  });
  return { app, parked: () => new Promise<void>((resolve) => (onPark = resolve)) };
}

async function tables(): Promise<Record<string, unknown[]>> {
  const q = async (sql: string): Promise<unknown[]> => (await db.pool.query(sql)).rows as unknown[];
  return {
    images: await q('SELECT * FROM registry_images ORDER BY account_id, kind, key'),
    leases: await q('SELECT * FROM build_leases ORDER BY account_id, kind, key'),
    failures: await q('SELECT * FROM build_failures ORDER BY account_id, kind, key'),
    completions: await q('SELECT * FROM build_completions ORDER BY lease_id'),
  };
}

describe('build leases', () => {
  it('the first acquire gets the lease, a second worker is told building, a parked waiter wakes on the push and gets its digest', async () => {
    const { app, parked } = await appWithWaitProbe();
    const [w1, w2] = await workers(app, 'ib-a');
    const body = image('ib-a', 'first');
    const lease = await ok(acquire(app, w1!.token, w1!.id, body));
    expect(lease).toMatchObject({ state: 'lease', attempt: 1, lease_ms: 30_000 });
    // The same worker asking again (it lost the answer) gets the same lease back.
    expect(await ok(acquire(app, w1!.token, w1!.id, body))).toMatchObject({ state: 'lease', lease_id: lease.lease_id, attempt: 1 });
    expect(await ok(acquire(app, w2!.token, w2!.id, body))).toMatchObject({ state: 'building', holder: w1!.id });

    const isParked = parked();
    const waiter = acquire(app, w2!.token, w2!.id, { ...body, wait_ms: 20_000 });
    await isParked;
    expect(await ok(complete(app, w1!.token, w1!.id, lease.lease_id, { outcome: 'pushed', manifest_digest: digest('first'), size_bytes: 1234 }))).toEqual({ ok: true });
    expect(await ok(waiter)).toEqual({ state: 'pushed', registry: REGISTRY, manifest_digest: digest('first'), size_bytes: 1234, pushed_by: w1!.id });

    const row = (await db.pool.query("SELECT * FROM registry_images WHERE account_id = 'ib-a'")).rows;
    expect(row).toEqual([expect.objectContaining({ kind: 'image', key: body.key, manifest_digest: digest('first'), pushed_by: w1!.id, script_sha256: body.script_sha256, last_pulled_at: expect.any(Date) })]);
    expect((await db.pool.query("SELECT count(*)::int AS n FROM build_leases WHERE account_id = 'ib-a'")).rows[0].n).toBe(0);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/rgrid_control_build_leases_total\{how="granted"\} 1\b/);
    expect(metrics).toMatch(/rgrid_control_build_waits_total\{result="pushed"\} 1\b/);
  });

  it('a lease nobody renews is taken over as attempt 2; the old holder renews and completes into 409', async () => {
    const app = await build(db);
    const [w1, w2] = await workers(app, 'ib-b');
    const body = image('ib-b', 'expiring');
    const first = await ok(acquire(app, w1!.token, w1!.id, body));
    await db.pool.query("UPDATE build_leases SET expires_at = now() - interval '1 second' WHERE lease_id = $1", [first.lease_id]);
    const second = await ok(acquire(app, w2!.token, w2!.id, body));
    expect(second).toMatchObject({ state: 'lease', attempt: 2 });
    expect(second.lease_id).not.toBe(first.lease_id);

    const before = await tables();
    for (const res of [
      await renew(app, w1!.token, w1!.id, first.lease_id),
      await complete(app, w1!.token, w1!.id, first.lease_id, { outcome: 'pushed', manifest_digest: digest('old-holder'), size_bytes: null }),
      await complete(app, w1!.token, w1!.id, first.lease_id, { outcome: 'failed', error: 'build_failed', message: 'no', log_tail: '' }),
      await complete(app, w1!.token, w1!.id, first.lease_id, { outcome: 'released' }),
    ]) {
      expect(res.statusCode, res.body).toBe(409);
      expect(res.json()).toMatchObject({ error: 'conflict', detail: { lease_lost: true } });
    }
    expect(await tables()).toEqual(before);
    // The other worker's token cannot act as the new holder either.
    expect((await renew(app, w1!.token, w2!.id, second.lease_id)).statusCode).toBe(403);

    await db.pool.query("UPDATE build_leases SET expires_at = now() + interval '1 second' WHERE lease_id = $1", [second.lease_id]);
    const renewed = await ok(renew(app, w2!.token, w2!.id, second.lease_id));
    expect(Date.parse(renewed.lease_expires_at)).toBeGreaterThan(Date.now() + 20_000);
    const pushed = { outcome: 'pushed', manifest_digest: digest('new-holder'), size_bytes: 10 };
    await ok(complete(app, w2!.token, w2!.id, second.lease_id, pushed));
    // A repeat of the same complete (the answer was lost) is ok and changes nothing; another outcome is not.
    const after = await tables();
    expect(await ok(complete(app, w2!.token, w2!.id, second.lease_id, pushed))).toEqual({ ok: true });
    expect((await complete(app, w2!.token, w2!.id, second.lease_id, { ...pushed, manifest_digest: digest('other') })).statusCode).toBe(409);
    expect((await complete(app, w2!.token, w2!.id, second.lease_id, { outcome: 'released' })).statusCode).toBe(409);
    expect((await renew(app, w2!.token, w2!.id, second.lease_id)).statusCode).toBe(409);
    expect(await tables()).toEqual(after);
    expect(await ok(acquire(app, w1!.token, w1!.id, body))).toMatchObject({ state: 'pushed', manifest_digest: digest('new-holder'), pushed_by: w2!.id });
  });

  it('a failure is answered to every acquire within its window (a parked waiter too) and not after it', async () => {
    const { app, parked } = await appWithWaitProbe({ buildFailureTtlMs: 60_000 });
    const [w1, w2, w3] = await workers(app, 'ib-c', 3);
    const body = image('ib-c', 'bad-reqs');
    const lease = await ok(acquire(app, w1!.token, w1!.id, body));
    const isParked = parked();
    const waiter = acquire(app, w2!.token, w2!.id, { ...body, wait_ms: 20_000 });
    await isParked;
    const failure = { outcome: 'failed', error: 'build_failed', message: 'pip could not find nosuchpkg', log_tail: 'ERROR: No matching distribution found for nosuchpkg' };
    await ok(complete(app, w1!.token, w1!.id, lease.lease_id, failure));
    const expected = { state: 'failed', error: 'build_failed', message: failure.message, log_tail: failure.log_tail, failed_by: w1!.id, failed_at: expect.any(String) };
    expect(await ok(waiter)).toEqual(expected);
    for (const w of [w1!, w2!, w3!]) expect(await ok(acquire(app, w.token, w.id, body))).toEqual(expected);

    await db.pool.query("UPDATE build_failures SET expires_at = now() - interval '1 second' WHERE account_id = 'ib-c'");
    expect(await ok(acquire(app, w3!.token, w3!.id, body))).toMatchObject({ state: 'lease', attempt: 1 });
    expect((await app.inject({ method: 'GET', url: '/metrics' })).body).toMatch(/rgrid_control_build_failures_total 1\b/);
  });

  it('a released lease is taken over by the next worker as the next attempt', async () => {
    const app = await build(db);
    const [w1, w2] = await workers(app, 'ib-d');
    const body = image('ib-d', 'released');
    const first = await ok(acquire(app, w1!.token, w1!.id, body));
    expect(await ok(acquire(app, w2!.token, w2!.id, body))).toMatchObject({ state: 'building', holder: w1!.id });
    await ok(complete(app, w1!.token, w1!.id, first.lease_id, { outcome: 'released' }));
    await ok(complete(app, w1!.token, w1!.id, first.lease_id, { outcome: 'released' }));
    const next = await ok(acquire(app, w2!.token, w2!.id, body));
    expect(next).toMatchObject({ state: 'lease', attempt: 2 });
    expect(next.lease_id).not.toBe(first.lease_id);
    expect((await renew(app, w1!.token, w1!.id, first.lease_id)).statusCode).toBe(409);
    expect(await ok(acquire(app, w1!.token, w1!.id, body))).toMatchObject({ state: 'building', holder: w2!.id });
  });

  it('a held long poll answers at once when the app closes', async () => {
    const { app, parked } = await appWithWaitProbe();
    const [w1, w2] = await workers(app, 'ib-e');
    const body = image('ib-e', 'closing');
    await ok(acquire(app, w1!.token, w1!.id, body));
    const isParked = parked();
    const waiter = acquire(app, w2!.token, w2!.id, { ...body, wait_ms: 30_000 });
    await isParked;
    const closed = app.close();
    expect(await ok(waiter)).toMatchObject({ state: 'building', holder: w1!.id });
    await closed;
  });

  it('a held long poll ends when its client leaves, without taking a lease', async () => {
    const { app, parked } = await appWithWaitProbe();
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const [w1, w2] = await workers(app, 'ib-l');
    const body = image('ib-l', 'left');
    const lease = await ok(acquire(app, w1!.token, w1!.id, body));
    const isParked = parked();
    const payload = JSON.stringify({ ...body, wait_ms: 30_000 });
    const req = http.request({
      host: '127.0.0.1', port, method: 'POST', path: `/v1/workers/${w2!.id}/image-builds`,
      headers: { authorization: `Bearer ${w2!.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    req.on('error', () => undefined);
    req.end(payload);
    await isParked;
    req.destroy();
    // The holder's lease runs out after the client left: a loop still polling would take it over.
    await db.pool.query("UPDATE build_leases SET expires_at = now() - interval '1 second' WHERE lease_id = $1", [lease.lease_id]);
    const metrics = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body;
    await eventually('the long poll to end', async () => (/rgrid_control_build_waits_total\{result="client_left"\} 1\b/.test(await metrics()) ? true : undefined), 10_000, 50);
    expect((await db.pool.query("SELECT lease_id, holder FROM build_leases WHERE account_id = 'ib-l'")).rows).toEqual([{ lease_id: lease.lease_id, holder: w1!.id }]);
  });
});

describe('registry records', () => {
  it('a lease-less push is recorded once: repeats are ok, and the first digest wins over a later one', async () => {
    const app = await build(db);
    const [w1, w2] = await workers(app, 'ib-f');
    const body = { ...image('ib-f', 'outbox'), manifest_digest: digest('one'), size_bytes: 99 };
    expect(await ok(record(app, w1!.token, w1!.id, body))).toEqual({ recorded: true, manifest_digest: digest('one') });
    expect(await ok(record(app, w1!.token, w1!.id, body))).toEqual({ recorded: true, manifest_digest: digest('one') });
    expect(await ok(record(app, w2!.token, w2!.id, { ...body, manifest_digest: digest('two') }))).toEqual({ recorded: false, manifest_digest: digest('one') });
    expect(await ok(acquire(app, w2!.token, w2!.id, image('ib-f', 'outbox')))).toMatchObject({ state: 'pushed', manifest_digest: digest('one'), pushed_by: w1!.id, size_bytes: 99 });
    // A lease granted before the record was made completes without replacing the recorded digest.
    const deps = image('ib-f', 'deps', { kind: 'deps', key: sha('deps-key'), script_sha256: null, deps_key: null });
    const lease = await ok(acquire(app, w1!.token, w1!.id, deps));
    await ok(record(app, w2!.token, w2!.id, { ...deps, manifest_digest: digest('recorded-first'), size_bytes: null }));
    await ok(complete(app, w1!.token, w1!.id, lease.lease_id, { outcome: 'pushed', manifest_digest: digest('lease-second'), size_bytes: null }));
    expect(await ok(acquire(app, w1!.token, w1!.id, deps))).toMatchObject({ state: 'pushed', manifest_digest: digest('recorded-first'), pushed_by: w2!.id });
  });

  it('an image recorded for another registry counts as absent; the first push to the new registry replaces it', async () => {
    const app = await build(db);
    const [w1, w2] = await workers(app, 'ib-g');
    const old = image('ib-g', 'moved');
    await ok(record(app, w1!.token, w1!.id, { ...old, manifest_digest: digest('old-registry'), size_bytes: null }));
    const moved = { ...old, registry: 'registry.internal:5443/team' };
    const lease = await ok(acquire(app, w2!.token, w2!.id, moved));
    expect(lease).toMatchObject({ state: 'lease', attempt: 1 });
    await ok(complete(app, w2!.token, w2!.id, lease.lease_id, { outcome: 'pushed', manifest_digest: digest('new-registry'), size_bytes: null }));
    expect(await ok(acquire(app, w1!.token, w1!.id, moved))).toMatchObject({ state: 'pushed', registry: moved.registry, manifest_digest: digest('new-registry') });
  });

  it("another account's worker can neither acquire, record, renew nor complete in the account, nor see its images", async () => {
    const app = await build(db);
    const [owner] = await workers(app, 'ib-h');
    const [stranger] = await workers(app, 'ib-x');
    const body = image('ib-h', 'private');
    await ok(record(app, owner!.token, owner!.id, { ...body, manifest_digest: digest('private'), size_bytes: null }));
    const held = image('ib-h', 'held');
    const lease = await ok(acquire(app, owner!.token, owner!.id, held));
    const before = await tables();

    for (const res of [
      await acquire(app, stranger!.token, stranger!.id, body),
      await record(app, stranger!.token, stranger!.id, { ...body, manifest_digest: digest('hijack'), size_bytes: null }),
      await acquire(app, stranger!.token, owner!.id, body),
      await renew(app, stranger!.token, owner!.id, lease.lease_id),
      await complete(app, stranger!.token, owner!.id, lease.lease_id, { outcome: 'released' }),
    ]) {
      expect(res.statusCode, res.body).toBe(403);
      expect(res.json().error).toBe('forbidden');
    }
    // Under its own worker id, the lease is simply not its own.
    expect((await renew(app, stranger!.token, stranger!.id, lease.lease_id)).statusCode).toBe(409);
    expect((await complete(app, stranger!.token, stranger!.id, lease.lease_id, { outcome: 'pushed', manifest_digest: digest('hijack'), size_bytes: null })).statusCode).toBe(409);
    expect(await tables()).toEqual(before);
    // The same key in its own account is a different image: nothing of ib-h's leaks into the answer.
    expect(await ok(acquire(app, stranger!.token, stranger!.id, { ...body, account: 'ib-x' }))).toMatchObject({ state: 'lease', attempt: 1 });
  });

  it('hostile input is a 400 with one {error, message} line and changes nothing', async () => {
    const app = await build(db);
    const [w1] = await workers(app, 'ib-i');
    const body = image('ib-i', 'hostile');
    const lease = await ok(acquire(app, w1!.token, w1!.id, body));
    const pushed = { outcome: 'pushed', manifest_digest: digest('fine'), size_bytes: 1 };
    const recorded = { ...body, manifest_digest: digest('fine'), size_bytes: 1 };
    const before = await tables();
    const huge = 'a'.repeat(200_000);
    const attempts: Array<[string, Promise<LightMyRequestResponse>]> = [
      ['digest not hex', complete(app, w1!.token, w1!.id, lease.lease_id, { ...pushed, manifest_digest: `sha256:${'Z'.repeat(64)}` })],
      ['digest of another algorithm', complete(app, w1!.token, w1!.id, lease.lease_id, { ...pushed, manifest_digest: `sha512:${'a'.repeat(128)}` })],
      ['digest in a record', record(app, w1!.token, w1!.id, { ...recorded, manifest_digest: 'sha256:../../etc/passwd' })],
      ['unknown kind', acquire(app, w1!.token, w1!.id, { ...body, kind: 'layers' })],
      ['unknown outcome', complete(app, w1!.token, w1!.id, lease.lease_id, { outcome: 'deleted' })],
      ['lease id not a uuid', renew(app, w1!.token, w1!.id, 'not-a-uuid')],
      ['lease id not a uuid on complete', complete(app, w1!.token, w1!.id, `${lease.lease_id.slice(0, -1)}Z`, pushed)],
      ['huge key', acquire(app, w1!.token, w1!.id, { ...body, key: huge })],
      ['huge message', complete(app, w1!.token, w1!.id, lease.lease_id, { outcome: 'failed', error: 'build_failed', message: huge, log_tail: '' })],
      ['huge registry', acquire(app, w1!.token, w1!.id, { ...body, registry: `${huge}:5000` })],
      ['registry with a scheme', acquire(app, w1!.token, w1!.id, { ...body, registry: 'http://127.0.0.1:5000' })],
      ['NUL in a message', complete(app, w1!.token, w1!.id, lease.lease_id, { outcome: 'failed', error: 'build_failed', message: 'a\u0000b', log_tail: '' })],
      ['extra field', complete(app, w1!.token, w1!.id, lease.lease_id, { ...pushed, pushed_by: 'someone-else' })],
      ['wait past its cap', acquire(app, w1!.token, w1!.id, { ...body, wait_ms: 1e9 })],
      ['negative size', record(app, w1!.token, w1!.id, { ...recorded, size_bytes: -1 })],
      ['image without a script', acquire(app, w1!.token, w1!.id, { ...body, script_sha256: null })],
      ['deps with a script', record(app, w1!.token, w1!.id, { ...recorded, kind: 'deps' })],
      ['not an object', acquire(app, w1!.token, w1!.id, ['x'])],
    ];
    for (const [what, res] of attempts) {
      const r = await res;
      expect(r.statusCode, `${what}: ${r.body}`).toBe(400);
      const answer = r.json<{ error: string; message: string }>();
      expect(Object.keys(answer).sort(), what).toEqual(['error', 'message']);
      expect(['bad_request', 'bad_digest'], what).toContain(answer.error);
      expect(answer.message, what).not.toContain('\n');
    }
    expect((await complete(app, w1!.token, w1!.id, lease.lease_id, { ...pushed, manifest_digest: 'sha256:nothex' })).json().error).toBe('bad_digest');
    expect(await tables()).toEqual(before);
    // The lease survived all of it.
    await ok(renew(app, w1!.token, w1!.id, lease.lease_id));
  });
});
