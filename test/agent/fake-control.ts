/**
 * A fake control plane for testing the agent's side of the trust boundary: a node:http server on
 * 127.0.0.1 that answers the worker endpoints the agent calls (register, leave, snapshot, heartbeat, ops, claim,
 * renew, complete, blobs, manifests; the image-build leases and registry records of image sharing) with
 * whatever the test queues — including claims no real control
 * plane would hand out — and records every request. Faults: a route can answer 503 (or any status) for
 * its next N calls, or never answer at all.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  body: unknown;
}

export type Route = 'register' | 'leave' | 'claim' | 'renew' | 'complete' | 'blob_get' | 'blob_put' | 'manifest' | 'sync' | 'build_acquire' | 'build_renew' | 'build_complete' | 'registry_images';

/** How the fake answers a build acquire (worker id from the path, the request body); default: a fresh lease. */
export type AcquireHandler = (workerId: string, body: Record<string, unknown>) => unknown;

export interface FakeControl {
  url: string;
  requests: RecordedRequest[];
  /** Completion bodies by execution id (the last one received). */
  completions: Map<string, Record<string, unknown>>;
  /** Blobs: what GET serves, and what PUT stored. */
  blobs: Map<string, Buffer>;
  /** Claims handed out with the next claim answer (as given: the agent must check them); with `workerId`, only to that worker. */
  queueClaims(claims: unknown[], workerId?: string): void;
  /** The next `count` calls of `route` (Infinity: all, until `fail(route, 0)`) answer `status` with an error body. */
  fail(route: Route, count: number, status?: number): void;
  /** Calls of `route` answer `status` for as long as `condition()` holds. */
  failWhile(route: Route, condition: () => boolean, status?: number): void;
  /** Calls of `route` are recorded and never answered (a control plane that hangs). */
  hang(route: Route): void;
  /** Answers build acquires (image sharing); the default grants a fresh 30 s lease every time. */
  onAcquire: AcquireHandler;
  /** Calls of a route, answered or not. */
  calls(route: Route): number;
  close(): Promise<void>;
}

export const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

function routeOf(method: string, path: string): Route | undefined {
  if (/^\/v1\/workers\/[^/]+\/register$/.test(path)) return 'register';
  if (/^\/v1\/workers\/[^/]+\/leave$/.test(path)) return 'leave';
  if (/^\/v1\/workers\/[^/]+\/(snapshot|heartbeat|ops)$/.test(path)) return 'sync';
  if (/^\/v1\/workers\/[^/]+\/claim$/.test(path)) return 'claim';
  if (/^\/v1\/workers\/[^/]+\/claims\/[^/]+\/renew$/.test(path)) return 'renew';
  if (/^\/v1\/workers\/[^/]+\/claims\/[^/]+\/complete$/.test(path)) return 'complete';
  if (path.startsWith('/v1/blobs/')) return method === 'PUT' ? 'blob_put' : 'blob_get';
  if (path === '/v1/manifests') return 'manifest';
  if (/^\/v1\/workers\/[^/]+\/image-builds$/.test(path)) return 'build_acquire';
  if (/^\/v1\/workers\/[^/]+\/image-builds\/[^/]+\/renew$/.test(path)) return 'build_renew';
  if (/^\/v1\/workers\/[^/]+\/image-builds\/[^/]+\/complete$/.test(path)) return 'build_complete';
  if (/^\/v1\/workers\/[^/]+\/registry-images$/.test(path)) return 'registry_images';
  return undefined;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startFakeControl(account: string): Promise<FakeControl> {
  const requests: RecordedRequest[] = [];
  const completions = new Map<string, Record<string, unknown>>();
  const blobs = new Map<string, Buffer>();
  let pending: Array<{ claim: unknown; worker: string | undefined }> = [];
  const faults = new Map<Route, { count: number; status: number; while?: () => boolean }>();
  const counts = new Map<Route, number>();
  const hung = new Set<Route>();
  const now = (): string => new Date().toISOString();
  const lease = (): unknown => ({ state: 'lease', lease_id: randomUUID(), lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), attempt: 1 });
  const fake = { onAcquire: ((): unknown => lease()) as AcquireHandler };

  const send = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    const raw = await readBody(req);
    const route = routeOf(method, path);
    let body: unknown = raw.length > 0 && route !== 'blob_put' ? JSON.parse(raw.toString('utf8')) : undefined;
    if (route === 'blob_put') body = { bytes: raw.length };
    requests.push({ method, url, body });
    if (!route) return send(res, 404, { error: 'not_found', message: `no route ${method} ${path}` });
    counts.set(route, (counts.get(route) ?? 0) + 1);
    if (hung.has(route)) return;
    const fault = faults.get(route);
    if (fault && (fault.while ? fault.while() : fault.count > 0)) {
      fault.count--;
      return send(res, fault.status, { error: fault.status === 409 ? 'conflict' : 'unavailable', message: `injected ${fault.status}` });
    }
    switch (route) {
      case 'register':
        return send(res, 200, {
          worker_id: path.split('/')[3], known: true, snapshot_required: true, accounts: [account], heartbeat_interval_ms: 60_000, dead_after_ms: 120_000, server_time: now(),
        });
      case 'leave':
        return send(res, 200, { worker_id: path.split('/')[3], leaving_at: now(), reassigned: 0 });
      case 'sync':
        if (path.endsWith('/snapshot')) return send(res, 200, { accounts: [account], entries: 0, removed: 0, server_time: now() });
        if (path.endsWith('/ops')) return send(res, 200, { applied: ((body as { ops?: unknown[] }).ops ?? []).length, duplicates: 0, server_time: now() });
        return send(res, 200, { known: true, resync_required: false, server_time: now() });
      case 'claim': {
        // At most `max`, as the real control plane: the agent refuses a longer answer as a whole.
        const max = (body as { max: number }).max;
        const worker = path.split('/')[3];
        const mine = pending.filter((p) => p.worker === undefined || p.worker === worker).slice(0, max);
        pending = pending.filter((p) => !mine.includes(p));
        const claims = mine.map((p) => p.claim);
        // A short hold when there is nothing, so the agent does not spin.
        if (claims.length === 0) await new Promise((r) => setTimeout(r, 200));
        return send(res, 200, { claims });
      }
      case 'renew':
        return send(res, 200, { lease_expires_at: new Date(Date.now() + 30_000).toISOString() });
      case 'complete': {
        const executionId = path.split('/')[5]!;
        completions.set(executionId, body as Record<string, unknown>);
        return send(res, 200, { id: executionId, status: 'succeeded' });
      }
      case 'blob_get': {
        const data = blobs.get(path.split('/')[3]!);
        if (!data) return send(res, 404, { error: 'not_found', message: 'no such blob' });
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
        res.end(data);
        return;
      }
      case 'blob_put': {
        const digest = sha256(raw);
        blobs.set(digest, raw);
        return send(res, 201, { sha256: digest, size_bytes: raw.length, created: true });
      }
      case 'build_acquire':
        return send(res, 200, await fake.onAcquire(path.split('/')[3]!, body as Record<string, unknown>));
      case 'build_renew':
        return send(res, 200, { lease_expires_at: new Date(Date.now() + 30_000).toISOString() });
      case 'build_complete':
        return send(res, 200, { ok: true });
      case 'registry_images':
        return send(res, 200, { recorded: true, manifest_digest: (body as { manifest_digest: string }).manifest_digest });
      case 'manifest': {
        const files = (body as { files: unknown[] }).files;
        return send(res, 201, { input_sha256: sha256(JSON.stringify(files)), files, total_size: 0, missing: [], created: true });
      }
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => send(res, 500, { error: 'internal', message: String(err) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    get onAcquire() {
      return fake.onAcquire;
    },
    set onAcquire(handler: AcquireHandler) {
      fake.onAcquire = handler;
    },
    url: `http://127.0.0.1:${port}`,
    requests,
    completions,
    blobs,
    queueClaims: (claims, workerId) => {
      pending = [...pending, ...claims.map((claim) => ({ claim, worker: workerId }))];
    },
    fail: (route, count, status = 503) => faults.set(route, { count, status }),
    failWhile: (route, condition, status = 503) => faults.set(route, { count: 0, status, while: condition }),
    hang: (route) => hung.add(route),
    calls: (route) => counts.get(route) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Polls until `check` returns a value (not a timing assertion: the deadline only bounds a hang). */
export async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
