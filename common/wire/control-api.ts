/**
 * Wire schemas of the control plane's HTTP API, written once as TypeBox schemas: the
 * control plane validates with them and serves them as OpenAPI, the agent (sync) and the client
 * (`rgrid run`) import the same schemas and the types derived from them, so no side keeps a copy that
 * could drift. Field names are snake_case on the wire.
 */
import Type from 'typebox';
import {
  ACCOUNT_PATTERN, INPUT_FILE_NAME_PATTERN, OUTPUT_FILE_PATH_PATTERN, PINNED_REQUIREMENT_PATTERN, RUNTIME_PATTERN, SHA256_PATTERN, STORABLE_TEXT_PATTERN,
  UUID_PATTERN, WORKER_ID_PATTERN,
} from '../names.js';
import { MAX_LOCKED_DISTRIBUTIONS, RESOLUTIONS, type Resolution as LockResolution } from '../lock.js';

// ---- shared scalars -------------------------------------------------------------------------------
// Every name, id and bound below comes from the naming contract (common/names.ts) or from the column
// type it is stored in, so a value the schema accepts is a value PostgreSQL stores.

export const Sha256Hex = Type.String({ pattern: SHA256_PATTERN, description: 'sha256, 64 lower-case hex' });
export const AccountId = Type.String({ pattern: ACCOUNT_PATTERN, maxLength: 64 });
export const WorkerId = Type.String({ pattern: WORKER_ID_PATTERN, maxLength: 128 });
export const RuntimeName = Type.String({ pattern: RUNTIME_PATTERN, maxLength: 64 });
export const Uuid = Type.String({ pattern: UUID_PATTERN, description: 'lower-case UUID' });
/**
 * RFC 3339 with a four-digit year and seconds 00-59: one form that JavaScript's Date, PostgreSQL and
 * every client parse the same way (a leap second `:60` is refused rather than read three ways).
 */
export const Timestamp = Type.String({
  format: 'date-time',
  pattern: '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$',
});
/** PostgreSQL `integer`. */
export const Int32 = Type.Integer({ minimum: -2_147_483_648, maximum: 2_147_483_647 });
export const Count32 = Type.Integer({ minimum: 0, maximum: 2_147_483_647 });
/** Byte sizes and counters stored as `bigint`, bounded to what a JavaScript number holds exactly. */
export const Size = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** Free text that is stored: no NUL (PostgreSQL refuses it), no unpaired surrogate. */
export const Text = (maxLength: number): ReturnType<typeof Type.String> =>
  Type.String({ maxLength, pattern: STORABLE_TEXT_PATTERN });
/** A file under /work/inputs: one segment. */
export const InputFileName = Type.String({ minLength: 1, maxLength: 255, pattern: INPUT_FILE_NAME_PATTERN });
/** A file under /work/outputs: a relative path. */
export const OutputFilePath = Type.String({ minLength: 1, maxLength: 1024, pattern: OUTPUT_FILE_PATH_PATTERN });
export const Role = Type.Union([
  Type.Literal('admin'),
  Type.Literal('scheduler'),
  Type.Literal('client'),
  Type.Literal('worker'),
]);
export type Role = Type.Static<typeof Role>;
export const CacheKind = Type.Union([Type.Literal('image'), Type.Literal('deps')]);
export type CacheKind = Type.Static<typeof CacheKind>;
/**
 * How a run's dependency lock was obtained (common/lock.ts). Typed as the list's union: a union built from
 * a mapped array (not a tuple) would type as none of its members.
 */
export const Resolution = Type.Unsafe<LockResolution>(Type.Union(RESOLUTIONS.map((r) => Type.Literal(r))));
/** The pinned `name==version` list of a lock, sorted. */
export const ResolvedList = Type.Array(Type.String({ pattern: PINNED_REQUIREMENT_PATTERN, maxLength: 200 }), { maxItems: MAX_LOCKED_DISTRIBUTIONS });

/**
 * The body of every error answer (the OpenAPI document's `Error` component): a stable machine-readable
 * code (common/errors.ts), a one-line message, and sometimes structured detail safe to show.
 */
export const ErrorResponse = Type.Object({
  error: Type.String(),
  message: Type.String(),
  detail: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});
export type ErrorResponse = Type.Static<typeof ErrorResponse>;

// ---- admin ---------------------------------------------------------------------------------------

export const CreateTokenRequest = Type.Object(
  {
    account: AccountId,
    role: Type.Union([Type.Literal('scheduler'), Type.Literal('client'), Type.Literal('worker')]),
    worker_id: Type.Optional(WorkerId),
    expires_at: Type.Optional(Timestamp),
    description: Type.Optional(Text(200)),
  },
  { additionalProperties: false },
);
export type CreateTokenRequest = Type.Static<typeof CreateTokenRequest>;

export const TokenInfo = Type.Object({
  id: Uuid,
  role: Role,
  account: Type.Union([AccountId, Type.Null()]),
  worker_id: Type.Union([WorkerId, Type.Null()]),
  created_at: Timestamp,
  expires_at: Type.Union([Timestamp, Type.Null()]),
  revoked: Type.Boolean(),
});
export type TokenInfo = Type.Static<typeof TokenInfo>;

/** The secret appears in this response only; the control plane keeps its sha256. */
export const CreateTokenResponse = Type.Intersect([Type.Object({ token: Type.String() }), TokenInfo]);
export type CreateTokenResponse = Type.Static<typeof CreateTokenResponse>;

export const TokenListResponse = Type.Object({ tokens: Type.Array(TokenInfo) });
export type TokenListResponse = Type.Static<typeof TokenListResponse>;

// ---- workers: register, heartbeat, sync ------------------------------------------------------------

export const WorkerLoad = Type.Object({
  /** Executions running now; with `capacity` this is the load used by placement. */
  running: Count32,
  /** Optional host load average (1 min), reported for operators; placement uses running/capacity. */
  load1: Type.Optional(Type.Number({ minimum: 0, maximum: 1e6 })),
});
export const WorkerDisk = Type.Object({
  total_bytes: Size,
  used_bytes: Size,
});

export const RegisterWorkerRequest = Type.Object(
  {
    host: Type.Intersect([Text(255), Type.String({ minLength: 1 })]),
    capacity: Type.Integer({ minimum: 0, maximum: 100_000, description: 'executions it runs at once' }),
    labels: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' }), Text(256), { maxProperties: 64, additionalProperties: false })),
    /**
     * Engine facts for operators (version, api_version, os, arch): flat and storable, as they land in
     * jsonb (a NUL in a nested string made registration fail with 500). Typed as before for the senders.
     */
    engine: Type.Optional(Type.Unsafe<Record<string, unknown>>(Type.Record(
      Type.String({ pattern: '^[a-z][a-z0-9_]{0,63}$' }),
      Type.Union([Text(256), Type.Number(), Type.Boolean(), Type.Null()]),
      { maxProperties: 32, additionalProperties: false },
    ))),
    disk: Type.Optional(WorkerDisk),
    load: Type.Optional(WorkerLoad),
    agent_version: Type.Optional(Text(64)),
  },
  { additionalProperties: false },
);
export type RegisterWorkerRequest = Type.Static<typeof RegisterWorkerRequest>;

export const RegisterWorkerResponse = Type.Object({
  worker_id: WorkerId,
  /** false when the control plane had no row for this worker (first start, or cleaned up). */
  known: Type.Boolean(),
  /** true until a full snapshot has been received since registration: the agent must send one. */
  snapshot_required: Type.Boolean(),
  accounts: Type.Array(AccountId, { description: 'accounts this worker may write entries for' }),
  heartbeat_interval_ms: Type.Integer(),
  dead_after_ms: Type.Integer(),
  server_time: Timestamp,
});
export type RegisterWorkerResponse = Type.Static<typeof RegisterWorkerResponse>;

export const HeartbeatRequest = Type.Object(
  { load: WorkerLoad, disk: Type.Optional(WorkerDisk) },
  { additionalProperties: false },
);
export type HeartbeatRequest = Type.Static<typeof HeartbeatRequest>;

/**
 * Answer to heartbeats and sync batches. `resync_required` tells the agent the control plane does not
 * know it (never registered, cleaned up, or database restored): register again and send a snapshot.
 */
export const SyncStatusResponse = Type.Object({
  known: Type.Boolean(),
  resync_required: Type.Boolean(),
  server_time: Timestamp,
});
export type SyncStatusResponse = Type.Static<typeof SyncStatusResponse>;

/**
 * Answer to a leave (the agent is stopping): since `leaving_at` placement skips the worker and it claims
 * nothing new; `reassigned` executions waiting in its queue were placed again by this request (0 when
 * asked again). Its running claims are still its own to renew and complete.
 */
export const LeaveWorkerResponse = Type.Object({
  worker_id: WorkerId,
  leaving_at: Timestamp,
  reassigned: Type.Integer({ minimum: 0 }),
});
export type LeaveWorkerResponse = Type.Static<typeof LeaveWorkerResponse>;

/** One cache entry as the agent holds it. */
export const EntryFields = {
  kind: CacheKind,
  account: AccountId,
  /** image_key for kind=image, deps_key for kind=deps. */
  key: Sha256Hex,
  image_id: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9:._/@-]+$' }),
  runtime: RuntimeName,
  /** null when the script has no requirements (image built on the base image). */
  requirements_sha256: Type.Union([Sha256Hex, Type.Null()]),
  /** kind=image only. */
  script_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
  /** kind=image: the dependency layer it is built on (null: built on the base image). */
  deps_key: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
  /** The lock the dependency layer installs (common/lock.ts); null or absent: keyed on the text. */
  lock_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
  size_bytes: Size,
  created_at: Timestamp,
  last_used_at: Timestamp,
  use_count: Size,
};
export const CacheEntry = Type.Object(EntryFields, { additionalProperties: false });
export type CacheEntry = Type.Static<typeof CacheEntry>;

/**
 * Which part of a snapshot a request carries, when the snapshot is sent in several requests (one that
 * would not fit in the snapshot body limit). Parts are numbered from 0 and sent in order; the last one
 * says `final`. Every part names the same `accounts`.
 */
export const SnapshotPartInfo = Type.Object(
  {
    /** Chosen by the agent, new for every snapshot; a new id supersedes an unfinished snapshot. */
    id: Uuid,
    part: Count32,
    /** The worker's other entries of the snapshot's accounts are removed when this part arrives. */
    final: Type.Boolean(),
  },
  { additionalProperties: false },
);
export type SnapshotPartInfo = Type.Static<typeof SnapshotPartInfo>;

/** What the control plane holds for one worker (GET /v1/workers/{worker_id}/entries). */
export const WorkerEntriesResponse = Type.Object({ entries: Type.Array(CacheEntry) });
export type WorkerEntriesResponse = Type.Static<typeof WorkerEntriesResponse>;

export const SnapshotRequest = Type.Object(
  {
    /**
     * The accounts this snapshot is complete for: the worker's entries of these accounts are replaced.
     * Omitted: every account the worker token serves.
     */
    accounts: Type.Optional(Type.Array(AccountId, { maxItems: 10_000 })),
    entries: Type.Array(CacheEntry),
    /** Omitted: this request is the whole snapshot. */
    snapshot: Type.Optional(SnapshotPartInfo),
  },
  { additionalProperties: false },
);
export type SnapshotRequest = Type.Static<typeof SnapshotRequest>;

export const SnapshotResponse = Type.Object({
  accounts: Type.Array(AccountId),
  /** Entries written by the snapshot so far (all its parts up to this one). */
  entries: Type.Integer(),
  /** Entries the snapshot removed: 0 until its final part. */
  removed: Type.Integer(),
  server_time: Timestamp,
});
export type SnapshotResponse = Type.Static<typeof SnapshotResponse>;

const OpId = Type.String({ minLength: 1, maxLength: 128 });
const OpTarget = { id: OpId, kind: CacheKind, account: AccountId, key: Sha256Hex };

export const UpsertOp = Type.Object(
  { ...EntryFields, ...OpTarget, type: Type.Literal('upsert') },
  { additionalProperties: false },
);
export const DeleteOp = Type.Object({ ...OpTarget, type: Type.Literal('delete') }, { additionalProperties: false });
/** Coalesced usage: `count` hits, the last one at `last_used_at`. */
export const TouchOp = Type.Object(
  {
    ...OpTarget,
    type: Type.Literal('touch'),
    count: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    last_used_at: Timestamp,
  },
  { additionalProperties: false },
);
export const SyncOp = Type.Union([UpsertOp, DeleteOp, TouchOp]);
export type SyncOp = Type.Static<typeof SyncOp>;
export type UpsertOp = Type.Static<typeof UpsertOp>;
export type DeleteOp = Type.Static<typeof DeleteOp>;
export type TouchOp = Type.Static<typeof TouchOp>;

export const SyncOpsRequest = Type.Object(
  { ops: Type.Array(SyncOp, { minItems: 1, maxItems: 10_000 }) },
  { additionalProperties: false },
);
export type SyncOpsRequest = Type.Static<typeof SyncOpsRequest>;

/** 200 means the whole batch is durable: the agent may drop every op of it from its outbox. */
export const SyncOpsResponse = Type.Object({
  applied: Type.Integer(),
  /** ops whose id was applied before (a retried batch): not applied again. */
  duplicates: Type.Integer(),
  server_time: Timestamp,
});
export type SyncOpsResponse = Type.Static<typeof SyncOpsResponse>;

// ---- resolve + placement -----------------------------------------------------------------------------

export const ResolveRequest = Type.Object(
  {
    runtime: RuntimeName,
    script_sha256: Sha256Hex,
    requirements_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    input_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    /** How many workers the placement lists at most (best first). */
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
    /** Also list each holder's entry (key, image ID, size, last use); off by default to keep answers small. */
    include_entries: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type ResolveRequest = Type.Static<typeof ResolveRequest>;

export const HolderEntry = Type.Object({
  worker_id: WorkerId,
  key: Sha256Hex,
  image_id: Type.String(),
  size_bytes: Type.Integer(),
  last_used_at: Timestamp,
});
export type HolderEntry = Type.Static<typeof HolderEntry>;

export const ResolveCacheAnswer = Type.Object({
  cached: Type.Boolean(),
  /** ids of the live workers holding it. */
  workers: Type.Array(WorkerId),
  /** present when the request set include_entries. */
  entries: Type.Optional(Type.Array(HolderEntry)),
});

/**
 * One part of a placement score: `cost` (what the worker would have to do before the script runs —
 * nothing, pull, build the script layer, pull the dependency layer, build everything — with its estimate
 * in seconds) or `load`.
 */
export const ScoreReason = Type.Object({
  factor: Type.Union([Type.Literal('cost'), Type.Literal('load')]),
  score: Type.Number(),
  detail: Type.String(),
  /** `cost` only: the estimated seconds before the script can start on this worker. */
  estimate_s: Type.Optional(Type.Number({ minimum: 0 })),
});
export type ScoreReason = Type.Static<typeof ScoreReason>;

export const PlacementItem = Type.Object({
  worker_id: WorkerId,
  score: Type.Number(),
  reasons: Type.Array(ScoreReason),
});
export type PlacementItem = Type.Static<typeof PlacementItem>;

export const ResolveResponse = Type.Object({
  image: ResolveCacheAnswer,
  deps: ResolveCacheAnswer,
  inputs: Type.Object({
    input_sha256: Type.Union([Sha256Hex, Type.Null()]),
    /** the manifest is recorded for this account. */
    manifest: Type.Boolean(),
    /** every blob the manifest names is stored (true when there are no inputs). */
    stored: Type.Boolean(),
    missing_blobs: Type.Array(Sha256Hex),
  }),
  /** Whether the account's registry has the script image and the dependency layer (any worker can pull them). */
  registry: Type.Object({ image: Type.Boolean(), deps: Type.Boolean() }),
  placement: Type.Array(PlacementItem),
  live_workers: Type.Integer(),
});
export type ResolveResponse = Type.Static<typeof ResolveResponse>;

// ---- inputs: blobs and manifests -------------------------------------------------------------------

export const BlobParams = Type.Object({ sha256: Sha256Hex });
/** A worker token serving several accounts names the account; others may omit it. */
export const AccountQuery = Type.Object({ account: Type.Optional(AccountId) });

export const PutBlobResponse = Type.Object({
  sha256: Sha256Hex,
  size_bytes: Type.Integer(),
  /** false when this account already had the blob (the bytes were verified, nothing changed). */
  created: Type.Boolean(),
});
export type PutBlobResponse = Type.Static<typeof PutBlobResponse>;

export const ManifestFile = Type.Object(
  { name: InputFileName, sha256: Sha256Hex, size: Size },
  { additionalProperties: false },
);

export const ManifestRequest = Type.Object(
  {
    files: Type.Array(ManifestFile, { maxItems: 100_000 }),
    /** When given, it must equal the input_sha256 the control plane computes from `files`. */
    input_sha256: Type.Optional(Sha256Hex),
  },
  { additionalProperties: false },
);
export type ManifestRequest = Type.Static<typeof ManifestRequest>;

export const ManifestResponse = Type.Object({
  input_sha256: Sha256Hex,
  files: Type.Array(ManifestFile),
  total_size: Type.Integer(),
  /** blobs this account has not stored yet: upload only these. */
  missing: Type.Array(Sha256Hex),
  created: Type.Boolean(),
});
export type ManifestResponse = Type.Static<typeof ManifestResponse>;

// ---- executions -----------------------------------------------------------------------------------

export const ExecutionStatus = Type.Union([
  Type.Literal('queued'),
  Type.Literal('assigned'),
  Type.Literal('running'),
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('cancelled'),
]);
export type ExecutionStatus = Type.Static<typeof ExecutionStatus>;

/** Milliseconds per phase (queue, build, input_fetch, run, output_upload). */
// additionalProperties: a record's key pattern becomes patternProperties, which alone lets any other key through.
export const Timings = Type.Record(Type.String({ pattern: '^[a-z][a-z0-9_]{0,63}$' }), Type.Number({ minimum: 0, maximum: 1e12 }), { maxProperties: 32, additionalProperties: false });

const ExecutionResultFields = {
  status: Type.Optional(ExecutionStatus),
  worker_id: Type.Optional(Type.Union([WorkerId, Type.Null()])),
  exit_code: Type.Optional(Type.Union([Int32, Type.Null()])),
  script_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  dependency_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  input_cache_hit: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  timings: Type.Optional(Timings),
  error: Type.Optional(Type.Union([Text(4000), Type.Null()])),
};

export const CreateExecutionRequest = Type.Object(
  {
    runtime: RuntimeName,
    script_sha256: Sha256Hex,
    requirements_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    input_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
    ...ExecutionResultFields,
  },
  { additionalProperties: false },
);
export type CreateExecutionRequest = Type.Static<typeof CreateExecutionRequest>;

/** Why a finished execution failed: a script's own non-zero exit is a result, not a retry. */
export const ExecutionFailure = Type.Union([
  Type.Literal('nonzero_exit'),
  Type.Literal('timeout'),
  Type.Literal('memory_limit'),
  Type.Literal('output_limit'),
  Type.Literal('build_failed'),
  Type.Literal('input_unavailable'),
  Type.Literal('lost'),
  Type.Literal('error'),
]);
export type ExecutionFailure = Type.Static<typeof ExecutionFailure>;

/** A file the script wrote under /work/outputs, stored as a blob of the execution's account. */
export const OutputFile = Type.Object(
  { name: OutputFilePath, sha256: Sha256Hex, size: Size },
  { additionalProperties: false },
);
export type OutputFile = Type.Static<typeof OutputFile>;

export const Execution = Type.Object({
  id: Uuid,
  account: AccountId,
  status: ExecutionStatus,
  runtime: RuntimeName,
  script_sha256: Sha256Hex,
  requirements_sha256: Type.Union([Sha256Hex, Type.Null()]),
  input_sha256: Type.Union([Sha256Hex, Type.Null()]),
  worker_id: Type.Union([WorkerId, Type.Null()]),
  exit_code: Type.Union([Type.Integer(), Type.Null()]),
  script_cache_hit: Type.Union([Type.Boolean(), Type.Null()]),
  dependency_cache_hit: Type.Union([Type.Boolean(), Type.Null()]),
  input_cache_hit: Type.Union([Type.Boolean(), Type.Null()]),
  /**
   * The exact dependency set the run used: its lock's digest, the pins, and how the lock was obtained.
   * Optional so a client accepts the answer of a control plane from before locks (rolling upgrades).
   */
  lock_sha256: Type.Optional(Type.Union([Sha256Hex, Type.Null()])),
  resolved: Type.Optional(Type.Union([ResolvedList, Type.Null()])),
  resolution: Type.Optional(Type.Union([Resolution, Type.Null()])),
  timings: Timings,
  error: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer(),
  // Dispatch; for executions recorded without dispatch these stay at their defaults.
  max_attempts: Type.Integer(),
  failure: Type.Union([ExecutionFailure, Type.Null()]),
  /** Blobs the worker had to download for this run (script, requirements, inputs); null until reported. */
  downloaded_blobs: Type.Union([Type.Integer(), Type.Null()]),
  /** Where the run's image came from on its worker: `local` (a hit), `pulled` (from the registry), `built`. */
  image_origin: Type.Union([Type.Literal('local'), Type.Literal('pulled'), Type.Literal('built'), Type.Null()]),
  outputs: Type.Array(OutputFile),
  created_at: Timestamp,
  updated_at: Timestamp,
  finished_at: Type.Union([Timestamp, Type.Null()]),
});
export type Execution = Type.Static<typeof Execution>;

export const ListExecutionsQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500 })),
  /** Opaque cursor from `next_cursor`. */
  cursor: Type.Optional(Type.String({ maxLength: 200 })),
  status: Type.Optional(ExecutionStatus),
});
export const ListExecutionsResponse = Type.Object({
  executions: Type.Array(Execution),
  next_cursor: Type.Union([Type.String(), Type.Null()]),
});
export type ListExecutionsResponse = Type.Static<typeof ListExecutionsResponse>;
