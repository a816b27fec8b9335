import { ACCOUNT_PATTERN, WORKER_ID_PATTERN } from '../common/names.js';
import Type from 'typebox';

/**
 * The agent's fleet settings: sync with the control plane, pruning, reconcile, cache warming
 * and metrics. Spread into AgentConfigSchema (agent/config.ts), so there is still one schema, one type
 * and one validation; kept in its own module so the sections of the schema stay readable.
 *
 * Durations are seconds (`_s`) like the rest of the file; the CLI flags `--ttl` and `--min-age` accept
 * `2s`/`30d` and are converted before validation.
 */
export const FleetConfigProperties = {
  /** Base URL of the control plane (`http://host:port`); sync is off without it. */
  control_url: Type.Optional(Type.String({ pattern: '^https?://' })),
  /** Bearer token of role `worker` for this worker id. Prefer `worker_token_file` (not visible in `ps`). */
  worker_token: Type.Optional(Type.String({ minLength: 1 })),
  /** File holding the worker token (e.g. a systemd credential); refused when group or others may access it (agent/cli/worker-token.ts); read on every (re-)registration. */
  worker_token_file: Type.Optional(Type.String({ minLength: 1 })),
  /** Worker id the token is bound to; default: the host name. */
  worker_id: Type.Optional(Type.String({ pattern: WORKER_ID_PATTERN })),
  /** Capacity reported at registration (the load placement sees); default: run_capacity. */
  worker_capacity: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
  /** How often the outbox is drained while the control plane answers. */
  sync_interval_s: Type.Number({ minimum: 0.01, maximum: 3600, default: 1 }),
  /** Ops per request (the control plane accepts up to 10,000). */
  sync_batch_size: Type.Integer({ minimum: 1, maximum: 10_000, default: 500 }),
  /**
   * Largest snapshot request body: a snapshot larger than this is sent in parts of at most this many
   * bytes (serialized). Well under the control plane's snapshot body limit (8 MiB by default).
   */
  sync_snapshot_part_bytes: Type.Integer({ minimum: 4096, maximum: 1024 * 1024 * 1024, default: 2 * 1024 * 1024 }),
  /** Timeout of one control-plane request. */
  sync_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 15 }),
  /** First retry delay after a failure; doubles per failure (with jitter) up to sync_backoff_max_s. */
  sync_backoff_initial_s: Type.Number({ exclusiveMinimum: 0, default: 0.5 }),
  sync_backoff_max_s: Type.Number({ exclusiveMinimum: 0, default: 60 }),
  /** Consecutive failures that open the circuit breaker. */
  sync_breaker_threshold: Type.Integer({ minimum: 1, default: 5 }),
  /** How long an open breaker waits before one half-open probe. */
  sync_breaker_reset_s: Type.Number({ exclusiveMinimum: 0, default: 30 }),

  /** Entries unused this long are pruned (30 days by default). */
  prune_ttl_s: Type.Number({ minimum: 0, default: 30 * 86_400 }),
  /** Entries younger than this (since creation) are never pruned, whatever the TTL or the disk says. */
  prune_min_age_s: Type.Number({ minimum: 0, default: 3600 }),
  /** Period of the background prune; 0: only on demand (`rgrid-agent prune`). */
  prune_interval_s: Type.Number({ minimum: 0, default: 300 }),
  /** Disk use (percent) above which least-recently-used entries are pruned … */
  disk_high_percent: Type.Number({ minimum: 1, maximum: 100, default: 85 }),
  /** … until it is below this. */
  disk_low_percent: Type.Number({ minimum: 0, maximum: 100, default: 80 }),
  /** Filesystem whose usage counts (statfs); default: the engine's data root (`docker info` DockerRootDir). */
  disk_usage_path: Type.Optional(Type.String({ minLength: 1 })),
  /**
   * A JSON file `{"used_bytes": N, "total_bytes": N}` read instead of statfs: for tests and for hosts
   * where the engine's storage is not visible to the agent (an external script can write it).
   */
  disk_usage_file: Type.Optional(Type.String({ minLength: 1 })),

  /** Period of the index ↔ engine reconcile (with repair); 0: only at start and on demand. */
  reconcile_interval_s: Type.Number({ minimum: 0, default: 600 }),

  /** Directory of requirements files to pre-build (cache warming); default `<data_dir>/warm.d`. */
  warm_dir: Type.Optional(Type.String({ minLength: 1 })),
  /** Account that files directly in warm_dir are warmed for (`warm.d/<account>/*.txt` names its own). */
  warm_account: Type.String({ pattern: ACCOUNT_PATTERN, default: 'default' }),

  /** Also serve `GET /metrics` on this TCP address (`127.0.0.1:9464`); the socket API always has it. */
  metrics_listen: Type.Optional(Type.String({ pattern: '^[^\\s]+:\\d{1,5}$' })),
};

/**
 * Keys a changed config file applies without a restart. Every other key needs one: a change to it is
 * logged and ignored (the running value stays), so a half-applied socket or data dir can never happen.
 */
export const LIVE_KEYS = [
  'runtimes', 'default_runtime', 'build_concurrency', 'base_image_ttl_s', 'log_level',
  'control_url', 'worker_token', 'worker_token_file', 'worker_id', 'worker_capacity',
  'sync_interval_s', 'sync_batch_size', 'sync_snapshot_part_bytes', 'sync_timeout_s', 'sync_backoff_initial_s', 'sync_backoff_max_s',
  'sync_breaker_threshold', 'sync_breaker_reset_s',
  'prune_ttl_s', 'prune_min_age_s', 'prune_interval_s', 'disk_high_percent', 'disk_low_percent',
  'disk_usage_path', 'disk_usage_file', 'reconcile_interval_s', 'warm_account',
] as const;
