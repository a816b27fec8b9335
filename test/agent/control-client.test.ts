/**
 * The agent's one control-plane client (agent/control/) against a fake control plane on 127.0.0.1 that
 * answers what a real one must not, or what a proxy in front of it answers: every answer is decoded into
 * a typed error or checked against its wire schema; credentials are read for every request.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient } from '../../agent/control/client.js';
import { resolveConfig, type AgentConfig } from '../../agent/config.js';
import { isTransient } from '../../common/retry.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

let server: Server;
let url = '';
let handler: Handler = (_req, res) => res.writeHead(404).end();
const seen: Array<{ method: string; url: string; authorization: string | undefined }> = [];
let dir = '';
let config: AgentConfig;
let client: ControlPlaneClient;

const WORKER = 'worker-1';
const ACCOUNT = 'acme';
const SHA = 'a'.repeat(64);
const json = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};
const PROXY_502 = '<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>';

function configure(over: Record<string, unknown>): void {
  config = resolveConfig({}, { socket: join(dir, 'agent.sock'), data_dir: dir, control_url: url, worker_id: WORKER, ...over });
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rgrid-control-client-'));
  seen.length = 0;
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
      handler(req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  configure({ worker_token: 'token-a' });
  client = new ControlPlaneClient(() => config);
});

afterEach(async () => {
  await client.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('answers that are not the wire contract', () => {
  it("a proxy's HTML 502 on a blob fetch is a transient outage, not a SyntaxError or a permanent failure", async () => {
    handler = (_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end(PROXY_502);
    const err = await client.getBlob(ACCOUNT, SHA).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(SyntaxError);
    expect(err).toMatchObject({ code: 'unavailable', status: 502 });
    expect(isTransient(err)).toBe(true);
    // The same for a JSON call.
    const renew = await client.renew(randomUUID(), randomUUID()).catch((e: unknown) => e);
    expect(renew).toMatchObject({ code: 'unavailable', status: 502 });
  });

  it('an empty 503 is an outage; a JSON error keeps its code and resync detail', async () => {
    handler = (_req, res) => res.writeHead(503).end();
    await expect(client.heartbeat({ load: { running: 0 } })).rejects.toMatchObject({ code: 'unavailable', status: 503 });
    handler = (_req, res) => json(res, 409, { error: 'conflict', message: 'worker unknown', detail: { resync_required: true } });
    const err = await client.ops({ ops: [] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'conflict', status: 409, detail: { resync_required: true } });
    expect(isTransient(err)).toBe(false);
  });

  it('a 2xx that is not JSON, or JSON of the wrong shape, is refused as bad_response', async () => {
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>captive portal</html>');
    await expect(client.renew(randomUUID(), randomUUID())).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { lease_expires_at: 42 });
    await expect(client.renew(randomUUID(), randomUUID())).rejects.toMatchObject({ code: 'bad_response', message: expect.stringContaining('a renewal does not match the wire schema (/lease_expires_at') as string });
    handler = (_req, res) => json(res, 200, { applied: '3', duplicates: 0, server_time: new Date().toISOString() });
    await expect(client.ops({ ops: [] })).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { accounts: ['../../etc'], entries: 0, removed: 0, server_time: new Date().toISOString() });
    await expect(client.snapshot({ accounts: [], entries: [] })).rejects.toMatchObject({ code: 'bad_response' });
  });

  it('refuses a registration answered for another worker, and a claim answer longer than asked', async () => {
    const registration = { known: true, snapshot_required: true, accounts: [ACCOUNT], heartbeat_interval_ms: 1000, dead_after_ms: 5000, server_time: new Date().toISOString() };
    handler = (_req, res) => json(res, 200, { ...registration, worker_id: 'someone-else' });
    await expect(client.register({ host: 'h', capacity: 1, agent_version: 't' })).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { ...registration, worker_id: WORKER });
    await expect(client.register({ host: 'h', capacity: 1, agent_version: 't' })).resolves.toMatchObject({ accounts: [ACCOUNT] });
    handler = (_req, res) => json(res, 200, { claims: [{}, {}, {}] });
    await expect(client.claim(2, 10)).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { claims: 'none' });
    await expect(client.claim(2, 10)).rejects.toMatchObject({ code: 'bad_response' });
  });

  it('leaves with an empty body, and refuses a leave answered for another worker or without its time', async () => {
    const left = { worker_id: WORKER, leaving_at: new Date().toISOString(), reassigned: 2 };
    let body = '';
    handler = (_req, res, b) => {
      body = b;
      json(res, 200, left);
    };
    await expect(client.leave()).resolves.toEqual(left);
    expect(seen.at(-1)).toMatchObject({ method: 'POST', url: `/v1/workers/${WORKER}/leave` });
    expect(JSON.parse(body)).toEqual({});
    handler = (_req, res) => json(res, 200, { ...left, worker_id: 'someone-else' });
    await expect(client.leave()).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { worker_id: WORKER, reassigned: 0 });
    await expect(client.leave()).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 409, { error: 'conflict', message: 'worker-1: not registered', detail: { resync_required: true } });
    await expect(client.leave()).rejects.toMatchObject({ code: 'conflict', detail: { resync_required: true } });
  });

  it('refuses an upload answer that names another digest or size', async () => {
    const { Readable } = await import('node:stream');
    handler = (_req, res) => json(res, 201, { sha256: 'b'.repeat(64), size_bytes: 3, created: true });
    await expect(client.putBlob(ACCOUNT, SHA, 3, Readable.from([Buffer.from('abc')]))).rejects.toMatchObject({ code: 'digest_mismatch' });
  });

  it('sends nothing for an id or digest outside the naming contract', async () => {
    handler = (_req, res) => json(res, 200, {});
    await expect(client.renew('../../admin', randomUUID())).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.getBlob(ACCOUNT, '../../etc/passwd')).rejects.toMatchObject({ code: 'bad_digest' });
    await expect(client.recordManifest('a/../b', [])).rejects.toMatchObject({ code: 'bad_request' });
    expect(seen).toEqual([]);
  });
});

describe('no answer', () => {
  it('a call past its time bound is an outage; an abort by the caller stays an abort', async () => {
    handler = () => undefined; // never answers
    const timedOut = await client.heartbeat({ load: { running: 0 } }, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(timedOut).toMatchObject({ code: 'unavailable', errno: 'timeout' });
    expect(isTransient(timedOut)).toBe(true);
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 50);
    const aborted = await client.claim(1, 25_000, { signal: stop.signal }).catch((e: unknown) => e);
    expect((aborted as Error).name).toBe('AbortError');
  });

  it('closing does not wait for a request the control plane never answers', async () => {
    handler = () => undefined;
    const pending = client.claim(1, 25_000).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 50));
    await client.close(100);
    expect(await pending).toMatchObject({ code: 'unavailable', errno: 'UND_ERR_DESTROYED' });
  });

  it('closing waits for nothing once every answer was read, whatever it was', async () => {
    const { Readable } = await import('node:stream');
    handler = (req, res) => {
      if (req.url?.startsWith('/v1/blobs/') && req.method === 'GET') res.writeHead(200).end('bytes');
      else if (req.url?.endsWith('/heartbeat')) json(res, 200, { known: true, resync_required: false, server_time: new Date().toISOString() });
      else res.writeHead(502).end(PROXY_502);
    };
    await client.heartbeat({ load: { running: 0 } });
    await client.renew(randomUUID(), randomUUID()).catch(() => undefined);
    const blob = await client.getBlob(ACCOUNT, SHA);
    for await (const chunk of blob) void chunk;
    await client.putBlob(ACCOUNT, SHA, 3, Readable.from([Buffer.from('abc')])).catch(() => undefined);
    // A grace far beyond the test's timeout: only an idle client closes in time.
    await client.close(60_000);
  });

  it('a refused connection is a transient outage', async () => {
    configure({ worker_token: 'token-a', control_url: 'http://127.0.0.1:9' });
    const err = await client.heartbeat({ load: { running: 0 } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', errno: 'ECONNREFUSED' });
    expect(isTransient(err)).toBe(true);
  });
});

describe('credentials, read for every request', () => {
  const ok: Handler = (_req, res) => json(res, 200, { known: true, resync_required: false, server_time: new Date().toISOString() });

  it('carries a rotated token file from the next request on', async () => {
    handler = ok;
    const file = join(dir, 'worker-token');
    writeFileSync(file, 'token-a\n', { mode: 0o600 });
    configure({ worker_token_file: file });
    await client.heartbeat({ load: { running: 0 } });
    // Rotation as an operator does it: a new file moved over the old one.
    writeFileSync(`${file}.new`, 'token-b\n', { mode: 0o600 });
    renameSync(`${file}.new`, file);
    await client.heartbeat({ load: { running: 0 } });
    expect(seen.map((s) => s.authorization)).toEqual(['Bearer token-a', 'Bearer token-b']);
    expect(seen.map((s) => s.url)).toEqual([`/v1/workers/${WORKER}/heartbeat`, `/v1/workers/${WORKER}/heartbeat`]);
  });

  it('follows a changed address and worker id of the live config', async () => {
    handler = ok;
    await client.heartbeat({ load: { running: 0 } });
    configure({ worker_token: 'token-a', worker_id: 'worker-2' });
    await client.heartbeat({ load: { running: 0 } });
    expect(seen.map((s) => s.url)).toEqual([`/v1/workers/${WORKER}/heartbeat`, '/v1/workers/worker-2/heartbeat']);
  });

  it('sends nothing when the token file cannot be used, and says so as an outage', async () => {
    handler = ok;
    const file = join(dir, 'worker-token');
    writeFileSync(file, 'token-a\n');
    chmodSync(file, 0o644);
    configure({ worker_token_file: file });
    const err = await client.heartbeat({ load: { running: 0 } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', message: expect.stringContaining('group or others may access it') as string });
    rmSync(file);
    await expect(client.heartbeat({ load: { running: 0 } })).rejects.toMatchObject({ code: 'unavailable' });
    expect(seen).toEqual([]);
  });
});

describe('build leases and pushed images', () => {
  const body = {
    account: ACCOUNT, kind: 'image' as const, key: SHA, runtime: 'python3.11', base_image_id: `sha256:${'b'.repeat(64)}`,
    requirements_sha256: null, script_sha256: SHA, deps_key: null, registry: '127.0.0.1:5000', wait_ms: 0,
  };
  const pushedAnswer = { state: 'pushed', registry: '127.0.0.1:5000', manifest_digest: `sha256:${'e'.repeat(64)}`, size_bytes: 10, pushed_by: 'w2' };

  it('sends the routes of the contract and accepts answers that match it', async () => {
    const lease = randomUUID();
    handler = (req, res) => {
      if (req.url?.endsWith('/image-builds')) return json(res, 200, pushedAnswer);
      if (req.url?.endsWith('/renew')) return json(res, 200, { lease_expires_at: new Date().toISOString() });
      if (req.url?.endsWith('/complete')) return json(res, 200, { ok: true });
      return json(res, 200, { recorded: true, manifest_digest: pushedAnswer.manifest_digest });
    };
    expect(await client.acquireBuild(body)).toEqual(pushedAnswer);
    await client.renewBuild(lease);
    await client.completeBuild(lease, { outcome: 'released' });
    const record = { ...body, manifest_digest: pushedAnswer.manifest_digest, size_bytes: 10 };
    delete (record as { wait_ms?: number }).wait_ms;
    expect(await client.recordPush(record)).toMatchObject({ recorded: true });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      `POST /v1/workers/${WORKER}/image-builds`,
      `POST /v1/workers/${WORKER}/image-builds/${lease}/renew`,
      `POST /v1/workers/${WORKER}/image-builds/${lease}/complete`,
      `PUT /v1/workers/${WORKER}/registry-images`,
    ]);
  });

  it('refuses a push in another registry, a malformed digest, and a lease id outside the contract', async () => {
    handler = (_req, res) => json(res, 200, { ...pushedAnswer, registry: 'evil.example:443' });
    await expect(client.acquireBuild(body)).rejects.toMatchObject({ code: 'bad_response' });
    handler = (_req, res) => json(res, 200, { ...pushedAnswer, manifest_digest: 'sha256:../../etc' });
    await expect(client.acquireBuild(body)).rejects.toMatchObject({ code: 'bad_response' });
    seen.length = 0;
    await expect(client.renewBuild('../claims/x')).rejects.toMatchObject({ code: 'bad_request' });
    expect(seen).toEqual([]);
  });
});
