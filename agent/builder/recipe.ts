import { RECIPE_VERSION } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';
import { accountHash } from '../../common/registry-names.js';
import { splitLinesLikePython } from '../../common/requirements.js';

/**
 * The image recipes, as pure functions so they can be unit-tested and documented. A dependency layer is
 * made in two steps: pip runs in an install container this agent creates itself (so it gets the build
 * policy's network, memory, CPU and PID limits and a non-root user, which the classic builder's RUN
 * cannot give), then the finished /opt/rgrid is copied out and becomes the kept image with a plain
 * `COPY` — the wheelhouse never reaches it.
 */
export const WHEELHOUSE_IN_BUILD = '/tmp/rgrid-wheelhouse';
export const INSTALL_ROOT = '/opt/rgrid';
/** pip runs as nobody: a package's setup code cannot touch the base image's files or gain root in the image. */
export const INSTALL_USER = '65534:65534';

/** The worker's own pip settings, from config. */
export interface WorkerPipSettings {
  findLinksDir?: string | undefined;
  indexUrl?: string | undefined;
  /** `--only-binary :all:`: wheels only, no source builds. */
  wheelsOnly?: boolean | undefined;
}

/**
 * Options that go into the pip settings fingerprint (pipSettingsFingerprint's `workerOptions`): only what
 * changes what gets installed, and nothing for a default, so keys from before a setting existed stay valid.
 */
export function workerPipFingerprintOptions(settings: WorkerPipSettings): string[] {
  const options: string[] = [];
  if (settings.indexUrl) options.push(`--index-url=${settings.indexUrl}`);
  if (settings.findLinksDir) {
    options.push(`--find-links=${settings.findLinksDir}`);
    if (!settings.indexUrl) options.push('--no-index');
  }
  if (settings.wheelsOnly) options.push('--only-binary=:all:');
  return options;
}

/** The pip command-line arguments the worker settings turn into inside the build. */
export function workerPipArgs(settings: WorkerPipSettings): string[] {
  const args: string[] = [];
  if (settings.indexUrl) args.push('--index-url', settings.indexUrl);
  else if (settings.findLinksDir) args.push('--no-index');
  if (settings.findLinksDir) args.push('--find-links', WHEELHOUSE_IN_BUILD);
  if (settings.wheelsOnly) args.push('--only-binary', ':all:');
  return args;
}

/**
 * The requirements.txt pip reads: the file's pip options, then the canonical lines. It starts with a
 * UTF-8 BOM because pip decodes a file without one in the build's locale, where a non-ASCII character
 * could decode to a line break (\x85 under Latin-1).
 */
export function requirementsFileText(pipOptions: readonly string[], canonicalText: string): string {
  const lines = [...pipOptions, ...(canonicalText ? canonicalText.split('\n') : [])];
  // Canonical lines never hold a line break pip would see; if one ever did, this is the last stop.
  if (lines.some((line) => splitLinesLikePython(line).length > 1)) {
    throw new RgridError('bad_requirements', 'requirements would not reach pip as the lines that were checked');
  }
  return `\uFEFF${lines.join('\n')}\n`;
}

/** How pip installs a lock: hash-checked always; without resolving again when the lock is complete by construction. */
export interface LockInstall {
  /** `--require-hashes`: every artifact must match the lock's hash (a locked file or a resolved lock). */
  requireHashes: boolean;
  /** `--no-deps`: the lock already lists every dependency (a resolved lock); a user's own lock is checked by pip instead. */
  noDeps: boolean;
}

/** The install container's command: a venv under /opt/rgrid, then pip with the policy's settings. */
export function installCommand(pip: WorkerPipSettings, lock: LockInstall = { requireHashes: false, noDeps: false }): string {
  const pipArgs = [
    `${INSTALL_ROOT}/venv/bin/pip`,
    'install',
    '--no-cache-dir',
    '--disable-pip-version-check',
    '--no-input',
    ...(lock.requireHashes ? ['--require-hashes'] : []),
    ...(lock.noDeps ? ['--no-deps'] : []),
    ...workerPipArgs(pip),
    '-r',
    `${INSTALL_ROOT}/requirements.txt`,
  ];
  return `set -e; python3 -m venv ${INSTALL_ROOT}/venv; exec ${pipArgs.map(shellQuote).join(' ')}`;
}

/** Labels of the install container: start-up repair removes what a crashed agent left behind by them. */
export function installLabels(agentId: string, buildId: string): Record<string, string> {
  return { 'io.rgrid.stage': 'install', 'io.rgrid.agent': agentId, 'io.rgrid.build': buildId };
}

export function depsImageTag(depsKey: string, account: string): string {
  return `rgrid-deps:${depsKey.slice(0, 16)}-${accountHash(account)}`;
}

export function execImageTag(imageKey: string, account: string): string {
  return `rgrid-exec:${imageKey.slice(0, 16)}-${accountHash(account)}`;
}

export interface DepsRecipeInput {
  baseImageId: string;
  depsKey: string;
  requirementsSha256: string;
  /** The lock the layer installs; null: keyed on the text (`resolve_ttl: never`). */
  lockSha256?: string | null;
  runtime: string;
  account: string;
  /**
   * Labels the kept image `io.rgrid.owner=<agent id>` so reconcile and reindex find this agent's images
   * among those of other agents on the same engine (not `io.rgrid.agent`: that label marks leftovers
   * which the start-up repair deletes).
   */
  owner?: string;
}

function ownerLabel(owner: string | undefined): Record<string, string> {
  return owner ? { 'io.rgrid.owner': owner } : {};
}

export function depsLabels(input: DepsRecipeInput): Record<string, string> {
  return {
    ...ownerLabel(input.owner),
    'io.rgrid.kind': 'deps',
    'io.rgrid.deps-key': input.depsKey,
    'io.rgrid.requirements-sha256': input.requirementsSha256,
    ...lockLabel(input.lockSha256 ?? null),
    'io.rgrid.runtime': input.runtime,
    'io.rgrid.account': input.account,
    'io.rgrid.base-image-id': input.baseImageId,
    'io.rgrid.recipe': RECIPE_VERSION,
  };
}

/** Only when there is a lock, so images keyed on the text keep exactly their old labels. */
function lockLabel(lockSha256: string | null): Record<string, string> {
  return lockSha256 ? { 'io.rgrid.lock-sha256': lockSha256 } : {};
}

/**
 * The kept dependency image: the base plus the finished /opt/rgrid of the install container (in the
 * build context as `rgrid/`). COPY makes every file root's, so a run (user 65534) cannot change the venv.
 */
export function depsDockerfile(input: DepsRecipeInput): string {
  return [`FROM ${input.baseImageId}`, `COPY rgrid ${INSTALL_ROOT}`, labelLine(depsLabels(input)), ''].join('\n');
}

export interface ExecRecipeInput {
  baseImageId: string;
  /** The deps image ID to build FROM, or null to build FROM the base image. */
  depsImageId: string | null;
  imageKey: string;
  depsKey: string | null;
  scriptSha256: string;
  requirementsSha256: string | null;
  lockSha256?: string | null;
  runtime: string;
  account: string;
  owner?: string;
}

export function execLabels(input: ExecRecipeInput): Record<string, string> {
  return {
    ...ownerLabel(input.owner),
    'io.rgrid.kind': 'image',
    'io.rgrid.image-key': input.imageKey,
    'io.rgrid.deps-key': input.depsKey ?? '',
    'io.rgrid.script-sha256': input.scriptSha256,
    'io.rgrid.requirements-sha256': input.requirementsSha256 ?? '',
    ...lockLabel(input.lockSha256 ?? null),
    'io.rgrid.runtime': input.runtime,
    'io.rgrid.account': input.account,
    'io.rgrid.base-image-id': input.baseImageId,
    'io.rgrid.recipe': RECIPE_VERSION,
  };
}

export function execDockerfile(input: ExecRecipeInput): string {
  return [
    `FROM ${input.depsImageId ?? input.baseImageId}`,
    'COPY script.py /work/script.py',
    // Runs as 65534 later: only /work/outputs (and /tmp) is writable for it.
    'RUN mkdir -p /work/inputs /work/outputs && chmod 1777 /work/outputs',
    'WORKDIR /work',
    // With deps, the venv's python (and `python`) comes first; without, python3 of the base image.
    ...(input.depsImageId ? ['ENV PATH=/opt/rgrid/venv/bin:$PATH'] : []),
    labelLine(execLabels(input)),
    'CMD ["python3", "/work/script.py"]',
    '',
  ].join('\n');
}

function labelLine(labels: Record<string, string>): string {
  return `LABEL ${Object.entries(labels)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ')}`;
}

/** POSIX shell single-quoting for RUN lines (URLs with `&` or `?` must reach pip unchanged). */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
