/**
 * The client's HTTP calls to the control plane (`rgrid run|status|logs`), over Node's own http/https
 * module with a keep-alive agent. Not undici: loading it is about 100 ms of a CLI process's start-up,
 * a large part of a cached `rgrid run` (issue 5's measure); node:http is already in the binary. https is
 * loaded only for an https URL. Errors come back as RgridError rebuilt from the control plane's error body.
 */
import { createReadStream } from 'node:fs';
import type { Agent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import * as http from 'node:http';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errorFromBody, RgridError } from '../common/errors.js';
import type { Execution, ManifestResponse } from '../common/wire/control-api.js';
import type { LogsResponse, SubmitExecutionRequest } from '../common/wire/dispatch-api.js';

/** How long the control plane may take to start answering (a wait long poll is held up to a minute). */
const HEADERS_TIMEOUT_MS = 120_000;

interface Transport {
  request(options: RequestOptions): ClientRequest;
  agent: Agent;
}

/** A finished execution as `GET /wait?logs=true` answers it: the logs ride along (absent from older servers). */
export type WaitedExecution = Execution & { logs?: LogsResponse };

export class ControlApi {
  /** The URL as given (without trailing slashes). Parsed on the first request, so a bad one fails like an unreachable one. */
  private readonly url: string;
  private transport: Promise<Transport & { base: URL }> | undefined;

  constructor(url: string, private readonly token: string) {
    this.url = url.replace(/\/+$/, '');
  }

  private async getTransport(): Promise<Transport & { base: URL }> {
    this.transport ??= (async () => {
      const base = new URL(this.url);
      const mod = base.protocol === 'https:' ? await import('node:https') : http;
      return { base, request: (o: RequestOptions) => mod.request(o), agent: new mod.Agent({ keepAlive: true }) };
    })();
    return this.transport;
  }

  /** Sends a request and resolves with the response once its headers are in. */
  private async open(method: string, path: string, headers: Record<string, string>, body?: string | NodeJS.ReadableStream): Promise<IncomingMessage> {
    const t = await this.getTransport();
    const base = t.base;
    const prefix = base.pathname === '/' ? '' : base.pathname;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = t.request({
        protocol: base.protocol, hostname: base.hostname.replace(/^\[(.*)\]$/, '$1'), port: base.port, path: `${prefix}${path}`,
        method, agent: t.agent, headers: { authorization: `Bearer ${this.token}`, ...headers },
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${HEADERS_TIMEOUT_MS / 1000} s`)), HEADERS_TIMEOUT_MS);
      req.once('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      if (body === undefined || typeof body === 'string') req.end(body);
      else pipeline(body, req).catch((err: unknown) => req.destroy(err as Error));
    });
  }

  private static async text(res: IncomingMessage): Promise<string> {
    res.setEncoding('utf8');
    let text = '';
    for await (const chunk of res) text += chunk as string;
    return text;
  }

  private static async fail(res: IncomingMessage): Promise<never> {
    const text = await ControlApi.text(res);
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    throw errorFromBody(res.statusCode ?? 500, parsed);
  }

  private async send(method: string, path: string, body?: unknown): Promise<unknown> {
    let res: IncomingMessage;
    try {
      const json = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = json === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(json)) };
      res = await this.open(method, path, headers, json);
    } catch (err) {
      throw new RgridError('unavailable', `cannot reach the control plane at ${this.url}: ${(err as Error).message}`);
    }
    if ((res.statusCode ?? 500) >= 400) return ControlApi.fail(res);
    const text = await ControlApi.text(res);
    try {
      return text ? (JSON.parse(text) as unknown) : undefined;
    } catch {
      return undefined;
    }
  }

  recordManifest(files: Array<{ name: string; sha256: string; size: number }>, inputSha256?: string): Promise<ManifestResponse> {
    return this.send('POST', '/v1/manifests', { files, ...(inputSha256 ? { input_sha256: inputSha256 } : {}) }) as Promise<ManifestResponse>;
  }

  /** Streams a file up; `onBytes` sees the progress. The control plane verifies the digest. */
  async putBlob(sha256: string, path: string, size: number, onBytes?: (n: number) => void): Promise<void> {
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        onBytes?.(chunk.length);
        cb(null, chunk);
      },
    });
    const res = await this.open('PUT', `/v1/blobs/${sha256}`, { 'content-type': 'application/octet-stream', 'content-length': String(size) }, createReadStream(path).pipe(meter));
    if ((res.statusCode ?? 500) >= 400) return ControlApi.fail(res);
    res.resume();
  }

  async getBlob(sha256: string): Promise<NodeJS.ReadableStream> {
    const res = await this.open('GET', `/v1/blobs/${sha256}`, {});
    if (res.statusCode !== 200) return ControlApi.fail(res);
    return res;
  }

  submit(body: SubmitExecutionRequest): Promise<Execution> {
    return this.send('POST', '/v1/executions/submit', body) as Promise<Execution>;
  }

  get(id: string): Promise<Execution> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}`) as Promise<Execution>;
  }

  /**
   * Long poll: returns when the execution finished or after the server's wait limit. With `withLogs`,
   * a finished execution comes back with its logs (`logs`), saving the separate logs request; a control
   * plane that predates this leaves `logs` out and the caller asks for them itself.
   */
  wait(id: string, timeoutMs = 25_000, withLogs = false): Promise<WaitedExecution> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}/wait?timeout_ms=${timeoutMs}${withLogs ? '&logs=true' : ''}`) as Promise<WaitedExecution>;
  }

  logs(id: string): Promise<LogsResponse> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}/logs`) as Promise<LogsResponse>;
  }

  async close(): Promise<void> {
    if (!this.transport) return;
    const t = await this.transport.catch(() => undefined);
    t?.agent.destroy();
  }
}
