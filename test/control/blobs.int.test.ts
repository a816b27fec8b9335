/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// A blob whose bytes do not match its hash is rejected and absent afterwards; an
// oversized one gets 413; a second upload of a stored blob is skipped by the manifest endpoint.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { inputSha256 } from '../../common/cache-keys.js';
import { sha256Hex } from '../../common/digest.js';
import { build, call, createToken, useTestDatabase } from './support.js';

const db = useTestDatabase();

const blobPath = (digest: string): string => join(db.dataDir, 'blobs', 'sha256', digest.slice(0, 2), digest);
const tmpFiles = (): string[] => (existsSync(join(db.dataDir, 'blobs', 'tmp')) ? readdirSync(join(db.dataDir, 'blobs', 'tmp')) : []);

async function blobRows(digest: string): Promise<number> {
  const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM blobs WHERE sha256 = $1', [digest]);
  return rows[0].n as number;
}

describe('input blobs', () => {
  it('stores a verified blob, serves it back, and rejects bytes that do not match the digest', async () => {
    const app = await build(db);
    const client = await createToken(app, 'acme', 'client');
    const auth = { authorization: `Bearer ${client}` };
    const good = Buffer.from('a,b\n1,2\n');
    const goodSha = sha256Hex(good);

    expect((await call(app, 'HEAD', `/v1/blobs/${goodSha}`, client)).statusCode).toBe(404);
    const put = await app.inject({ method: 'PUT', url: `/v1/blobs/${goodSha}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, payload: good });
    expect(put.statusCode).toBe(201);
    expect(put.json()).toEqual({ sha256: goodSha, size_bytes: good.length, created: true });
    const head = await call(app, 'HEAD', `/v1/blobs/${goodSha}`, client);
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe(String(good.length));
    const get = await call(app, 'GET', `/v1/blobs/${goodSha}`, client);
    expect(get.statusCode).toBe(200);
    expect(get.rawPayload.equals(good)).toBe(true);
    // Uploading the same blob again verifies the bytes and changes nothing.
    const again = await app.inject({ method: 'PUT', url: `/v1/blobs/${goodSha}`, headers: auth, payload: good });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ created: false });

    // Bytes that hash to something else: 422 digest_mismatch, no row, no file, no temp file left.
    const claimed = sha256Hex('the bytes the client meant to send');
    const bad = await app.inject({ method: 'PUT', url: `/v1/blobs/${claimed}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, payload: Buffer.from('tampered bytes') });
    expect(bad.statusCode).toBe(422);
    expect(bad.json()).toMatchObject({ error: 'digest_mismatch', detail: { expected: claimed, actual: sha256Hex('tampered bytes') } });
    expect(await blobRows(claimed)).toBe(0);
    expect(existsSync(blobPath(claimed))).toBe(false);
    expect((await call(app, 'HEAD', `/v1/blobs/${claimed}`, client)).statusCode).toBe(404);
    expect(tmpFiles()).toEqual([]);

    // A mismatching upload under the digest of a stored blob does not damage the stored one.
    const overwrite = await app.inject({ method: 'PUT', url: `/v1/blobs/${goodSha}`, headers: auth, payload: Buffer.from('not the csv') });
    expect(overwrite.statusCode).toBe(422);
    expect((await call(app, 'GET', `/v1/blobs/${goodSha}`, client)).rawPayload.equals(good)).toBe(true);

    // An empty file is a valid blob.
    const emptySha = sha256Hex('');
    const empty = await app.inject({ method: 'PUT', url: `/v1/blobs/${emptySha}`, headers: auth, payload: Buffer.alloc(0) });
    expect(empty.statusCode).toBe(201);
  });

  it('answers 413 for a blob over the limit, declared or streamed, and keeps nothing', async () => {
    const app = await build(db, { blobMaxBytes: 1024 });
    const client = await createToken(app, 'big', 'client');
    const auth = { authorization: `Bearer ${client}` };
    const big = Buffer.alloc(4096, 7);
    const bigSha = sha256Hex(big);

    const declared = await app.inject({ method: 'PUT', url: `/v1/blobs/${bigSha}`, headers: { ...auth, 'content-type': 'application/octet-stream' }, payload: big });
    expect(declared.statusCode).toBe(413);
    expect(declared.json()).toMatchObject({ error: 'payload_too_large' });

    // No content-length: the limit is enforced while streaming.
    const streamed = await app.inject({
      method: 'PUT', url: `/v1/blobs/${bigSha}`, headers: { ...auth, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
      payload: Readable.from([big.subarray(0, 1000), big.subarray(1000)]),
    });
    expect(streamed.statusCode).toBe(413);
    expect(await blobRows(bigSha)).toBe(0);
    expect(existsSync(blobPath(bigSha))).toBe(false);
    expect(tmpFiles()).toEqual([]);

    // The JSON body limit applies to ordinary routes.
    const huge = await call(app, 'POST', '/v1/manifests', client, { files: Array.from({ length: 20_000 }, (_, i) => ({ name: `f${i}`, sha256: bigSha, size: 1 })) });
    expect(huge.statusCode).toBe(413);
  });

  it('records a manifest and reports only the blobs still missing, so stored blobs are not uploaded twice', async () => {
    const app = await build(db);
    const client = await createToken(app, 'inputs', 'client');
    const sched = await createToken(app, 'inputs', 'scheduler');
    const a = Buffer.from('alpha\n');
    const b = Buffer.from('beta\n');
    const files = [
      { name: 'b.csv', sha256: sha256Hex(b), size: b.length },
      { name: 'a.csv', sha256: sha256Hex(a), size: a.length },
    ];
    const input = inputSha256(files);

    const first = await call(app, 'POST', '/v1/manifests', client, { files, input_sha256: input });
    expect(first.statusCode).toBe(201);
    expect(first.json()).toMatchObject({ input_sha256: input, created: true, total_size: a.length + b.length });
    expect(first.json().files.map((f: { name: string }) => f.name)).toEqual(['a.csv', 'b.csv']);
    expect([...first.json().missing].sort()).toEqual([sha256Hex(a), sha256Hex(b)].sort());

    const resolveBefore = (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha256Hex('s'), input_sha256: input })).json();
    expect(resolveBefore.inputs).toMatchObject({ input_sha256: input, manifest: true, stored: false });

    // The client uploads what is missing; only `a` this time.
    expect((await app.inject({ method: 'PUT', url: `/v1/blobs/${sha256Hex(a)}`, headers: { authorization: `Bearer ${client}` }, payload: a })).statusCode).toBe(201);
    const second = await call(app, 'POST', '/v1/manifests', client, { files });
    expect(second.statusCode).toBe(200);
    expect(second.json()).toMatchObject({ created: false, missing: [sha256Hex(b)] });

    expect((await app.inject({ method: 'PUT', url: `/v1/blobs/${sha256Hex(b)}`, headers: { authorization: `Bearer ${client}` }, payload: b })).statusCode).toBe(201);
    // A second run with the same inputs: nothing to upload.
    const third = await call(app, 'POST', '/v1/manifests', client, { files });
    expect(third.json().missing).toEqual([]);
    // A different manifest sharing blob `a`: only its new blob is missing.
    const c = Buffer.from('gamma\n');
    const other = await call(app, 'POST', '/v1/manifests', client, { files: [{ name: 'a.csv', sha256: sha256Hex(a), size: a.length }, { name: 'c.csv', sha256: sha256Hex(c), size: c.length }] });
    expect(other.json().missing).toEqual([sha256Hex(c)]);

    const resolveAfter = (await call(app, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha256Hex('s'), input_sha256: input })).json();
    expect(resolveAfter.inputs).toEqual({ input_sha256: input, manifest: true, stored: true, missing_blobs: [] });
    const got = await call(app, 'GET', `/v1/manifests/${input}`, client);
    expect(got.json()).toMatchObject({ input_sha256: input, missing: [] });
    expect((await call(app, 'GET', `/v1/manifests/${sha256Hex('unknown')}`, client)).statusCode).toBe(404);
  });
});
