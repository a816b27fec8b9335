import { RECIPE_VERSION } from '../../common/cache-keys.js';
import { sha256Hex } from '../../common/digest.js';

/**
 * The image recipes (design.md §4 as decided for issue 2), as pure functions so they can be unit-tested
 * and documented. The dependency layer is built in a throw-away `install` stage, so the wheelhouse copied
 * into the build context never ends up in a kept image; the final deps image holds only /opt/rgrid.
 */
export const WHEELHOUSE_IN_BUILD = '/tmp/rgrid-wheelhouse';
export const LABEL_PREFIX = 'io.rgrid.';

/** The worker's own pip settings, from config. */
export interface WorkerPipSettings {
  findLinksDir?: string | undefined;
  indexUrl?: string | undefined;
}

/** Options that go into the pip settings fingerprint (pipSettingsFingerprint's `workerOptions`). */
export function workerPipFingerprintOptions(settings: WorkerPipSettings): string[] {
  const options: string[] = [];
  if (settings.indexUrl) options.push(`--index-url=${settings.indexUrl}`);
  if (settings.findLinksDir) {
    options.push(`--find-links=${settings.findLinksDir}`);
    if (!settings.indexUrl) options.push('--no-index');
  }
  return options;
}

/** The pip command-line arguments the worker settings turn into inside the build. */
export function workerPipArgs(settings: WorkerPipSettings): string[] {
  const args: string[] = [];
  if (settings.indexUrl) args.push('--index-url', settings.indexUrl);
  else if (settings.findLinksDir) args.push('--no-index');
  if (settings.findLinksDir) args.push('--find-links', WHEELHOUSE_IN_BUILD);
  return args;
}

/** The requirements.txt written into the build context: the file's pip options, then the canonical lines. */
export function requirementsFileText(pipOptions: readonly string[], canonicalText: string): string {
  return [...pipOptions, canonicalText].filter((s) => s.length > 0).join('\n') + '\n';
}

/** Short per-account suffix of engine tags: the same key in two accounts gives two images. */
export function accountTagSuffix(account: string): string {
  return sha256Hex(account).slice(0, 8);
}

export function depsImageTag(depsKey: string, account: string): string {
  return `rgrid-deps:${depsKey.slice(0, 16)}-${accountTagSuffix(account)}`;
}

export function execImageTag(imageKey: string, account: string): string {
  return `rgrid-exec:${imageKey.slice(0, 16)}-${accountTagSuffix(account)}`;
}

export interface DepsRecipeInput {
  baseImageId: string;
  depsKey: string;
  requirementsSha256: string;
  runtime: string;
  account: string;
  pip: WorkerPipSettings;
  /** Labels the throw-away install stage (and its RUN containers) so this agent can find and remove them. */
  agentId: string;
  buildId: string;
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

export function depsLabels(input: Omit<DepsRecipeInput, 'pip' | 'agentId' | 'buildId'>): Record<string, string> {
  return {
    ...ownerLabel(input.owner),
    'io.rgrid.kind': 'deps',
    'io.rgrid.deps-key': input.depsKey,
    'io.rgrid.requirements-sha256': input.requirementsSha256,
    'io.rgrid.runtime': input.runtime,
    'io.rgrid.account': input.account,
    'io.rgrid.base-image-id': input.baseImageId,
    'io.rgrid.recipe': RECIPE_VERSION,
  };
}

export function depsDockerfile(input: DepsRecipeInput): string {
  const pipArgs = [
    '--no-cache-dir',
    '--disable-pip-version-check',
    '--no-input',
    ...workerPipArgs(input.pip),
    '-r',
    '/opt/rgrid/requirements.txt',
  ];
  return [
    `FROM ${input.baseImageId} AS install`,
    labelLine({ 'io.rgrid.stage': 'install', 'io.rgrid.agent': input.agentId, 'io.rgrid.build': input.buildId }),
    'RUN python3 -m venv /opt/rgrid/venv',
    'COPY requirements.txt /opt/rgrid/requirements.txt',
    ...(input.pip.findLinksDir ? [`COPY wheelhouse/ ${WHEELHOUSE_IN_BUILD}/`] : []),
    `RUN ${['/opt/rgrid/venv/bin/pip', 'install', ...pipArgs].map(shellQuote).join(' ')}`,
    `FROM ${input.baseImageId}`,
    'COPY --from=install /opt/rgrid /opt/rgrid',
    labelLine(depsLabels(input)),
    '',
  ].join('\n');
}

export interface ExecRecipeInput {
  baseImageId: string;
  /** The deps image ID to build FROM, or null to build FROM the base image. */
  depsImageId: string | null;
  imageKey: string;
  depsKey: string | null;
  scriptSha256: string;
  requirementsSha256: string | null;
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
