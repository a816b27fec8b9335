/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// What a worker reports at `complete`, and the other worker- and admin-facing inputs, are checked by
// the naming contract and the column bounds: a bad value is a 400 that changes nothing (the claim stays
// held), logs are stored whatever the script printed, and an output-limit failure is final.
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, useTestDatabase } from './support.js';
import { claim, complete, renew, row, submitted, world } from './dispatch-support.js';

const db = useTestDatabase();
const TWO_31 = 2 ** 31;
const TWO_63 = 2 ** 63;
const output = (name: string, size = 3): Record<string, unknown> => ({ name, sha256: 'a'.repeat(64), size });

describe('complete', () => {
  it('an output_limit failure is final: failed, attempts unchanged, never re-queued, even when handed back', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'cp-a', 'cp-a-w');
    const done = await submitted(app, w, { max_attempts: 3 });
    const [c1] = await claim(app, w.worker, w.workerId);
    const res = await complete(app, w.worker, w.workerId, c1!, { exit_code: null, failure: 'output_limit', error: 'outputs over 1 GiB' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ status: 'failed', failure: 'output_limit', attempts: 1 });

    const handedBack = await submitted(app, w, { max_attempts: 3 });
    const [c2] = await claim(app, w.worker, w.workerId);
    const back = await complete(app, w.worker, w.workerId, c2!, { outcome: 'retry', failure: 'output_limit', error: 'outputs over 1 GiB' });
    expect(back.statusCode, back.body).toBe(200);
    expect(back.json()).toMatchObject({ status: 'failed', failure: 'output_limit', attempts: 1 });
    await app.dispatch.executions.sweep();
    for (const id of [done, handedBack]) expect(await row(db, id)).toMatchObject({ status: 'failed', failure: 'output_limit', attempts: 1, lease_left_ms: null });
    expect(await claim(app, w.worker, w.workerId)).toEqual([]);
  });

  it('stores logs with NUL and unpaired surrogates (shown as U+FFFD) instead of failing with 500', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'cp-b', 'cp-b-w');
    const id = await submitted(app, w);
    const [c] = await claim(app, w.worker, w.workerId);
    // Raw JSON: "\u0000" and a lone "\ud800" are valid JSON string escapes.
    const res = await app.inject({
      method: 'POST', url: `/v1/workers/${w.workerId}/claims/${id}/complete`,
      headers: { authorization: `Bearer ${w.worker}`, 'content-type': 'application/json' },
      payload: `{"claim_id":"${c!.claim_id}","outcome":"done","exit_code":0,"stdout":"a\\u0000b\\n","stderr":"x\\ud800y"}`,
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ status: 'succeeded' });
    const logs = await call(app, 'GET', `/v1/executions/${id}/logs`, w.client);
    expect(logs.json()).toMatchObject({ stdout: 'a\uFFFDb\n', stderr: 'x\uFFFDy' });
  });

  it('refuses unsafe output names and out-of-range values with 400, and the claim stays held', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'cp-c', 'cp-c-w');
    const id = await submitted(app, w);
    const [c] = await claim(app, w.worker, w.workerId);
    const before = await row(db, id);
    const bad: Record<string, unknown>[] = [
      { exit_code: 0, outputs: [output('../../x.sh')] },
      { exit_code: 0, outputs: [output('/etc/x')] },
      { exit_code: 0, outputs: [output('report\u001b[31m.txt')] },
      { exit_code: 0, outputs: [output('a/../../b')] },
      { exit_code: 0, outputs: [output('big.bin', TWO_63)] },
      { exit_code: TWO_31 },
      { exit_code: 1, error: 'broke\u0000here' },
      { exit_code: 0, timings: { 'Run-MS': 5 } },
      { exit_code: 0, downloaded_blobs: TWO_31 },
    ];
    for (const body of bad) {
      const res = await complete(app, w.worker, w.workerId, c!, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      // An unsafe output name is named as such (the naming contract's code); any other bad value is a bad request.
      const badName = ((body as { outputs?: Array<{ name: string }> }).outputs ?? []).some((o) => o.name !== 'big.bin');
      expect(res.json()).toMatchObject({ error: badName ? 'bad_file_name' : 'bad_request', message: expect.any(String) });
      expect(await row(db, id)).toEqual({ ...before, lease_left_ms: expect.any(Number) });
    }
    expect((await renew(app, w.worker, w.workerId, c!)).statusCode).toBe(200);
    const ok = await complete(app, w.worker, w.workerId, c!, { exit_code: 0, outputs: [output('out/report.txt')] });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json().outputs).toEqual([output('out/report.txt')]);
  });
});

describe('worker and admin inputs bounded by their columns', () => {
  it('register, heartbeat and token creation refuse out-of-range or unstorable values with 400', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const w = await world(app, 'cp-d', 'cp-d-w');
    const url = `/v1/workers/${w.workerId}`;
    const cases: [string, string, Record<string, unknown>][] = [
      ['POST', `${url}/register`, { host: 'evil\u0000host', capacity: 1 }],
      ['POST', `${url}/register`, { host: 'h'.repeat(256), capacity: 1 }],
      ['POST', `${url}/register`, { host: 'h', capacity: 1, disk: { total_bytes: TWO_63, used_bytes: 0 } }],
      ['POST', `${url}/register`, { host: 'h', capacity: 1, labels: { 'bad key!': 'x' } }],
      ['POST', `${url}/register`, { host: 'h', capacity: 1, engine: { version: 'v\u0000' } }],
      ['POST', `${url}/register`, { host: 'h', capacity: 1, engine: { nested: { deep: 'x'.repeat(300) } } }],
      ['POST', `${url}/heartbeat`, { load: { running: TWO_31 } }],
      ['POST', `${url}/heartbeat`, { load: { running: 0 }, disk: { total_bytes: TWO_63, used_bytes: 0 } }],
    ];
    const { rows: before } = await db.pool.query('SELECT host, running, disk_total_bytes FROM workers WHERE worker_id = $1', [w.workerId]);
    for (const [method, path, body] of cases) {
      const res = await call(app, method as 'POST', path, w.worker, body);
      expect(res.statusCode, `${path} ${JSON.stringify(body)}`).toBe(400);
    }
    const { rows: after } = await db.pool.query('SELECT host, running, disk_total_bytes FROM workers WHERE worker_id = $1', [w.workerId]);
    expect(after).toEqual(before);

    const { rows: tokensBefore } = await db.pool.query('SELECT count(*)::int AS n FROM tokens');
    for (const body of [
      { account: 'cp-d', role: 'client', description: 'line\u0000two' },
      { account: 'cp-d', role: 'client', description: 'x'.repeat(201) },
      { account: 'cp-d', role: 'worker', worker_id: 'w\u001b[2J' },
      { account: 'cp-d', role: 'client', expires_at: '2030-01-01T00:00:60Z' },
    ]) {
      expect((await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, body)).statusCode, JSON.stringify(body)).toBe(400);
    }
    const { rows: tokensAfter } = await db.pool.query('SELECT count(*)::int AS n FROM tokens');
    expect(tokensAfter).toEqual(tokensBefore);
  });
});
