/**
 * The control plane's configuration: one TypeBox schema, the type derived from it, defaults written
 * once. The CLI entry collects flags and environment into a partial object and calls
 * `loadControlConfig` once at start; everything else receives the validated result. Nothing here reads
 * process.env.
 */
import Type from 'typebox';
import { Value } from 'typebox/value';
import { RgridError } from '../common/errors.js';
import { assertRegistryAddress, REGISTRY_ADDRESS_PATTERN } from '../common/names.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DAY = 86_400_000;

// ---- admission control: timeouts, body and storage limits, per-token rates (docs/operations.md) ----
/**
 * Everything that bounds what one caller can make the control plane hold: time, memory, disk, requests.
 * 0 turns a per-token or per-address limit off; timeouts and sizes are always on.
 */
const AdmissionConfigFields = {
  /**
   * A full snapshot is one JSON body held in memory while it is parsed: at about 600 bytes an entry,
   * 8 MiB holds some 14,000 entries (docs/operations.md, Admission control and limits).
   */
  snapshotBodyLimitBytes: Type.Integer({ minimum: 1024, maximum: 1024 * MiB, default: 8 * MiB }),
  /** Input blob bytes one account may keep (the sum of its blob rows); an upload past it is refused. */
  accountBlobQuotaBytes: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 10 * GiB }),
  /** Input blobs one account may keep. */
  accountBlobQuotaCount: Type.Integer({ minimum: 0, maximum: 2_147_483_647, default: 1_000_000 }),
  /** Requests one token may make per rolling minute (429 with Retry-After past it); 0 = unlimited. */
  tokenRateLimitPerMinute: Type.Integer({ minimum: 0, default: 6000 }),
  /** Requests one token may have in flight at once, long polls included; 0 = unlimited. */
  tokenConcurrencyLimit: Type.Integer({ minimum: 0, default: 128 }),
  /** Failed authentications one client address may make per minute before all its requests get 429; 0 = unlimited. */
  authFailuresPerMinute: Type.Integer({ minimum: 0, default: 30 }),
  /**
   * Longest time to receive a whole request, body included (Node's requestTimeout). Bounds a body that
   * trickles in just fast enough to dodge the idle timeouts; the largest blob must arrive within it.
   */
  requestTimeoutMs: Type.Integer({ minimum: 1000, default: 3_600_000 }),
  /** Longest time to receive the request line and headers. */
  headersTimeoutMs: Type.Integer({ minimum: 1000, default: 20_000 }),
  /**
   * A connection with no bytes in either direction for this long is closed (Node's socket timeout). A
   * long poll (claim, wait) sends nothing until it answers, so this must exceed claimWaitMaxMs.
   */
  connectionTimeoutMs: Type.Integer({ minimum: 1000, default: 90_000 }),
  /** An idle keep-alive connection between two requests is closed after this long. */
  keepAliveTimeoutMs: Type.Integer({ minimum: 1000, default: 10_000 }),
  /**
   * A request body (blob upload, large JSON) that stops arriving for this long is refused with 408 and
   * its connection closed; a staged blob is removed.
   */
  bodyIdleTimeoutMs: Type.Integer({ minimum: 100, default: 30_000 }),
};
/** A long poll's answer must leave its connection before the idle timeout closes it. */
const LONG_POLL_MARGIN_MS = 5000;

/** Relations between admission fields the schema cannot express. */
function admissionProblems(c: ControlConfig): string[] {
  const problems: string[] = [];
  if (c.connectionTimeoutMs < c.claimWaitMaxMs + LONG_POLL_MARGIN_MS) {
    problems.push(`/connectionTimeoutMs: must be at least claimWaitMaxMs + ${LONG_POLL_MARGIN_MS} (${c.claimWaitMaxMs + LONG_POLL_MARGIN_MS}): long polls stay silent that long`);
  }
  if (c.headersTimeoutMs > c.requestTimeoutMs) problems.push('/headersTimeoutMs: must not exceed requestTimeoutMs');
  return problems;
}
// ---- end of admission control ------------------------------------------------------------------------

export const ControlConfigSchema = Type.Object(
  {
    /** Interface to listen on; `--listen HOST:PORT`. */
    host: Type.String({ minLength: 1, default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65_535, default: 8080 }),
    /** Root of the control plane's files: embedded PostgreSQL, blobs. `--data-dir`. */
    dataDir: Type.String({ minLength: 1, default: '.rgrid/control' }),
    /** External PostgreSQL (`DATABASE_URL`); null starts the embedded one under dataDir/postgres. */
    databaseUrl: Type.Union([Type.String({ minLength: 1 }), Type.Null()], { default: null }),
    /** The admin bearer token (`RGRID_CONTROL_ADMIN_TOKEN` or a file); null disables admin routes. */
    adminToken: Type.Union([Type.String({ minLength: 16 }), Type.Null()], { default: null }),
    /** JSON request bodies. */
    bodyLimitBytes: Type.Integer({ minimum: 1024, default: 1 * MiB }),
    /** One input blob. */
    blobMaxBytes: Type.Integer({ minimum: 1, default: 4096 * MiB }),
    /** Entries (and manifests) unused for this long are removed by cleanup. */
    entryTtlMs: Type.Integer({ minimum: 0, default: 30 * DAY }),
    /** A blob no manifest references is removed once it is older than this (uploads precede use). */
    blobGraceMs: Type.Integer({ minimum: 0, default: 3_600_000 }),
    /** A worker silent for this long is not placed on (dead). */
    workerDeadAfterMs: Type.Integer({ minimum: 1000, default: 60_000 }),
    /** What the agent is told to use between heartbeats. */
    heartbeatIntervalMs: Type.Integer({ minimum: 100, default: 15_000 }),
    /** A worker silent for this long is removed with its entries by cleanup. */
    workerRetentionMs: Type.Integer({ minimum: 0, default: 7 * DAY }),
    /** Applied sync op ids are kept this long to recognise retried batches. */
    opRetentionMs: Type.Integer({ minimum: 0, default: 7 * DAY }),
    /** Period of the background cleanup; 0 turns it off (the CLI `cleanup` still works). */
    cleanupIntervalMs: Type.Integer({ minimum: 0, default: 3_600_000 }),
    /** Apply migrations at start (they are safe with several replicas starting together). */
    migrateOnStart: Type.Boolean({ default: true }),
    /** Connections per process. */
    poolMax: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
    /**
     * How long a process reuses its read of an account's live workers and loads for placement; 0 reads
     * on every resolve. Replicas converge within this time (control/placement/index.ts).
     */
    fleetCacheMs: Type.Integer({ minimum: 0, maximum: 60_000, default: 1000 }),
    /**
     * How long a process reuses a valid token's lookup (never past its expiry); 0 looks up on every
     * request. A revocation through another replica takes effect within this time (control/token-cache.ts).
     */
    tokenCacheMs: Type.Integer({ minimum: 0, maximum: 60_000, default: 1000 }),
    /** Placement lists at most this many workers unless the request asks for another limit. */
    placementLimit: Type.Integer({ minimum: 1, maximum: 10_000, default: 10 }),
    /**
     * Pull throughput placement assumes from the registry, in MB/s (1 MB = 2^20 bytes): turns an image's
     * size into the seconds a worker would spend pulling it (control/placement/rank.ts). A guess of a
     * same-site registry over a 1 Gbit/s link; only the order of the workers depends on it.
     */
    placementPullMbps: Type.Integer({ minimum: 1, maximum: 100_000, default: 100 }),
    // Dispatch (docs/dispatch.md).
    /** A claimed execution goes back to the queue when its worker has not renewed the claim for this long. */
    claimLeaseMs: Type.Integer({ minimum: 500, default: 30_000 }),
    /** Longest a claim request is held open when the worker's queue is empty (long poll). */
    claimWaitMaxMs: Type.Integer({ minimum: 0, maximum: 60_000, default: 25_000 }),
    /** Attempts of an execution unless its submission names another limit. */
    maxAttempts: Type.Integer({ minimum: 1, maximum: 20, default: 3 }),
    /** stdout and stderr are each kept up to this many bytes (the tail). */
    logMaxBytes: Type.Integer({ minimum: 1024, maximum: 64 * MiB, default: 1 * MiB }),
    /** Period of the sweep that re-queues expired claims and work queued on dead workers; 0 turns it off. */
    dispatchSweepIntervalMs: Type.Integer({ minimum: 0, default: 1000 }),
    // ---- Run limits (docs/operations.md, "Tenancy and run limits") ------------------------------------
    // Ceilings of what a submission may ask for, unless the account has its own (PUT
    // /v1/admin/accounts/:account/run-limits). A request above its account's ceiling is refused with 400
    // naming the limit; nothing is clamped silently.
    /** Largest `memory_mb` a submission may ask for. */
    runMaxMemoryMb: Type.Integer({ minimum: 16, maximum: 1_048_576, default: 4096 }),
    /** Longest `timeout_s` a submission may ask for. */
    runMaxTimeoutS: Type.Number({ exclusiveMinimum: 0, maximum: 7 * 86_400, default: 86_400 }),
    /** Most `max_attempts` a submission may ask for; the default `maxAttempts` is capped by it too. */
    runMaxAttempts: Type.Integer({ minimum: 1, maximum: 20, default: 5 }),
    // ---- end of run limits --------------------------------------------------------------------------
    // ---- Images in the registry (docs/architecture.md, "Images in the registry") ----------------------
    /** A build lease not renewed for this long is taken over by the next worker that asks. */
    buildLeaseMs: Type.Integer({ minimum: 1000, maximum: 600_000, default: 30_000 }),
    /** A failed build is answered to every worker asking for its key for this long; 0 = not remembered. */
    buildFailureTtlMs: Type.Integer({ minimum: 0, maximum: 7 * DAY, default: 600_000 }),
    /**
     * `HOST:PORT[/PREFIX]`: the registry whose manifests cleanup deletes when an image falls out of use
     * (the one the workers push to); null leaves the registry and its rows alone.
     */
    registry: Type.Union([Type.String({ pattern: REGISTRY_ADDRESS_PATTERN, maxLength: 255 }), Type.Null()], { default: null }),
    /** A JSON file `{"username": ..., "password": ...}` for the registry, read at each use; null = no authentication. */
    registryAuthFile: Type.Union([Type.String({ minLength: 1 }), Type.Null()], { default: null }),
    // ---- end of images in the registry --------------------------------------------------------------
    ...AdmissionConfigFields,
    logLevel: Type.Union(
      [
        Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'),
        Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent'),
      ],
      { default: 'info' },
    ),
  },
  { additionalProperties: false },
);

/** What the registry pattern cannot say: the port's range. */
function registryProblems(c: ControlConfig): string[] {
  if (c.registry === null) return [];
  try {
    assertRegistryAddress(c.registry);
    return [];
  } catch (err) {
    return [`/registry: ${(err as Error).message}`];
  }
}

export type ControlConfig = Type.Static<typeof ControlConfigSchema>;
export type ControlConfigInput = Partial<ControlConfig>;

/** Fills defaults and validates; throws `bad_request` naming every wrong field. */
export function loadControlConfig(input: ControlConfigInput = {}): ControlConfig {
  const withDefaults = Value.Default(ControlConfigSchema, structuredClone(input));
  const errors = Value.Errors(ControlConfigSchema, withDefaults);
  const lines = errors.map((e) => `${e.instancePath || '/'}: ${e.message}`);
  if (lines.length === 0) lines.push(...admissionProblems(withDefaults as ControlConfig), ...registryProblems(withDefaults as ControlConfig));
  if (lines.length > 0) {
    throw new RgridError('bad_request', `invalid control configuration: ${lines.join('; ')}`, { errors: lines });
  }
  return withDefaults as ControlConfig;
}

/** `HOST:PORT`, `:PORT`, `[::1]:PORT` → host and port. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  if (!match || !Number.isInteger(port) || port > 65_535) {
    throw new RgridError('bad_request', `--listen must be HOST:PORT, got ${JSON.stringify(text)}`);
  }
  return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
}
