/**
 * The named schemas of the control plane's OpenAPI document (`#/components/schemas/<name>`): the wire
 * schemas of this directory under the names they are exported with (the error body is `Error`). The
 * routes keep using the schema objects themselves, so Fastify validates and serializes exactly what
 * the document publishes; the document generator (control/openapi.ts) replaces every copy of one of
 * these schemas by a reference to its name. Integer bounds that are not names (Int32, Count32, Size,
 * Text) stay inline: they are column types, not things a client refers to.
 */
import type { TSchema } from 'typebox';
import * as api from './control-api.js';
import * as dispatch from './dispatch-api.js';
import * as registry from './registry-api.js';
import * as tenancy from './tenancy-api.js';

export const COMPONENT_SCHEMAS: Readonly<Record<string, TSchema>> = {
  Error: api.ErrorResponse,
  // the naming contract (common/names.ts) and the shared enumerations
  Sha256Hex: api.Sha256Hex,
  AccountId: api.AccountId,
  WorkerId: api.WorkerId,
  RuntimeName: api.RuntimeName,
  Uuid: api.Uuid,
  Timestamp: api.Timestamp,
  InputFileName: api.InputFileName,
  OutputFilePath: api.OutputFilePath,
  Role: api.Role,
  CacheKind: api.CacheKind,
  ExecutionStatus: api.ExecutionStatus,
  ExecutionFailure: api.ExecutionFailure,
  Timings: api.Timings,
  Resolution: api.Resolution,
  ResolvedList: api.ResolvedList,
  MemoryMb: tenancy.MemoryMb,
  TimeoutS: tenancy.TimeoutS,
  MaxAttempts: tenancy.MaxAttempts,
  // admin
  CreateTokenRequest: api.CreateTokenRequest,
  TokenInfo: api.TokenInfo,
  CreateTokenResponse: api.CreateTokenResponse,
  TokenListResponse: api.TokenListResponse,
  ShareWorkerRequest: tenancy.ShareWorkerRequest,
  WorkerShareInfo: tenancy.WorkerShareInfo,
  WorkerTenancyResponse: tenancy.WorkerTenancyResponse,
  WorkerInfo: tenancy.WorkerInfo,
  WorkerListResponse: tenancy.WorkerListResponse,
  RunLimits: tenancy.RunLimits,
  SetRunLimitsRequest: tenancy.SetRunLimitsRequest,
  RunLimitsResponse: tenancy.RunLimitsResponse,
  // workers: register, heartbeat, sync
  WorkerLoad: api.WorkerLoad,
  WorkerDisk: api.WorkerDisk,
  RegisterWorkerRequest: api.RegisterWorkerRequest,
  RegisterWorkerResponse: api.RegisterWorkerResponse,
  HeartbeatRequest: api.HeartbeatRequest,
  SyncStatusResponse: api.SyncStatusResponse,
  LeaveWorkerResponse: api.LeaveWorkerResponse,
  CacheEntry: api.CacheEntry,
  WorkerEntriesResponse: api.WorkerEntriesResponse,
  SnapshotRequest: api.SnapshotRequest,
  SnapshotResponse: api.SnapshotResponse,
  UpsertOp: api.UpsertOp,
  DeleteOp: api.DeleteOp,
  TouchOp: api.TouchOp,
  SyncOp: api.SyncOp,
  SyncOpsRequest: api.SyncOpsRequest,
  SyncOpsResponse: api.SyncOpsResponse,
  // resolve and placement
  ResolveRequest: api.ResolveRequest,
  HolderEntry: api.HolderEntry,
  ResolveCacheAnswer: api.ResolveCacheAnswer,
  ScoreReason: api.ScoreReason,
  PlacementItem: api.PlacementItem,
  ResolveResponse: api.ResolveResponse,
  // inputs
  PutBlobResponse: api.PutBlobResponse,
  ManifestFile: api.ManifestFile,
  ManifestRequest: api.ManifestRequest,
  ManifestResponse: api.ManifestResponse,
  // executions and dispatch
  CreateExecutionRequest: api.CreateExecutionRequest,
  OutputFile: api.OutputFile,
  Execution: api.Execution,
  ListExecutionsResponse: api.ListExecutionsResponse,
  SubmitExecutionRequest: dispatch.SubmitExecutionRequest,
  ClaimRequest: dispatch.ClaimRequest,
  ClaimedExecution: dispatch.ClaimedExecution,
  ClaimResponse: dispatch.ClaimResponse,
  RenewRequest: dispatch.RenewRequest,
  RenewResponse: dispatch.RenewResponse,
  CompleteRequest: dispatch.CompleteRequest,
  LogsResponse: dispatch.LogsResponse,
  WaitResponse: dispatch.WaitResponse,
  // images in the registry
  OciDigest: registry.OciDigest,
  RegistryAddress: registry.RegistryAddress,
  ImageId: registry.ImageId,
  BuildAcquireRequest: registry.BuildAcquireRequest,
  BuildAcquirePushed: registry.BuildAcquirePushed,
  BuildAcquireLease: registry.BuildAcquireLease,
  BuildAcquireBuilding: registry.BuildAcquireBuilding,
  BuildAcquireFailed: registry.BuildAcquireFailed,
  BuildAcquireResponse: registry.BuildAcquireResponse,
  BuildRenewResponse: registry.BuildRenewResponse,
  BuildCompleteRequest: registry.BuildCompleteRequest,
  BuildCompleteResponse: registry.BuildCompleteResponse,
  RecordPushRequest: registry.RecordPushRequest,
  RecordPushResponse: registry.RecordPushResponse,
};
