/**
 * The client's HTTP calls to the control plane (`rgrid run|status|logs`), over Node's own http/https
 * module with a keep-alive agent. Not undici: loading it is about 100 ms of a CLI process's start-up,
 * a large part of a cached `rgrid run`; node:http is already in the binary. https is loaded only for an
 * https URL. Every answer the client acts on is checked (answers.ts) before it is returned; error answers
 * are decoded like the agent decodes them (common/http-answer.ts: a proxy's HTML page is an outage or a
 * bad answer, never a SyntaxError). Idempotent calls ride out an outage (retry.ts); a submit is repeated
 * only when it cannot have reached the control plane.
 */
import { createReadStream } from 'node:fs';
import type { Agent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import * as http from 'node:http';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ERROR_ANSWER_MAX_BYTES, errorFromAnswer, HttpStatusError, JSON_ANSWER_MAX_BYTES, parseJsonAnswer, readCapped, UnreachableError } from '../common/http-answer.js';
import { isRgridError, RgridError } from '../common/errors.js';
import type { Execution, ManifestResponse } from '../common/wire/control-api.js';
import type { LogsResponse, SubmitExecutionRequest } from '../common/wire/dispatch-api.js';
import { checkExecution, checkLogs, checkManifestAnswer } from './answers.js';
import { isSafeToResubmit, retrying, type RetryOptions } from './retry.js';

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

  constructor(url: string, private readonly token: string, private readonly retry: RetryOptions = { retryForMs: 0 }) {
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

  /** A whole answer, up to JSON_ANSWER_MAX_BYTES (common/http-answer.ts): more is refused, not held. */
  private static async text(res: IncomingMessage, what: string): Promise<string> {
    const read = await readCapped(res, JSON_ANSWER_MAX_BYTES);
    if (read.cut) throw new RgridError('bad_response', `the control plane's answer to ${what} is over ${JSON_ANSWER_MAX_BYTES} bytes`);
    return read.text;
  }

  /** An error answer as a typed error (common/http-answer.ts), whatever its body; only its first 64 KiB are read. */
  private static async fail(res: IncomingMessage): Promise<never> {
    throw errorFromAnswer(res.statusCode ?? 500, (await readCapped(res, ERROR_ANSWER_MAX_BYTES)).text);
  }

  /** One request and its JSON answer; a broken connection before the whole answer is in is `UnreachableError`. */
  private async send(method: string, path: string, body?: unknown): Promise<unknown> {
    const what = `${method} ${path.split('?')[0]}`;
    let text: string;
    try {
      const json = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string> = json === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(json)) };
      const res = await this.open(method, path, headers, json);
      if ((res.statusCode ?? 500) >= 400) return await ControlApi.fail(res);
      text = await ControlApi.text(res, what);
    } catch (err) {
      if (err instanceof HttpStatusError || (isRgridError(err) && err.code === 'bad_response')) throw err;
      throw new UnreachableError(this.url, err as Error);
    }
    return parseJsonAnswer(text, what);
  }

  /** Runs `fn` (an idempotent call, or a whole blob download) under the retry policy. */
  withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retrying(what, fn, this.retry);
  }

  async recordManifest(files: Array<{ name: string; sha256: string; size: number }>, inputSha256?: string): Promise<ManifestResponse> {
    const body = { files, ...(inputSha256 ? { input_sha256: inputSha256 } : {}) };
    const answer = await this.withRetry('recording a manifest', () => this.send('POST', '/v1/manifests', body));
    return checkManifestAnswer(answer, new Set(files.map((f) => f.sha256)));
  }

  /** Streams a file up; `onBytes` sees the progress. The control plane verifies the digest. */
  putBlob(sha256: string, path: string, size: number, onBytes?: (n: number) => void): Promise<void> {
    return this.withRetry(`uploading ${sha256.slice(0, 12)}`, async () => {
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          onBytes?.(chunk.length);
          cb(null, chunk);
        },
      });
      let res: IncomingMessage;
      try {
        res = await this.open('PUT', `/v1/blobs/${sha256}`, { 'content-type': 'application/octet-stream', 'content-length': String(size) }, createReadStream(path).pipe(meter));
      } catch (err) {
        throw new UnreachableError(this.url, err as Error);
      }
      if ((res.statusCode ?? 500) >= 400) return ControlApi.fail(res);
      res.resume();
    });
  }

  /** The blob's bytes as a stream; the caller verifies them against the digest and size it expects. */
  async getBlob(sha256: string): Promise<NodeJS.ReadableStream> {
    let res: IncomingMessage;
    try {
      res = await this.open('GET', `/v1/blobs/${sha256}`, {});
    } catch (err) {
      throw new UnreachableError(this.url, err as Error);
    }
    if (res.statusCode !== 200) return ControlApi.fail(res);
    // A connection that breaks mid-body is an outage like a refused one: the download is retried.
    const body = new PassThrough();
    res.once('error', (err) => body.destroy(new UnreachableError(this.url, err)));
    return res.pipe(body);
  }

  /** Not idempotent: repeated only when the control plane cannot have seen it (retry.ts). */
  async submit(body: SubmitExecutionRequest): Promise<Execution> {
    return checkExecution(await retrying('submitting', () => this.send('POST', '/v1/executions/submit', body), this.retry, isSafeToResubmit));
  }

  async get(id: string): Promise<Execution> {
    return checkExecution(await this.withRetry('reading the execution', () => this.send('GET', `/v1/executions/${encodeURIComponent(id)}`)), id);
  }

  /**
   * Long poll: returns when the execution finished or after the server's wait limit. With `withLogs`,
   * a finished execution comes back with its logs (`logs`), saving the separate logs request; a control
   * plane that predates this leaves `logs` out and the caller asks for them itself.
   */
  async wait(id: string, timeoutMs = 25_000, withLogs = false): Promise<WaitedExecution> {
    const path = `/v1/executions/${encodeURIComponent(id)}/wait?timeout_ms=${timeoutMs}${withLogs ? '&logs=true' : ''}`;
    const answer = await this.withRetry('waiting for the execution', () => this.send('GET', path));
    const execution: WaitedExecution = checkExecution(answer, id);
    if (execution.logs !== undefined) checkLogs(execution.logs, id);
    return execution;
  }

  async logs(id: string): Promise<LogsResponse> {
    return checkLogs(await this.withRetry('reading the logs', () => this.send('GET', `/v1/executions/${encodeURIComponent(id)}/logs`)), id);
  }

  async close(): Promise<void> {
    if (!this.transport) return;
    const t = await this.transport.catch(() => undefined);
    t?.agent.destroy();
  }
}
