/**
 * The claim loop's HTTP client of the control plane: claim, renew, complete, manifests and blob
 * transfer. Registration, snapshots and entry deltas belong to the sync client (agent/sync/), which the
 * claim loop reaches through its EntryReporter.
 *
 * What goes out is built from checked values only (ids and digests in paths are checked against the
 * naming contract first); what comes back is checked against the wire schemas before anyone uses it.
 * Error messages written by the control plane are passed on through `shown()`, so a hostile answer
 * cannot put terminal escapes or a line break into the agent's log. The claims of a claim answer are
 * checked one by one by the caller (claim-check.ts), so one bad claim does not hide the good ones.
 */
import type { Readable } from 'node:stream';
import type { TSchema } from 'typebox';
import Value from 'typebox/value';
import { Agent, request, type Dispatcher } from 'undici';
import { errorFromBody, RgridError } from '../../common/errors.js';
import { assertAccount, assertUuid, assertWorkerId, isSha256, shown } from '../../common/names.js';
import { Execution, ManifestResponse, PutBlobResponse } from '../../common/wire/control-api.js';
import { RenewResponse, type CompleteRequest } from '../../common/wire/dispatch-api.js';

export interface ControlClientOptions {
  controlUrl: string;
  workerToken: string;
  workerId: string;
}

/** A claim answer before its claims are checked. */
export interface RawClaimResponse {
  claims: unknown[];
}

function sha(value: string): string {
  if (isSha256(value)) return value;
  throw new RgridError('bad_digest', `${shown(value)} is not a sha256; not sent to the control plane`);
}

/** A control-plane error with its message made safe to log; the code (and resync detail) is kept. */
function fromControlPlane(status: number, body: unknown): RgridError {
  const err = errorFromBody(status, body);
  const resync = err.detail?.resync_required === true;
  return new RgridError(err.code, `control plane answered ${status}: ${shown(err.message, 300)}`, resync ? { resync_required: true } : undefined);
}

function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // A proxy's HTML error page, or a truncated body: treated as no body.
    return undefined;
  }
}

function checked<T>(schema: TSchema, value: unknown, what: string): T {
  if (Value.Check(schema, value)) return value as T;
  const first = Value.Errors(schema, value)[0];
  // Looks like a control plane of another version or something else answering: retried like an outage.
  throw new RgridError('unavailable', `the control plane's answer to ${what} does not match the wire schema (${first?.instancePath || '/'} ${first?.keyword ?? ''})`);
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
    this.workerId = assertWorkerId(options.workerId);
  }

  private get w(): string {
    return `/v1/workers/${encodeURIComponent(this.workerId)}`;
  }

  private async send(method: Dispatcher.HttpMethod, path: string, init: { body?: unknown; raw?: Readable; size?: number; signal?: AbortSignal | undefined }): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { authorization: this.auth };
    let body: string | Readable | undefined;
    if (init.raw) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(init.size);
      body = init.raw;
    } else if (init.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.body);
    }
    try {
      return await request(`${this.base}${path}`, {
        method, dispatcher: this.dispatcher, headers, ...(body === undefined ? {} : { body }), ...(init.signal ? { signal: init.signal } : {}),
      });
    } catch (err) {
      if (init.signal?.aborted) throw err;
      throw new RgridError('unavailable', `control plane unreachable at ${this.base}: ${shown((err as Error).message, 200)}`);
    }
  }

  private async json(method: Dispatcher.HttpMethod, path: string, init: { body?: unknown; raw?: Readable; size?: number; signal?: AbortSignal | undefined }): Promise<unknown> {
    const res = await this.send(method, path, init);
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      if (init.signal?.aborted) throw err;
      throw new RgridError('unavailable', `the control plane's answer broke off: ${shown((err as Error).message, 200)}`);
    }
    const parsed = parseJson(text);
    if (res.statusCode >= 400) throw fromControlPlane(res.statusCode, parsed);
    return parsed;
  }

  /** The claims still need checking one by one (claim-check.ts). */
  async claim(max: number, waitMs: number, signal?: AbortSignal): Promise<RawClaimResponse> {
    const answer = await this.json('POST', `${this.w}/claim`, { body: { max, wait_ms: waitMs }, signal });
    const claims = (answer as { claims?: unknown } | undefined)?.claims;
    if (!Array.isArray(claims) || claims.length > max) {
      throw new RgridError('unavailable', `the control plane's answer to a claim is not a list of at most ${max} claims`);
    }
    return { claims };
  }

  async renew(executionId: string, claimId: string, signal?: AbortSignal): Promise<RenewResponse> {
    const path = `${this.w}/claims/${assertUuid(executionId, 'execution_id')}/renew`;
    return checked(RenewResponse, await this.json('POST', path, { body: { claim_id: assertUuid(claimId, 'claim_id') }, signal }), 'a renewal');
  }

  /**
   * Reports the result. The answer's shape matters only for the log line; a 2xx means the result is
   * recorded, so an answer that does not match the schema is returned as null rather than retried.
   */
  async complete(executionId: string, body: CompleteRequest, signal?: AbortSignal): Promise<Execution | null> {
    const path = `${this.w}/claims/${assertUuid(executionId, 'execution_id')}/complete`;
    const answer = await this.json('POST', path, { body, signal });
    return Value.Check(Execution, answer) ? answer : null;
  }

  async recordManifest(account: string, files: Array<{ name: string; sha256: string; size: number }>, signal?: AbortSignal): Promise<ManifestResponse> {
    const path = `/v1/manifests?account=${encodeURIComponent(assertAccount(account))}`;
    return checked(ManifestResponse, await this.json('POST', path, { body: { files }, signal }), 'a manifest');
  }

  /** The blob's bytes as a stream; the blob cache verifies digest and size while writing them. */
  async getBlob(account: string, sha256: string, signal?: AbortSignal): Promise<Readable> {
    const res = await this.send('GET', `/v1/blobs/${sha(sha256)}?account=${encodeURIComponent(assertAccount(account))}`, { signal });
    if (res.statusCode !== 200) throw fromControlPlane(res.statusCode, parseJson(await res.body.text().catch(() => '')));
    return res.body;
  }

  /** Uploads a blob; the answer must name the same digest and size, or the upload did not happen as asked. */
  async putBlob(account: string, sha256: string, size: number, body: Readable, signal?: AbortSignal): Promise<PutBlobResponse> {
    const path = `/v1/blobs/${sha(sha256)}?account=${encodeURIComponent(assertAccount(account))}`;
    const answer = checked<PutBlobResponse>(PutBlobResponse, await this.json('PUT', path, { raw: body, size, signal }), 'a blob upload');
    if (answer.sha256 !== sha256 || answer.size_bytes !== size) {
      throw new RgridError('digest_mismatch', `the control plane stored ${answer.sha256} (${answer.size_bytes} bytes) for ${sha256} (${size} bytes)`);
    }
    return answer;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  destroy(): void {
    void this.dispatcher.destroy();
  }
}
