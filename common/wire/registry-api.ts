/**
 * Wire schemas of image sharing through an OCI registry: what the control plane knows of each pushed
 * image (account, kind, key → manifest digest), and the grid-wide build lease that makes one worker
 * build a missing image while the others wait for its push and then pull it.
 *
 * The flow, per (account, kind, key), after a local miss on a worker:
 *   acquire → `pushed`   : pull by the recorded digest, verify the labels, use it.
 *           → `lease`    : this worker builds; it renews the lease while it builds, then completes with
 *                          `pushed` (digest), `failed` (pip's tail, remembered for every waiter) or
 *                          `released` (built but not pushed, e.g. the registry is down: the next waiter
 *                          takes the lease over).
 *           → `building` : another worker holds the lease; acquire again (the request long-polls up to
 *                          `wait_ms` for the state to change).
 *           → `failed`   : the build failed recently on some worker; fail with its message, do not retry.
 * A push that happened while the control plane or the lease was unavailable (the agent's durable push
 * outbox) is recorded afterwards with PUT …/registry-images.
 */
import Type from 'typebox';
import { OCI_DIGEST_PATTERN, REGISTRY_ADDRESS_PATTERN } from '../names.js';
import { AccountId, CacheKind, RuntimeName, Sha256Hex, Size, Text, Timestamp, Uuid, WorkerId } from './control-api.js';

export const OciDigest = Type.String({ pattern: OCI_DIGEST_PATTERN, maxLength: 200, description: 'manifest digest, sha256:<64 hex>' });
/** `HOST:PORT[/PREFIX]`: the registry the worker pushes to and pulls from. */
export const RegistryAddress = Type.String({ pattern: REGISTRY_ADDRESS_PATTERN, maxLength: 255 });
/** The engine's image ID of the runtime's base image (keys are built on it). */
export const ImageId = Type.String({ pattern: '^sha256:[0-9a-f]{64}$' });

/** What an image is: enough for placement to match it to a submission without knowing the key. */
export const ImageDescription = {
  account: AccountId,
  kind: CacheKind,
  key: Sha256Hex,
  runtime: RuntimeName,
  base_image_id: ImageId,
  requirements_sha256: Type.Union([Sha256Hex, Type.Null()]),
  /** kind=image only (null for deps). */
  script_sha256: Type.Union([Sha256Hex, Type.Null()]),
  /** kind=image: the dependency layer it is built on; null for deps or without requirements. */
  deps_key: Type.Union([Sha256Hex, Type.Null()]),
};

export const BuildAcquireRequest = Type.Object(
  {
    ...ImageDescription,
    registry: RegistryAddress,
    /** Hold the request up to this long while another worker builds (long poll); capped by the server. */
    wait_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 30_000 })),
  },
  { additionalProperties: false },
);
export type BuildAcquireRequest = Type.Static<typeof BuildAcquireRequest>;

export const BuildAcquirePushed = Type.Object({
  state: Type.Literal('pushed'),
  registry: RegistryAddress,
  manifest_digest: OciDigest,
  size_bytes: Type.Union([Size, Type.Null()]),
  pushed_by: WorkerId,
});
export const BuildAcquireLease = Type.Object({
  state: Type.Literal('lease'),
  lease_id: Uuid,
  /** Renew before this much time has passed. */
  lease_ms: Type.Integer({ minimum: 1 }),
  lease_expires_at: Timestamp,
  /** 1 for the first builder; more when the lease was taken over from a builder that died or released it. */
  attempt: Type.Integer({ minimum: 1 }),
});
export const BuildAcquireBuilding = Type.Object({
  state: Type.Literal('building'),
  holder: WorkerId,
  lease_expires_at: Timestamp,
});
export const BuildAcquireFailed = Type.Object({
  state: Type.Literal('failed'),
  /** An RgridError code, e.g. build_failed. */
  error: Text(64),
  message: Text(4000),
  /** The end of pip's output (or of the build's). */
  log_tail: Text(16_000),
  failed_by: WorkerId,
  failed_at: Timestamp,
});
export const BuildAcquireResponse = Type.Union([BuildAcquirePushed, BuildAcquireLease, BuildAcquireBuilding, BuildAcquireFailed]);
export type BuildAcquireResponse = Type.Static<typeof BuildAcquireResponse>;

export const BuildLeaseParams = Type.Object({ worker_id: WorkerId, lease_id: Uuid });

// The title keeps it apart from the claim's RenewResponse (same shape) as its own OpenAPI component.
export const BuildRenewResponse = Type.Object({ lease_expires_at: Timestamp }, { title: 'BuildRenewResponse' });
export type BuildRenewResponse = Type.Static<typeof BuildRenewResponse>;

export const BuildCompleteRequest = Type.Union([
  Type.Object({ outcome: Type.Literal('pushed'), manifest_digest: OciDigest, size_bytes: Type.Union([Size, Type.Null()]) }, { additionalProperties: false }),
  Type.Object({ outcome: Type.Literal('failed'), error: Text(64), message: Text(4000), log_tail: Text(16_000) }, { additionalProperties: false }),
  Type.Object({ outcome: Type.Literal('released') }, { additionalProperties: false }),
]);
export type BuildCompleteRequest = Type.Static<typeof BuildCompleteRequest>;

export const BuildCompleteResponse = Type.Object({ ok: Type.Literal(true) });

/** A push recorded without a lease (the agent's outbox after an outage). Idempotent per (account, kind, key). */
export const RecordPushRequest = Type.Object(
  { ...ImageDescription, registry: RegistryAddress, manifest_digest: OciDigest, size_bytes: Type.Union([Size, Type.Null()]) },
  { additionalProperties: false },
);
export type RecordPushRequest = Type.Static<typeof RecordPushRequest>;

export const RecordPushResponse = Type.Object({
  /** false when another digest was already recorded for the key: the first push stays authoritative. */
  recorded: Type.Boolean(),
  manifest_digest: OciDigest,
});
export type RecordPushResponse = Type.Static<typeof RecordPushResponse>;

/** Where the image a run used came from. */
export const ImageOrigin = Type.Union([Type.Literal('local'), Type.Literal('pulled'), Type.Literal('built')]);
export type ImageOrigin = Type.Static<typeof ImageOrigin>;
