/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Admission control: per-token request rate and concurrency, failed-authentication throttling per
// address, per-account blob quota, the router's id-length limit, Fastify's own errors in the project's
// shape, and a stalled request body closed in bounded time with its staged blob removed.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { LightMyRequestResponse } from 'fastify';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import { ADMIN_TOKEN, build, call, createToken, registerWorker, useTestDatabase } from './support.js';

const db = useTestDatabase();

const tmpFiles = (): string[] => (existsSync(join(db.dataDir, 'blobs', 'tmp')) ? readdirSync(join(db.dataDir, 'blobs', 'tmp')) : []);
const blobPath = (digest: string): string => join(db.dataDir, 'blobs', 'sha256', digest.slice(0, 2), digest);

/** The project's error shape: `error` and `message` strings, an optional `detail`, nothing of Fastify's own. */
function expectErrorShape(res: LightMyRequestResponse, status: number, error?: string): void {
  expect(res.statusCode, res.body).toBe(status);
  const body = res.json<Record<string, unknown>>();
  expect(Object.keys(body).filter((k) => k !== 'detail').sort()).toEqual(['error', 'message']);
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
  if (error) expect(body.error).toBe(error);
}

async function blobRows(account: string): Promise<number> {
  const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM blobs WHERE account_id = $1', [account]);
  return rows[0].n as number;
}

const until = async (what: string, check: () => boolean | Promise<boolean>, maxMs = 30_000): Promise<void> => {
  for (const start = Date.now(); !(await check()); ) {
    if (Date.now() - start > maxMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('per-token admission', () => {
  it('limits requests per minute per token with 429 and Retry-After; other tokens and the admin are unaffected', async () => {
    const app = await build(db, { tokenRateLimitPerMinute: 5 });
    const busy = await createToken(app, 'rate', 'client');
    const calm = await createToken(app, 'rate', 'client');
    for (let i = 0; i < 5; i++) expect((await call(app, 'GET', '/v1/executions', busy)).statusCode).toBe(200);
    const refused = await call(app, 'GET', '/v1/executions', busy);
    expectErrorShape(refused, 429, 'rate_limited');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    // Keyed by token, not by address: the same client address with another token still gets through.
    expect((await call(app, 'GET', '/v1/executions', calm)).statusCode).toBe(200);
    for (let i = 0; i < 8; i++) expect((await call(app, 'GET', '/v1/admin/tokens', ADMIN_TOKEN)).statusCode).toBe(200);
  });

  it('limits the requests one token has in flight, long polls included', async () => {
    const app = await build(db, { tokenConcurrencyLimit: 2 });
    const worker = await createToken(app, 'conc', 'worker', 'conc-w1');
    await registerWorker(app, worker, 'conc-w1');
    const other = await createToken(app, 'conc', 'worker', 'conc-w2');
    await registerWorker(app, other, 'conc-w2');
    // Two long polls of 3 s hold both of the token's slots (nothing is queued for this worker).
    let polling = 2;
    const polls = [0, 1].map(() =>
      call(app, 'POST', '/v1/workers/conc-w1/claim', worker, { max: 1, wait_ms: 3000 }).finally(() => polling--),
    );
    let refused: LightMyRequestResponse | undefined;
    while (polling === 2 && !refused) {
      const res = await call(app, 'POST', '/v1/workers/conc-w1/heartbeat', worker, { load: { running: 0 } });
      if (res.statusCode === 429) refused = res;
      else expect(res.statusCode).toBe(200);
      // Another token is not held back by this one's polls.
      expect((await call(app, 'POST', '/v1/workers/conc-w2/heartbeat', other, { load: { running: 0 } })).statusCode).toBe(200);
    }
    expect(refused, 'a third request while two were in flight was refused').toBeDefined();
    expectErrorShape(refused!, 429, 'rate_limited');
    expect(refused!.headers['retry-after']).toBe('1');
    for (const res of await Promise.all(polls)) expect(res.statusCode).toBe(200);
    // The slots are given back once the polls answered.
    expect((await call(app, 'POST', '/v1/workers/conc-w1/heartbeat', worker, { load: { running: 0 } })).statusCode).toBe(200);
  });

  it('throttles failed authentication per client address, valid token or not, and only that address', async () => {
    const app = await build(db, { authFailuresPerMinute: 3 });
    const good = await createToken(app, 'auth', 'client');
    const from = (address: string, token: string | null) =>
      app.inject({ method: 'GET', url: '/v1/executions', remoteAddress: address, headers: token ? { authorization: `Bearer ${token}` } : {} });
    expect((await from('10.1.1.1', good)).statusCode).toBe(200);
    for (const token of ['rgrid_guess_1', 'rgrid_guess_2', null]) expectErrorShape(await from('10.1.1.1', token), 401, 'unauthorized');
    const throttled = await from('10.1.1.1', 'rgrid_guess_3');
    expectErrorShape(throttled, 429, 'rate_limited');
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);
    // Once throttled, the address cannot even try a valid token: the attempts cost nothing more.
    expect((await from('10.1.1.1', good)).statusCode).toBe(429);
    expect((await from('10.2.2.2', good)).statusCode).toBe(200);
  });
});

describe('per-account blob quota', () => {
  it('refuses an upload that would pass the bytes or count quota, stores nothing, and keeps blob files private', async () => {
    const app = await build(db, { accountBlobQuotaBytes: 1000, accountBlobQuotaCount: 3 });
    const client = await createToken(app, 'quota', 'client');
    const put = (bytes: Buffer, chunked = false) =>
      app.inject({
        method: 'PUT',
        url: `/v1/blobs/${sha256Hex(bytes)}`,
        headers: { authorization: `Bearer ${client}`, 'content-type': 'application/octet-stream', ...(chunked ? { 'transfer-encoding': 'chunked' } : {}) },
        payload: chunked ? Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]) : bytes,
      });
    const first = Buffer.alloc(600, 1);
    expect((await put(first)).statusCode).toBe(201);

    // Declared size past the quota: refused before reading; streamed past it: refused while reading.
    const second = Buffer.alloc(600, 2);
    for (const chunked of [false, true]) {
      const res = await put(second, chunked);
      expectErrorShape(res, 413, 'quota_exceeded');
      expect(res.json().detail).toMatchObject({ quota: 'bytes' });
    }
    expect(await blobRows('quota')).toBe(1);
    expect(existsSync(blobPath(sha256Hex(second)))).toBe(false);
    expect(tmpFiles()).toEqual([]);
    // A blob the account already has costs nothing more: its upload is still accepted (verified, no change).
    expect((await put(first)).statusCode).toBe(200);

    expect((await put(Buffer.from('small one'))).statusCode).toBe(201);
    expect((await put(Buffer.from('small two'))).statusCode).toBe(201);
    const fourth = await put(Buffer.from('small three'));
    expectErrorShape(fourth, 413, 'quota_exceeded');
    expect(fourth.json().detail).toMatchObject({ quota: 'count', limit_count: 3 });
    expect(await blobRows('quota')).toBe(3);
    // Another account has its own quota.
    const other = await createToken(app, 'quota-other', 'client');
    const res = await app.inject({ method: 'PUT', url: `/v1/blobs/${sha256Hex(second)}`, headers: { authorization: `Bearer ${other}` }, payload: second });
    expect(res.statusCode).toBe(201);

    // Blob bytes are readable by the control plane's user only, whatever the umask.
    const file = blobPath(sha256Hex(first));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    for (const dir of [join(db.dataDir, 'blobs'), join(db.dataDir, 'blobs', 'tmp'), join(db.dataDir, 'blobs', 'sha256'), join(file, '..')]) {
      expect(statSync(dir).mode & 0o777, dir).toBe(0o700);
    }
  });
});

describe('router limits and Fastify errors in the project shape', () => {
  it('serves worker ids up to the longest id and refuses longer path parameters with 414 {error, message}', async () => {
    const app = await build(db);
    const longId = `w${'x'.repeat(119)}`; // 120 characters: valid, and longer than Fastify's default 100
    const token = await createToken(app, 'longids', 'worker', longId);
    await registerWorker(app, token, longId);
    expect((await call(app, 'POST', `/v1/workers/${longId}/heartbeat`, token, { load: { running: 0 } })).statusCode).toBe(200);
    expectErrorShape(await call(app, 'GET', `/v1/workers/${'y'.repeat(129)}/entries`, token), 414, 'bad_request');
  });

  it('answers bad JSON, wrong media types, oversized bodies, unknown routes and methods, bad URLs as {error, message}', async () => {
    const app = await build(db, { bodyLimitBytes: 1024 });
    const client = await createToken(app, 'shapes', 'client');
    const auth = { authorization: `Bearer ${client}` };
    const post = (payload: string, contentType: string) => app.inject({ method: 'POST', url: '/v1/manifests', headers: { ...auth, 'content-type': contentType }, payload });
    expectErrorShape(await post('{"files": [', 'application/json'), 400, 'bad_request');
    expectErrorShape(await post('', 'application/json'), 400, 'bad_request');
    expectErrorShape(await post('files=1', 'application/x-www-form-urlencoded'), 415);
    expectErrorShape(await post(JSON.stringify({ files: [], pad: 'x'.repeat(2048) }), 'application/json'), 413, 'payload_too_large');
    expectErrorShape(await call(app, 'GET', '/v1/nothing-here', client), 404, 'not_found');
    expectErrorShape(await call(app, 'DELETE', '/v1/manifests', client), 404, 'not_found');
    expectErrorShape(await call(app, 'GET', '/v1/blobs/%zz', client), 400, 'bad_request');
    expectErrorShape(await call(app, 'GET', '/v1/blobs/abc', client), 400, 'bad_digest');
    expectErrorShape(await call(app, 'GET', `/v1/blobs/${'a'.repeat(64)}?account=%00`, client), 400, 'bad_request');
  });
});

describe('timeouts on a listening server', () => {
  it('closes a stalled upload in bounded time and removes its staged file; malformed HTTP gets {error, message}', async () => {
    const app = await build(db, { bodyIdleTimeoutMs: 500, claimWaitMaxMs: 0, connectionTimeoutMs: 5000 });
    const client = await createToken(app, 'stall', 'client');
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };

    /** Sends `head` and `body` on a raw connection, then waits (bounded) until the server closes it. */
    const stalled = (head: string, body: Buffer): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        let answer = '';
        const deadline = setTimeout(() => {
          socket.destroy();
          reject(new Error('the server kept a stalled request open for 30 s'));
        }, 30_000);
        socket.on('data', (c: Buffer) => (answer += c.toString()));
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearTimeout(deadline);
          resolve(answer);
        });
        socket.write(head);
        socket.write(body);
      });

    // A blob upload that stops halfway: 408 in the project's shape, the connection closed, no temp file.
    const digest = sha256Hex('never completed');
    const answer = await stalled(
      `PUT /v1/blobs/${digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${client}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n`,
      Buffer.alloc(200 * 1024, 1),
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: 'request_timeout' });
    await until('the staged file to be removed', () => tmpFiles().length === 0);
    expect(existsSync(blobPath(digest))).toBe(false);

    // A small JSON body that stops: the connection's idle timeout closes it.
    await stalled(`POST /v1/manifests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${client}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`, Buffer.from('{"files"'));

    // Not HTTP at all.
    const garbage = await stalled('THIS IS NOT HTTP\r\n\r\n', Buffer.alloc(0));
    expect(garbage).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'bad_request', message: 'malformed HTTP request' });
  });
});
