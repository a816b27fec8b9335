/**
 * The claim loop's HTTP client of the control plane: claim, renew, complete, manifests and blob
 * transfer. Registration, snapshots and entry deltas belong to the sync client (agent/sync/), which the
 * claim loop reaches through its EntryReporter.
 */
import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { errorFromBody, RgridError } from '../../common/errors.js';
import type {
  Execution, ManifestResponse, PutBlobResponse,
} from '../../common/wire/control-api.js';
import type { ClaimResponse, CompleteRequest, RenewResponse } from '../../common/wire/dispatch-api.js';

export interface ControlClientOptions {
  controlUrl: string;
  workerToken: string;
  workerId: string;
}

export class ControlClient {
  readonly workerId: string;
  private readonly base: string;
  private readonly auth: string;
  // Long polls hold a connection for up to ~25 s: timeouts well above that, keep-alive for the rest.
  private readonly dispatcher: Dispatcher = new Agent({ headersTimeout: 120_000, bodyTimeout: 300_000, keepAliveTimeout: 30_000 });

  constructor(options: ControlClientOptions) {
    this.base = options.controlUrl.replace(/\/+$/, '');
    this.auth = `Bearer ${options.workerToken}`;
    this.workerId = options.workerId;
  }

  private get w(): string {
    return `/v1/workers/${encodeURIComponent(this.workerId)}`;
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: { authorization: this.auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new RgridError('unavailable', `control plane unreachable at ${this.base}: ${(err as Error).message}`);
    }
    const text = await res.body.text();
    const parsed: unknown = text ? JSON.parse(text) : undefined;
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, parsed);
    return parsed as T;
  }

  claim(max: number, waitMs: number, signal?: AbortSignal): Promise<ClaimResponse> {
    return this.json('POST', `${this.w}/claim`, { max, wait_ms: waitMs }, signal);
  }

  renew(executionId: string, claimId: string): Promise<RenewResponse> {
    return this.json('POST', `${this.w}/claims/${executionId}/renew`, { claim_id: claimId });
  }

  complete(executionId: string, body: CompleteRequest): Promise<Execution> {
    return this.json('POST', `${this.w}/claims/${executionId}/complete`, body);
  }

  recordManifest(account: string, files: Array<{ name: string; sha256: string; size: number }>): Promise<ManifestResponse> {
    return this.json('POST', `/v1/manifests?account=${encodeURIComponent(account)}`, { files });
  }

  /** The blob's bytes as a stream (the caller verifies the digest while reading). */
  async getBlob(account: string, sha256: string): Promise<Readable> {
    const res = await request(`${this.base}/v1/blobs/${sha256}?account=${encodeURIComponent(account)}`, {
      method: 'GET', dispatcher: this.dispatcher, headers: { authorization: this.auth },
    }).catch((err: unknown) => {
      throw new RgridError('unavailable', `control plane unreachable at ${this.base}: ${(err as Error).message}`);
    });
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw errorFromBody(res.statusCode, text ? (JSON.parse(text) as unknown) : undefined);
    }
    return res.body;
  }

  async putBlob(account: string, sha256: string, size: number, body: Readable): Promise<PutBlobResponse> {
    const res = await request(`${this.base}/v1/blobs/${sha256}?account=${encodeURIComponent(account)}`, {
      method: 'PUT',
      dispatcher: this.dispatcher,
      headers: { authorization: this.auth, 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
    });
    const text = await res.body.text();
    const parsed: unknown = text ? JSON.parse(text) : undefined;
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, parsed);
    return parsed as PutBlobResponse;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  destroy(): void {
    void this.dispatcher.destroy();
  }
}
