/**
 * Wire schemas of the admin's tenancy and run-limit endpoints: sharing a worker with another account,
 * and per-account ceilings of what a submission may ask for (docs/operations.md, "Tenancy and run
 * limits"). Kept apart from control-api.ts and dispatch-api.ts; the scalars come from there.
 */
import Type from 'typebox';
import { AccountId, Count32, Size, Text, Timestamp, Uuid, WorkerId } from './control-api.js';

const Reason = Type.Intersect([Text(200), Type.String({ minLength: 1 })], { description: 'why, recorded with the change' });
/** Who acts: the admin token is one shared secret, so the operator names themself for the record. */
const Actor = Type.Intersect([Text(100), Type.String({ minLength: 1 })], { description: 'operator name recorded with the change' });

export const WorkerParams = Type.Object({ worker_id: WorkerId });
export const WorkerShareParams = Type.Object({ worker_id: WorkerId, account: AccountId });

export const ShareWorkerRequest = Type.Object(
  { account: AccountId, reason: Reason, by: Type.Optional(Actor) },
  { additionalProperties: false },
);
export type ShareWorkerRequest = Type.Static<typeof ShareWorkerRequest>;

export const RevokeShareQuery = Type.Object({ reason: Type.Optional(Reason), by: Type.Optional(Actor) }, { additionalProperties: false });

export const WorkerShareInfo = Type.Object({
  share_id: Uuid,
  worker_id: WorkerId,
  account: AccountId,
  granted_at: Timestamp,
  granted_by: Type.String(),
  reason: Type.String(),
  revoked_at: Type.Union([Timestamp, Type.Null()]),
  revoked_by: Type.Union([Type.String(), Type.Null()]),
  revoke_reason: Type.Union([Type.String(), Type.Null()]),
});
export type WorkerShareInfo = Type.Static<typeof WorkerShareInfo>;

export const WorkerTenancyResponse = Type.Object({
  worker_id: WorkerId,
  /** null until the worker id's first worker token is created. */
  owner: Type.Union([Type.Object({ account: AccountId, bound_at: Timestamp }), Type.Null()]),
  /** Every grant: standing ones first (revoked_at null), then revoked ones, newest first. */
  shares: Type.Array(WorkerShareInfo),
});
export type WorkerTenancyResponse = Type.Static<typeof WorkerTenancyResponse>;

// ---- the registered workers ----------------------------------------------------------------------------

/** One registered worker as the admin sees it (GET /v1/admin/workers): what it last reported. */
export const WorkerInfo = Type.Object({
  worker_id: WorkerId,
  host: Type.String(),
  capacity: Count32,
  labels: Type.Record(Type.String(), Type.String()),
  engine: Type.Record(Type.String(), Type.Unknown()),
  disk_total_bytes: Type.Union([Size, Type.Null()]),
  disk_used_bytes: Type.Union([Size, Type.Null()]),
  running: Count32,
  load1: Type.Union([Type.Number(), Type.Null()]),
  agent_version: Type.Union([Type.String(), Type.Null()]),
  registered_at: Timestamp,
  last_seen_at: Timestamp,
  /** null until a full snapshot arrived after the last registration. */
  snapshot_at: Type.Union([Timestamp, Type.Null()]),
  /** The token its agent last authenticated with (null: not reported yet). */
  token_id: Type.Union([Uuid, Type.Null()]),
  /** When its agent said it is stopping: placement skips it until it registers again (null: not leaving; absent from older control planes). */
  leaving_at: Type.Optional(Type.Union([Timestamp, Type.Null()])),
});
export type WorkerInfo = Type.Static<typeof WorkerInfo>;

export const WorkerListResponse = Type.Object({ workers: Type.Array(WorkerInfo) });
export type WorkerListResponse = Type.Static<typeof WorkerListResponse>;

// ---- run limits ---------------------------------------------------------------------------------------

/** The bounds are the submit request's own (common/wire/dispatch-api.ts SubmitExecutionRequest). */
export const MemoryMb = Type.Integer({ minimum: 16, maximum: 1_048_576 });
export const TimeoutS = Type.Number({ exclusiveMinimum: 0, maximum: 7 * 86_400 });
export const MaxAttempts = Type.Integer({ minimum: 1, maximum: 20 });

export const AccountParams = Type.Object({ account: AccountId });

export const RunLimits = Type.Object({ memory_mb: MemoryMb, timeout_s: TimeoutS, max_attempts: MaxAttempts });
export type RunLimits = Type.Static<typeof RunLimits>;

/** Each field: a number sets the account's ceiling, null or absent falls back to the configured default. */
export const SetRunLimitsRequest = Type.Object(
  {
    memory_mb: Type.Optional(Type.Union([MemoryMb, Type.Null()])),
    timeout_s: Type.Optional(Type.Union([TimeoutS, Type.Null()])),
    max_attempts: Type.Optional(Type.Union([MaxAttempts, Type.Null()])),
    reason: Type.Optional(Reason),
    by: Type.Optional(Actor),
  },
  { additionalProperties: false },
);
export type SetRunLimitsRequest = Type.Static<typeof SetRunLimitsRequest>;

export const RunLimitsResponse = Type.Object({
  account: AccountId,
  /** What a submission of this account may ask for at most (override, else default). */
  ceilings: RunLimits,
  /** The account's own settings; null fields use the default. */
  overrides: Type.Object({
    memory_mb: Type.Union([Type.Integer(), Type.Null()]),
    timeout_s: Type.Union([Type.Number(), Type.Null()]),
    max_attempts: Type.Union([Type.Integer(), Type.Null()]),
  }),
  updated_at: Type.Union([Timestamp, Type.Null()]),
  updated_by: Type.Union([Type.String(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
});
export type RunLimitsResponse = Type.Static<typeof RunLimitsResponse>;
