/**
 * A fake control plane on 127.0.0.1 for the client's tests: it answers the calls `rgrid run` makes
 * (manifests, blob HEAD/PUT/GET, submit, wait, logs, status) with whatever a test wants, hostile answers
 * and outages included. Not the real control plane: the point is to send what the real one never would.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

/** What a handler may do with a request: answer it, or return false to fall through to the defaults. */
export type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer, seen: SeenRequest) => boolean | Promise<boolean>;

export interface FakeOutput {
  name: string;
  /** The bytes served for its blob. */
  content: Buffer;
  /** What the execution claims (defaults: the content's). */
  sha256?: string;
  size?: number;
}

export interface FakeRunOptions {
  exitCode?: number;
  outputs?: FakeOutput[];
  error?: string | null;
  failure?: string | null;
  stdout?: string;
  stderr?: string;
  /** Answers `wait` with a still-running execution this many times first. */
  pendingWaits?: number;
  /** The execution's requirements digest (default: none). */
  requirementsSha256?: string | null;
  /** The lock the worker reports for a finished run (default: none; a value the wire forbids is sent as given). */
  lock?: { lock_sha256: unknown; resolved: unknown; resolution: unknown };
}

export interface FakeControl {
  url: string;
  requests: SeenRequest[];
  executionId: string;
  /** Runs before the default answers; return true when it answered. */
  intercept(handler: Handler | undefined): void;
  /** Stops listening and drops every open connection (clients see ECONNREFUSED / ECONNRESET). */
  goDown(): Promise<void>;
  /** Listens again on the same port. */
  comeBack(): Promise<void>;
  close(): Promise<void>;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export function execution(id: string, o: FakeRunOptions & { status: string }): Record<string, unknown> {
  const now = new Date().toISOString();
  const finished = ['succeeded', 'failed', 'cancelled'].includes(o.status);
  return {
    id, account: 'acme', status: o.status, runtime: 'python3.11', script_sha256: 'a'.repeat(64), requirements_sha256: o.requirementsSha256 ?? null, input_sha256: null,
    worker_id: finished ? 'w1' : null, exit_code: finished ? (o.exitCode ?? 0) : null, script_cache_hit: true, dependency_cache_hit: null,
    input_cache_hit: null, timings: finished ? { queue_ms: 1, run_ms: 2 } : {}, error: o.error ?? null, attempts: 1, max_attempts: 3,
    lock_sha256: finished ? (o.lock?.lock_sha256 ?? null) : null, resolved: finished ? (o.lock?.resolved ?? null) : null,
    resolution: finished ? (o.lock?.resolution ?? null) : null,
    failure: finished ? (o.failure ?? ((o.exitCode ?? 0) === 0 ? null : 'nonzero_exit')) : null, downloaded_blobs: finished ? 0 : null, image_origin: finished ? 'local' : null,
    outputs: finished ? (o.outputs ?? []).map((f) => ({ name: f.name, sha256: f.sha256 ?? sha(f.content), size: f.size ?? f.content.length })) : [],
    created_at: now, updated_at: now, finished_at: finished ? now : null,
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startFakeControl(run: FakeRunOptions = {}): Promise<FakeControl> {
  const executionId = randomUUID();
  const requests: SeenRequest[] = [];
  const blobs = new Map<string, Buffer>();
  for (const f of run.outputs ?? []) blobs.set(f.sha256 ?? sha(f.content), f.content);
  let interceptor: Handler | undefined;
  let waits = 0;
  const sockets = new Set<Socket>();

  const defaults = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname;
    if (req.method === 'POST' && path === '/v1/manifests') {
      const files = (JSON.parse(body.toString()) as { files: Array<{ sha256: string }> }).files;
      json(res, 200, { input_sha256: 'b'.repeat(64), files, total_size: 0, missing: files.map((f) => f.sha256).filter((s) => !blobs.has(s)), created: true });
    } else if (req.method === 'PUT' && path.startsWith('/v1/blobs/')) {
      blobs.set(path.slice('/v1/blobs/'.length), body);
      json(res, 201, { sha256: path.slice('/v1/blobs/'.length), size_bytes: body.length, created: true });
    } else if ((req.method === 'GET' || req.method === 'HEAD') && path.startsWith('/v1/blobs/')) {
      const blob = blobs.get(path.slice('/v1/blobs/'.length));
      if (!blob) return json(res, 404, { error: 'not_found', message: 'no such blob' });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      res.end(req.method === 'HEAD' ? undefined : blob);
    } else if (req.method === 'POST' && path === '/v1/executions/submit') {
      json(res, 201, execution(executionId, { ...run, status: 'queued' }));
    } else if (req.method === 'GET' && path === `/v1/executions/${executionId}/wait`) {
      waits++;
      if (waits <= (run.pendingWaits ?? 0)) return json(res, 200, execution(executionId, { ...run, status: 'running' }));
      const status = (run.exitCode ?? 0) === 0 && !run.failure ? 'succeeded' : 'failed';
      const logs = { execution_id: executionId, status, stdout: run.stdout ?? '', stderr: run.stderr ?? '', truncated: false };
      json(res, 200, { ...execution(executionId, { ...run, status }), ...(url.searchParams.get('logs') === 'true' ? { logs } : {}) });
    } else if (req.method === 'GET' && path === `/v1/executions/${executionId}/logs`) {
      json(res, 200, { execution_id: executionId, status: 'succeeded', stdout: run.stdout ?? '', stderr: run.stderr ?? '', truncated: false });
    } else if (req.method === 'GET' && path === `/v1/executions/${executionId}`) {
      json(res, 200, execution(executionId, { ...run, status: (run.exitCode ?? 0) === 0 ? 'succeeded' : 'failed' }));
    } else {
      json(res, 404, { error: 'not_found', message: `no route ${req.method} ${path}` });
    }
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen = { method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization };
      requests.push(seen);
      void (async () => {
        if (interceptor && (await interceptor(req, res, Buffer.concat(chunks), seen))) return;
        defaults(req, res, Buffer.concat(chunks));
      })();
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    executionId,
    intercept: (h) => (interceptor = h),
    async goDown() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    comeBack: () => new Promise<void>((r) => server.listen(port, '127.0.0.1', r)),
    async close() {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
