/**
 * The client's HTTP calls to the control plane (`rgrid run|status|logs`), over undici with keep-alive.
 * Errors come back as RgridError rebuilt from the control plane's error body.
 */
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { errorFromBody, RgridError } from '../common/errors.js';
import type { Execution, ManifestResponse } from '../common/wire/control-api.js';
import type { LogsResponse, SubmitExecutionRequest } from '../common/wire/dispatch-api.js';

export class ControlApi {
  private readonly base: string;
  private readonly dispatcher: Dispatcher = new Agent({ headersTimeout: 120_000, bodyTimeout: 0 });

  constructor(url: string, private readonly token: string) {
    this.base = url.replace(/\/+$/, '');
  }

  private async send(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<unknown> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw new RgridError('unavailable', `cannot reach the control plane at ${this.base}: ${(err as Error).message}`);
    }
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, parsed);
    return parsed;
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
    const res = await request(`${this.base}/v1/blobs/${sha256}`, {
      method: 'PUT',
      dispatcher: this.dispatcher,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body: createReadStream(path).pipe(meter),
    });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, text ? (JSON.parse(text) as unknown) : undefined);
  }

  async getBlob(sha256: string): Promise<NodeJS.ReadableStream> {
    const res = await request(`${this.base}/v1/blobs/${sha256}`, {
      method: 'GET', dispatcher: this.dispatcher, headers: { authorization: `Bearer ${this.token}` },
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw errorFromBody(res.statusCode, text ? (JSON.parse(text) as unknown) : undefined);
    }
    return res.body;
  }

  submit(body: SubmitExecutionRequest): Promise<Execution> {
    return this.send('POST', '/v1/executions/submit', body) as Promise<Execution>;
  }

  get(id: string): Promise<Execution> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}`) as Promise<Execution>;
  }

  /** Long poll: returns when the execution finished or after the server's wait limit. */
  wait(id: string, timeoutMs = 25_000): Promise<Execution> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}/wait?timeout_ms=${timeoutMs}`) as Promise<Execution>;
  }

  logs(id: string): Promise<LogsResponse> {
    return this.send('GET', `/v1/executions/${encodeURIComponent(id)}/logs`) as Promise<LogsResponse>;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
