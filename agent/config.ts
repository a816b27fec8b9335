import { assertRegistryAddress, RUNTIME_PATTERN } from '../common/names.js';
import { readFile } from 'node:fs/promises';
import { parseJsonFile } from '../common/json-file.js';
import Type from 'typebox';
import Value from 'typebox/value';
import { RgridError } from '../common/errors.js';
import { FleetConfigProperties } from './config-fleet.js';

/**
 * Every setting of the agent daemon, as one TypeBox schema: the type is derived from it, defaults live in
 * it, and it is validated once at start. Sources, lowest precedence first: the schema's
 * defaults, a JSON config file (`--config FILE`), then command-line flags. Nothing here reads
 * process.env: the CLI passes what it found, so tests never mutate the environment.
 *
 * Keys are snake_case, the same spelling as the JSON config file and the socket API's JSON.
 */
const RuntimeName = Type.String({ pattern: RUNTIME_PATTERN });

export const AgentConfigSchema = Type.Object(
  {
    /** Unix socket the API listens on. */
    socket: Type.String({ minLength: 1 }),
    /** Owns the LMDB index (`index/`) and per-run scratch directories (`runs/`). */
    data_dir: Type.String({ minLength: 1 }),
    /** Optional group (name or numeric gid) given to the socket, so members can use the CLI. */
    socket_group: Type.Optional(Type.String({ minLength: 1 })),
    /** Runtime name → base image reference (`python3.11` → `python:3.11-slim`). */
    runtimes: Type.Record(RuntimeName, Type.String({ minLength: 1 }), { default: {} }),
    /** Runtime used when a request names none; when absent and exactly one runtime exists, that one. */
    default_runtime: Type.Optional(RuntimeName),
    // The build policy (docs/operations.md, "Dependency builds"): compiled once at start by
    // agent/builder/build-policy.ts; none of these keys applies without a restart.
    /**
     * Network of the dependency-install container. `none`: pip reaches only the wheelhouse
     * (`pip_find_links`). `host` (or `default`, the engine's bridge) is an explicit operator choice for an
     * index on the network (`pip_index_url`, e.g. a mirror or proxy listening on the host); it is refused
     * when nothing in the policy needs it.
     */
    build_network: Type.Union([Type.Literal('none'), Type.Literal('host'), Type.Literal('default')], { default: 'none' }),
    /** Host directory of wheels copied into dependency builds; pip then runs with --no-index. */
    pip_find_links: Type.Optional(Type.String({ minLength: 1 })),
    /** The operator's package index for dependency builds (needs build_network host or default). */
    pip_index_url: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
    /** Let a user's file name its own package sources (-i/--index-url, --extra-index-url, -f/--find-links, --trusted-host). */
    build_allow_index_options: Type.Boolean({ default: false }),
    /** Let a user's file install from URLs (`name @ https://…`, bare URLs, VCS links such as `git+https://…`). */
    build_allow_direct_urls: Type.Boolean({ default: false }),
    /** `pip install --only-binary :all:`: no sdist is built, so no package's own setup code runs in a build. */
    build_wheels_only: Type.Boolean({ default: false }),
    /** Memory of a build container (no swap beyond it); a build that needs more fails with build_failed. */
    build_memory_mb: Type.Integer({ minimum: 64, default: 2048 }),
    /** CPUs of a build container. */
    build_cpus: Type.Number({ exclusiveMinimum: 0, default: 1 }),
    /** Processes and threads of the dependency-install container at once. */
    build_pids_limit: Type.Integer({ minimum: 16, default: 512 }),
    /** Wall-clock limit of one build (the install and the image it becomes); then it is stopped and fails. */
    build_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 900 }),
    /** Builds running at once; further builds wait in the queue. */
    build_concurrency: Type.Integer({ minimum: 1, maximum: 64, default: 1 }),
    // ---- resolution and locks (agent/builder/resolution.ts; docs/operations.md "Resolution and locks") --
    /**
     * How long a requirements file's resolution (its lock) is used before pip resolves it again; past
     * it the lock is still used at once while one refresh runs in the background. 0: resolved at every
     * use. `never`: no resolution at all — the dependency key stays on the file's text, as before locks.
     */
    resolve_ttl_s: Type.Union([Type.Number({ minimum: 0 }), Type.Literal('never')], { default: 3600 }),
    // ---- end of resolution and locks ----------------------------------------------------------------------
    /** How long a resolved base image ID is trusted before the runtime's tag is inspected again. */
    base_image_ttl_s: Type.Number({ minimum: 0, default: 30 }),
    /** Network mode of run containers. */
    run_network: Type.Union([Type.Literal('none'), Type.Literal('host')], { default: 'none' }),
    run_memory_mb: Type.Integer({ minimum: 16, default: 1024 }),
    run_cpus: Type.Number({ exclusiveMinimum: 0, default: 1 }),
    run_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 3600 }),
    run_pids_limit: Type.Integer({ minimum: 8, default: 256 }),
    // ---- run limits (agent/runner/sandbox.ts; docs/operations.md "Run and output limits") ---------------
    // Ceilings on what a submitter may ask for: a larger request is clamped to them (and logged).
    run_max_memory_mb: Type.Integer({ minimum: 16, default: 16_384 }),
    /** Also never more than the host's CPUs (the engine refuses that). */
    run_max_cpus: Type.Number({ exclusiveMinimum: 0, default: 4 }),
    run_max_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 86_400 }),
    /** Size of the run's /tmp, a tmpfs: its pages count against the run's memory limit. */
    run_tmp_mb: Type.Integer({ minimum: 1, default: 512 }),
    /** Size of the run's /dev/shm. */
    run_shm_mb: Type.Integer({ minimum: 1, default: 64 }),
    /** RLIMIT_FSIZE of the run: the largest file it may create anywhere, sparse files included. */
    run_max_file_mb: Type.Integer({ minimum: 1, default: 4096 }),
    /** Size of the /work/outputs tmpfs, and the most output bytes copied out of a run. */
    run_max_output_mb: Type.Integer({ minimum: 1, default: 1024 }),
    /** The largest single output file copied out. */
    run_max_output_file_mb: Type.Integer({ minimum: 1, default: 1024 }),
    /** The most output files copied out (the wire carries at most 10 000). */
    run_max_output_files: Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 }),
    /** Wall-clock bound on copying the outputs out of a finished run. */
    run_output_copy_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 300 }),
    // ---- end of run limits -------------------------------------------------------------------------------
    // ---- engine and image sharing (agent/registry/; docs/operations.md "Image sharing through a registry")
    /** The Docker engine the agent uses: `unix:///path/docker.sock` or `tcp://host:port`; default: DOCKER_HOST, else the default socket. */
    docker_host: Type.Optional(Type.String({ pattern: '^(unix:///[^\\s]+|tcp://[^\\s/]+)$' })),
    /** `HOST:PORT[/PREFIX]` of the OCI registry workers share images through; absent: no sharing at all. */
    registry: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    /** JSON file `{"username":…,"password":…}` for the registry, read on every push and pull; never logged. */
    registry_auth_file: Type.Optional(Type.String({ minLength: 1 })),
    /** Bound of one push or pull (and of a runtime's base image pull). */
    registry_timeout_s: Type.Number({ exclusiveMinimum: 0, default: 300 }),
    /** How long a worker waits for another worker's build of the same image before building it itself. */
    build_wait_s: Type.Number({ minimum: 0, default: 900 }),
    // ---- end of engine and image sharing ----------------------------------------------------------------
    /** Largest request body (scripts, requirements and inputs travel base64-encoded inside JSON). */
    max_request_mb: Type.Integer({ minimum: 1, default: 256 }),
    /** On SIGTERM: time for in-flight builds and runs to finish before they are abandoned. Fits systemd's default 90 s TimeoutStopSec. */
    drain_timeout_s: Type.Number({ minimum: 0, default: 60 }),
    // The claim loop (agent/worker/) runs when control_url and a worker token are set (keys in config-fleet.ts).
    /** Executions this agent runs at once for the control plane. */
    run_capacity: Type.Integer({ minimum: 1, maximum: 256, default: 2 }),
    /** Blobs (inputs, scripts) unused this long are removed from the worker's blob cache. */
    blob_cache_ttl_s: Type.Number({ minimum: 0, default: 30 * 86_400 }),
    /** Size bound of the blob cache; least recently used blobs go first. */
    blob_cache_max_mb: Type.Integer({ minimum: 1, default: 10_240 }),
    log_level: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
    ...FleetConfigProperties,
    /**
     * Outputs holders made ahead of runs (agent/runner/holder-pool.ts): each an idle, locked-down
     * container holding one empty outputs tmpfs, used by one run; 0 makes one at each run instead.
     */
    run_holder_pool_size: Type.Integer({ minimum: 0, maximum: 64, default: 2 }),
    /**
     * Hot containers (agent/runner/hot-containers.ts): run containers created ahead for the images run
     * last, so that the next run of one only starts it; at most this many in all, 0 turns them off.
     */
    run_hot_containers: Type.Integer({ minimum: 0, maximum: 16, default: 2 }),
  },
  { additionalProperties: false },
);

export type AgentConfig = Type.Static<typeof AgentConfigSchema>;

/** Every `…_s` key of the config, as the `…_ms` name its value in milliseconds goes by. */
type SecondsKey = { [K in keyof AgentConfig]-?: K extends `${string}_s` ? (AgentConfig[K] extends number ? K : never) : never }[keyof AgentConfig];
type MillisecondsName<K> = K extends `${infer Base}_s` ? `${Base}_ms` : never;
export type AgentDurations = { readonly [K in SecondsKey as MillisecondsName<K>]: number };

const compiledDurations = new WeakMap<AgentConfig, AgentDurations>();

/**
 * The config's durations in milliseconds, the unit every timer and deadline of the agent takes. The file
 * and the flags speak seconds (operators' unit); the code never multiplies them itself: it reads them
 * from here, computed once per config (a live reload makes a new config object, hence a new set).
 */
export function durationsOf(config: AgentConfig): AgentDurations {
  let durations = compiledDurations.get(config);
  if (!durations) {
    const out: Record<string, number> = {};
    for (const [key, value] of Object.entries(config)) {
      if (key.endsWith('_s') && typeof value === 'number') out[`${key.slice(0, -2)}_ms`] = Math.round(value * 1000);
    }
    durations = Object.freeze(out) as unknown as AgentDurations;
    compiledDurations.set(config, durations);
  }
  return durations;
}
/** resolve_ttl_s in milliseconds (the unit of the agent's clocks), or null for `never`: no resolution. */
export function resolveTtlMs(config: AgentConfig): number | null {
  return config.resolve_ttl_s === 'never' ? null : Math.round(config.resolve_ttl_s * 1000);
}

/** What the file or the flags may give: any subset, checked after merging. */
export type AgentConfigInput = Partial<Record<keyof AgentConfig, unknown>>;

/** Merges defaults < file < flags, validates once, and returns the fully filled config. */
export function resolveConfig(fileValues: AgentConfigInput, flagValues: AgentConfigInput): AgentConfig {
  const merged: Record<string, unknown> = { ...fileValues };
  for (const [key, value] of Object.entries(flagValues)) {
    if (value === undefined) continue;
    // Runtimes from flags add to (and override by name) those of the file, so a flag can add one.
    if (key === 'runtimes' && isPlainObject(merged.runtimes) && isPlainObject(value)) {
      merged.runtimes = { ...merged.runtimes, ...value };
    } else {
      merged[key] = value;
    }
  }
  const filled = Value.Default(AgentConfigSchema, merged);
  if (!Value.Check(AgentConfigSchema, filled)) {
    const first = Value.Errors(AgentConfigSchema, filled)
      .slice(0, 3)
      .map((e) => `${e.instancePath || '/'} ${e.message}`)
      .join('; ');
    throw new RgridError('bad_request', `invalid agent config: ${first}`);
  }
  if (filled.pip_find_links !== undefined && filled.pip_find_links.startsWith('/') === false) {
    throw new RgridError('bad_request', 'invalid agent config: pip_find_links must be an absolute path');
  }
  if (filled.pip_index_url !== undefined && filled.build_network === 'none') {
    throw new RgridError('bad_request', 'invalid agent config: pip_index_url needs build_network host (or default): with none no index is reachable');
  }
  if (filled.build_network !== 'none' && filled.pip_index_url === undefined && !filled.build_allow_index_options && !filled.build_allow_direct_urls) {
    throw new RgridError(
      'bad_request',
      `invalid agent config: build_network ${filled.build_network} gives builds a network nothing in the build policy uses; set pip_index_url (or leave build_network at none)`,
    );
  }
  if (filled.disk_low_percent > filled.disk_high_percent) {
    throw new RgridError('bad_request', 'invalid agent config: disk_low_percent must not exceed disk_high_percent');
  }
  if (filled.registry !== undefined) assertRegistryAddress(filled.registry, 'invalid agent config: registry');
  if (filled.registry_auth_file !== undefined && !filled.registry_auth_file.startsWith('/')) {
    throw new RgridError('bad_request', 'invalid agent config: registry_auth_file must be an absolute path');
  }
  checkRunLimits(filled);
  if (filled.default_runtime !== undefined && !(filled.default_runtime in filled.runtimes)) {
    throw new RgridError('bad_request', `invalid agent config: default_runtime ${filled.default_runtime} is not in runtimes`);
  }
  return filled;
}

// ---- run limits --------------------------------------------------------------------------------------------
/** A default above its ceiling would be clamped on every run: refuse the config instead. */
function checkRunLimits(c: AgentConfig): void {
  const pairs = [
    ['run_memory_mb', c.run_memory_mb, 'run_max_memory_mb', c.run_max_memory_mb],
    ['run_cpus', c.run_cpus, 'run_max_cpus', c.run_max_cpus],
    ['run_timeout_s', c.run_timeout_s, 'run_max_timeout_s', c.run_max_timeout_s],
    ['run_max_output_file_mb', c.run_max_output_file_mb, 'run_max_output_mb', c.run_max_output_mb],
  ] as const;
  for (const [key, value, ceilingKey, ceiling] of pairs) {
    if (value > ceiling) throw new RgridError('bad_request', `invalid agent config: ${key} (${value}) exceeds ${ceilingKey} (${ceiling})`);
  }
}
// ---- end of run limits -------------------------------------------------------------------------------------

export async function readConfigFile(path: string): Promise<AgentConfigInput> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new RgridError('bad_request', `cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  // The file may hold a worker token: a parse error says where, never what (common/json-file.ts).
  const parsed = parseJsonFile(`config file ${path}`, text);
  if (!isPlainObject(parsed)) throw new RgridError('bad_request', `config file ${path} must hold a JSON object`);
  return parsed;
}

/** `NAME=IMAGE` pairs from repeated `--runtime` flags. */
export function parseRuntimeFlags(values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    if (eq <= 0 || eq === value.length - 1) {
      throw new RgridError('bad_request', `--runtime ${value}: expected NAME=IMAGE (e.g. python3.11=python:3.11-slim)`);
    }
    out[value.slice(0, eq)] = value.slice(eq + 1);
  }
  return out;
}

/** The runtime a request without one uses, or undefined when the choice would be a guess. */
export function defaultRuntime(config: AgentConfig): string | undefined {
  if (config.default_runtime) return config.default_runtime;
  const names = Object.keys(config.runtimes);
  return names.length === 1 ? names[0] : undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
