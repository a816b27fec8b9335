/**
 * Everything the agent says to the control plane, in one client: the sync's registration, heartbeats,
 * snapshots and entry ops (agent/sync/), and the claim loop's claims, renewals, results, blobs and
 * manifests (agent/worker/). One HTTP stack and one error model (http.ts), credentials read live
 * (credentials.ts), one retry policy for whoever retries (common/retry.ts).
 *
 * What goes out is built from checked values only (ids and digests in paths are checked against the
 * naming contract first); what comes back is checked against the wire schemas before anyone uses it
 * (http.ts). The claims of a claim answer are checked one by one by the caller (worker/claim-check.ts),
 * so one bad claim does not hide the good ones.
 */
import type { Readable } from 'node:stream';
import Value from 'typebox/value';
import { RgridError } from '../../common/errors.js';
import { assertAccount, assertUuid, isSha256, shown } from '../../common/names.js';
import {
  Execution, LeaveWorkerResponse, ManifestResponse, PutBlobResponse, RegisterWorkerResponse, SnapshotResponse, SyncOpsResponse, SyncStatusResponse,
  type HeartbeatRequest, type RegisterWorkerRequest, type SnapshotRequest, type SyncOpsRequest,
} from '../../common/wire/control-api.js';
import { RenewResponse, type CompleteRequest } from '../../common/wire/dispatch-api.js';
import {
  BuildAcquireResponse, BuildCompleteResponse, BuildRenewResponse, RecordPushResponse,
  type BuildAcquireRequest, type BuildCompleteRequest, type RecordPushRequest,
} from '../../common/wire/registry-api.js';
import type { AgentConfig } from '../config.js';
import { readCredentials, type ControlCredentials } from './credentials.js';
import { checkAnswer, ControlHttp, type CallOptions } from './http.js';

export type { CallOptions } from './http.js';

/** A claim answer before its claims are checked. */
export interface RawClaimResponse {
  claims: unknown[];
}

function sha(value: string): string {
  if (isSha256(value)) return value;
  throw new RgridError('bad_digest', `${shown(value)} is not a sha256; not sent to the control plane`);
}

const worker = (c: ControlCredentials): string => `/v1/workers/${encodeURIComponent(c.workerId)}`;
const claimPath = (executionId: string, action: 'renew' | 'complete') => {
  const id = assertUuid(executionId, 'execution_id');
  return (c: ControlCredentials): string => `${worker(c)}/claims/${id}/${action}`;
};
const buildLeasePath = (leaseId: string, action: 'renew' | 'complete') => {
  const id = assertUuid(leaseId, 'lease_id');
  return (c: ControlCredentials): string => `${worker(c)}/image-builds/${id}/${action}`;
};
const blobPath = (account: string, sha256: string) => {
  const path = `/v1/blobs/${sha(sha256)}?account=${encodeURIComponent(assertAccount(account))}`;
  return (): string => path;
};

export class ControlPlaneClient {
  private readonly http: ControlHttp;

  /** `settings`: the agent's live config (the config store's getter), read on every request. */
  constructor(private readonly settings: () => AgentConfig) {
    this.http = new ControlHttp(() => readCredentials(this.settings()));
  }

  /** The credentials a request sent now would carry (throws when none are configured). */
  credentials(): ControlCredentials {
    return readCredentials(this.settings());
  }

  // ---- sync: registration, heartbeats, snapshots, entry ops

  async register(body: RegisterWorkerRequest, call?: CallOptions): Promise<RegisterWorkerResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/register`, 'a registration', (answer, c) => {
      const registered = checkAnswer<RegisterWorkerResponse>(RegisterWorkerResponse, answer, 'a registration');
      if (registered.worker_id !== c.workerId) {
        throw new RgridError('bad_response', `registered as ${c.workerId}, but the control plane answered for ${shown(registered.worker_id)}`);
      }
      return registered;
    }, { json: body, call });
  }

  async heartbeat(body: HeartbeatRequest, call?: CallOptions): Promise<SyncStatusResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/heartbeat`, 'a heartbeat', (a) => checkAnswer<SyncStatusResponse>(SyncStatusResponse, a, 'a heartbeat'), { json: body, call });
  }

  async snapshot(body: SnapshotRequest, call?: CallOptions): Promise<SnapshotResponse> {
    return await this.http.json('PUT', (c) => `${worker(c)}/snapshot`, 'a snapshot', (a) => checkAnswer<SnapshotResponse>(SnapshotResponse, a, 'a snapshot'), { json: body, call });
  }

  async ops(body: SyncOpsRequest, call?: CallOptions): Promise<SyncOpsResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/ops`, 'entry ops', (a) => checkAnswer<SyncOpsResponse>(SyncOpsResponse, a, 'entry ops'), { json: body, call });
  }

  /**
   * Says this worker is stopping: the control plane stops placing work on it and places what waits in its
   * queue elsewhere; the claims it holds stay its own to renew and complete. No body.
   */
  async leave(call?: CallOptions): Promise<LeaveWorkerResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/leave`, 'a leave', (answer, c) => {
      const left = checkAnswer<LeaveWorkerResponse>(LeaveWorkerResponse, answer, 'a leave');
      if (left.worker_id !== c.workerId) {
        throw new RgridError('bad_response', `left as ${c.workerId}, but the control plane answered for ${shown(left.worker_id)}`);
      }
      return left;
    }, { json: {}, call });
  }

  // ---- dispatch: claims, renewals, results

  /** Long poll for up to `max` claims; the claims still need checking one by one (worker/claim-check.ts). */
  async claim(max: number, waitMs: number, call?: CallOptions): Promise<RawClaimResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/claim`, 'a claim', (answer) => {
      const claims = (answer as { claims?: unknown } | undefined)?.claims;
      if (!Array.isArray(claims) || claims.length > max) {
        throw new RgridError('bad_response', `the control plane's answer to a claim is not a list of at most ${max} claims`);
      }
      return { claims };
    }, { json: { max, wait_ms: waitMs }, call });
  }

  async renew(executionId: string, claimId: string, call?: CallOptions): Promise<RenewResponse> {
    const body = { claim_id: assertUuid(claimId, 'claim_id') };
    return await this.http.json('POST', claimPath(executionId, 'renew'), 'a renewal', (a) => checkAnswer<RenewResponse>(RenewResponse, a, 'a renewal'), { json: body, call });
  }

  /**
   * Reports the result. The answer's shape matters only for the log line; a 2xx means the result is
   * recorded, so an answer that does not match the schema is returned as null rather than refused (a
   * refusal would have the report sent again).
   */
  async complete(executionId: string, body: CompleteRequest, call?: CallOptions): Promise<Execution | null> {
    return await this.http.json('POST', claimPath(executionId, 'complete'), 'a result', (a) => (Value.Check(Execution, a) ? a : null), { json: body, call });
  }

  // ---- blobs and manifests

  async recordManifest(account: string, files: Array<{ name: string; sha256: string; size: number }>, call?: CallOptions): Promise<ManifestResponse> {
    const path = `/v1/manifests?account=${encodeURIComponent(assertAccount(account))}`;
    return await this.http.json('POST', () => path, 'a manifest', (a) => checkAnswer<ManifestResponse>(ManifestResponse, a, 'a manifest'), { json: { files }, call });
  }

  /** The blob's bytes as a stream; the blob cache verifies digest and size while writing them. */
  async getBlob(account: string, sha256: string, call?: CallOptions): Promise<Readable> {
    const answer = await this.http.open('GET', blobPath(account, sha256), { call });
    if (answer.status !== 200) throw await this.http.errorOf(answer, call);
    return answer.body;
  }

  /** Uploads a blob; the answer must name the same digest and size, or the upload did not happen as asked. */
  async putBlob(account: string, sha256: string, size: number, body: Readable, call?: CallOptions): Promise<PutBlobResponse> {
    const answer = await this.http.json('PUT', blobPath(account, sha256), 'a blob upload', (a) => checkAnswer<PutBlobResponse>(PutBlobResponse, a, 'a blob upload'), {
      raw: { body, size }, call,
    });
    if (answer.sha256 !== sha256 || answer.size_bytes !== size) {
      throw new RgridError('digest_mismatch', `the control plane stored ${answer.sha256} (${answer.size_bytes} bytes) for ${sha256} (${size} bytes)`);
    }
    return answer;
  }

  // ---- image sharing: grid-wide build leases and pushed images (common/wire/registry-api.ts)

  /** Long poll (up to `wait_ms`) for who builds (account, kind, key): pushed, lease, building or failed. */
  async acquireBuild(body: BuildAcquireRequest, call?: CallOptions): Promise<BuildAcquireResponse> {
    return await this.http.json('POST', (c) => `${worker(c)}/image-builds`, 'a build acquire', (answer) => {
      const a = checkAnswer<BuildAcquireResponse>(BuildAcquireResponse, answer, 'a build acquire');
      // A pushed image must be in the registry we asked about: we would pull it from ours.
      if (a.state === 'pushed' && a.registry !== body.registry) {
        throw new RgridError('bad_response', `the control plane answered a build acquire with a push to another registry (${shown(a.registry, 100)})`);
      }
      return a;
    }, { json: body, call });
  }

  async renewBuild(leaseId: string, call?: CallOptions): Promise<BuildRenewResponse> {
    return await this.http.json('POST', buildLeasePath(leaseId, 'renew'), 'a build lease renewal', (a) => checkAnswer<BuildRenewResponse>(BuildRenewResponse, a, 'a build lease renewal'), { json: {}, call });
  }

  async completeBuild(leaseId: string, body: BuildCompleteRequest, call?: CallOptions): Promise<void> {
    await this.http.json('POST', buildLeasePath(leaseId, 'complete'), 'a build completion', (a) => checkAnswer(BuildCompleteResponse, a, 'a build completion'), { json: body, call });
  }

  /** Records a push made without a lease (the push outbox); idempotent per (account, kind, key). */
  async recordPush(body: RecordPushRequest, call?: CallOptions): Promise<RecordPushResponse> {
    return await this.http.json('PUT', (c) => `${worker(c)}/registry-images`, 'a push record', (a) => checkAnswer<RecordPushResponse>(RecordPushResponse, a, 'a push record'), { json: body, call });
  }

  /** Lets requests in flight finish for `graceMs` (default 5 s), then cuts them. */
  async close(graceMs?: number): Promise<void> {
    await this.http.close(graceMs);
  }
}
