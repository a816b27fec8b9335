/**
 * Wire schemas of dispatch: submitting an execution for a worker to run, the worker's claim /
 * renew / complete calls, waiting and logs. Kept apart from control-api.ts so the two evolve without
 * stepping on each other; the Execution shape itself lives there.
 */
import Type from 'typebox';
import {
  AccountId, Count32, Execution, ExecutionFailure, Int32, ManifestFile, OutputFile, Resolution, ResolvedList, RuntimeName, Sha256Hex, Text, Timestamp, Timings, Uuid,
  WorkerId,
} from './control-api.js';
import { ImageOrigin } from './registry-api.js';

export const SubmitExecutionRequest = Type.Object(
  {
    runtime: RuntimeName,
    /** Also the blob holding the script's bytes (uploaded by the client). */
    script_sha256: Sha256Hex,
    /** Canonical requirements digest (docs/architecture.md); null or absent: no requirements. */
    requirements_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    /** The blob holding the requirements file as written; required with requirements_sha256. */
    requirements_blob_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    /** A manifest recorded with POST /v1/manifests; its blobs must all be stored. */
    input_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    timeout_s: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 7 * 86_400 })),
    memory_mb: Type.Optional(Type.Integer({ minimum: 16, maximum: 1_048_576 })),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 20 })),
  },
  { additionalProperties: false },
);
export type SubmitExecutionRequest = Type.Static<typeof SubmitExecutionRequest>;

export const ClaimRequest = Type.Object(
  {
    /** Free run slots: at most this many executions are handed out. */
    max: Type.Integer({ minimum: 1, maximum: 256 }),
    /** Hold the request up to this long when nothing is queued (long poll); capped by the server. */
    wait_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
  },
  { additionalProperties: false },
);
export type ClaimRequest = Type.Static<typeof ClaimRequest>;

export const ClaimedExecution = Type.Object({
  execution_id: Uuid,
  /** Names this attempt: renew and complete must carry it. */
  claim_id: Uuid,
  account: AccountId,
  runtime: RuntimeName,
  script_sha256: Sha256Hex,
  requirements_sha256: Type.Union([Sha256Hex, Type.Null()]),
  requirements_blob_sha256: Type.Union([Sha256Hex, Type.Null()]),
  input_sha256: Type.Union([Sha256Hex, Type.Null()]),
  /** The input manifest's files: each appears as /work/inputs/<name>. */
  inputs: Type.Array(ManifestFile),
  timeout_s: Type.Union([Type.Number(), Type.Null()]),
  memory_mb: Type.Union([Count32, Type.Null()]),
  attempt: Count32,
  lease_ms: Count32,
  lease_expires_at: Timestamp,
  queue_ms: Type.Number(),
});
export type ClaimedExecution = Type.Static<typeof ClaimedExecution>;

export const ClaimResponse = Type.Object({ claims: Type.Array(ClaimedExecution) });
export type ClaimResponse = Type.Static<typeof ClaimResponse>;

export const ClaimParams = Type.Object({ worker_id: WorkerId, execution_id: Uuid });

export const RenewRequest = Type.Object({ claim_id: Uuid }, { additionalProperties: false });
export const RenewResponse = Type.Object({ lease_expires_at: Timestamp });
export type RenewResponse = Type.Static<typeof RenewResponse>;

export const CompleteRequest = Type.Object(
  {
    claim_id: Uuid,
    /**
     * `done`: the execution has a result (any exit code, a timeout, a memory kill, a failed build);
     * `retry`: this worker could not run it (engine down, shutting down): back to the queue, the attempt
     * counts.
     */
    outcome: Type.Union([Type.Literal('done'), Type.Literal('retry')]),
    exit_code: Type.Optional(Type.Union([Int32, Type.Null()])),
    failure: Type.Optional(Type.Union([ExecutionFailure, Type.Null()])),
    error: Type.Optional(Type.Union([Text(4000), Type.Null()])),
    script_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    dependency_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    input_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    downloaded_blobs: Type.Optional(Count32),
    image_origin: Type.Optional(Type.Union([ImageOrigin, Type.Null()])),
    /** The dependency lock the run used (common/lock.ts): null without requirements. */
    lock_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    resolved: Type.Optional(Type.Union([ResolvedList, Type.Null()])),
    resolution: Type.Optional(Type.Union([Resolution, Type.Null()])),
    timings: Type.Optional(Timings),
    outputs: Type.Optional(Type.Array(OutputFile, { maxItems: 10_000 })),
    /** What the script printed: kept as given, except that NUL is stored as U+FFFD (common/names.ts storableLog). */
    stdout: Type.Optional(Type.String()),
    stderr: Type.Optional(Type.String()),
    /** The worker cut stdout or stderr to the log cap (it keeps the tail). */
    logs_truncated: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type CompleteRequest = Type.Static<typeof CompleteRequest>;

export const WaitQuery = Type.Object({
  timeout_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
  /** With `true`, a finished execution comes back with its logs (`logs`), saving the logs request. */
  logs: Type.Optional(Type.Boolean()),
});

export const LogsResponse = Type.Object({
  execution_id: Uuid,
  status: Type.String(),
  stdout: Type.String(),
  stderr: Type.String(),
  truncated: Type.Boolean(),
});
export type LogsResponse = Type.Static<typeof LogsResponse>;

/** The wait's answer: the execution, and its logs when asked for (`?logs=true`) and it has finished. */
export const WaitResponse = Type.Object({ ...Execution.properties, logs: Type.Optional(LogsResponse) });
export type WaitResponse = Type.Static<typeof WaitResponse>;
