import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import tar from 'tar-stream';
import { RgridError } from '../../common/errors.js';
import { lockFromPipReport, type Lock } from '../../common/lock.js';
import type { BuildPolicy } from './build-policy.js';
import { engineError, type ContextFile } from './engine-build.js';
import { removeBuildLeftovers } from './image-builds.js';
import { wheelhouseInSandbox, withSandboxContainer } from './install-container.js';
import { workerPipArgs } from './recipe.js';

/**
 * The resolution: pip's own resolver in a dry run (`pip install --dry-run --report`), in a container
 * with exactly the dependency install's sandbox (install-container.ts). A dry run still fetches
 * metadata, and an sdist's metadata step runs the package's build code — so it gets the build policy's
 * network, limits, user and deadline like the install does.
 *
 * pip runs as the base image's system pip (`python3 -m pip`): the same interpreter, ABI and environment
 * markers as the venv the install makes from that python3, so what it resolves is what the install can
 * install. A base image without a system pip falls back to a throwaway venv's pip.
 *
 * No pip cache survives a resolution (`--no-cache-dir`, and the container is removed): a cache shared
 * between resolutions would be shared between tenants, and a package's build code, which runs as the
 * same user as pip, could write poisoned wheels or metadata into it for the next tenant's resolution.
 */
export interface ResolveInput {
  baseImageId: string;
  /** The requirements file exactly as pip reads it (recipe.ts requirementsFileText). */
  fileText: string;
  wheelhouse: ContextFile[];
  policy: BuildPolicy;
  /** Start-up repair removes a crashed agent's leftovers by them (resolveLabels). */
  labels: Record<string, string>;
  signal: AbortSignal;
  deadline: AbortSignal;
  onLine: (line: string) => void;
  logger: Logger;
}

export type ResolveLock = (docker: Docker, input: ResolveInput) => Promise<Lock>;

/** How one resolution ended: a first one, a refresh to the same lock or to a new one, or a failure. */
export type ResolutionOutcome = 'resolved' | 'refreshed' | 'changed' | 'failed';

/** Where the report is written inside the container (/tmp belongs to everyone; pip runs as 65534). */
export const REPORT_PATH = '/tmp/rgrid-report.json';
const REQUIREMENTS_PATH = '/tmp/rgrid-resolve/requirements.txt';
const VENV_FALLBACK = '/tmp/rgrid-resolve-venv';
/** A report of MAX_LOCKED_DISTRIBUTIONS entries is a few MB; anything far larger is not pip's. */
export const MAX_REPORT_BYTES = 16 * 1024 * 1024;

/** Labels of the resolution container: same agent label as the install's, so start-up repair removes it. */
export function resolveLabels(agentId: string, resolutionId: string): Record<string, string> {
  return { 'io.rgrid.stage': 'resolve', 'io.rgrid.agent': agentId, 'io.rgrid.build': resolutionId };
}

/** The resolution container's command (pip options from the build policy, as the install passes them). */
export function resolveCommand(policy: BuildPolicy): string {
  const options = [
    'install',
    '--dry-run',
    '--ignore-installed',
    '--no-cache-dir',
    '--disable-pip-version-check',
    '--no-input',
    '-q',
    ...workerPipArgs(policy.pip),
    '--report',
    REPORT_PATH,
    '-r',
    REQUIREMENTS_PATH,
  ]
    .map(shellQuote)
    .join(' ');
  // PIP_BREAK_SYSTEM_PACKAGES: a dry run installs nothing, but Debian's pip refuses `install` outright
  // on its own python (PEP 668) without it.
  return [
    'set -e',
    'if python3 -m pip --version >/dev/null 2>&1; then',
    `  exec env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip ${options}`,
    'fi',
    `python3 -m venv ${VENV_FALLBACK}`,
    `exec ${VENV_FALLBACK}/bin/pip ${options}`,
  ].join('\n');
}

/** Resolves the file to a lock: pip's dry run, then its report read back and checked (common/lock.ts). */
export async function resolveLock(docker: Docker, input: ResolveInput): Promise<Lock> {
  const files: ContextFile[] = [
    { name: REQUIREMENTS_PATH.slice(1), content: input.fileText },
    ...wheelhouseInSandbox(input.wheelhouse),
  ];
  let report: unknown;
  try {
    report = await withSandboxContainer(
      docker,
      input,
      { container: 'resolution', what: 'resolution', command: resolveCommand(input.policy), files },
      (container) => readReport(container),
    );
  } finally {
    // The container normally goes with withSandboxContainer; this also covers a remove that failed.
    const id = input.labels['io.rgrid.build'];
    if (id !== undefined) await removeBuildLeftovers(docker, { 'io.rgrid.build': id }, input.logger);
  }
  return lockFromPipReport(report);
}

/** The report out of the stopped container (readReportArchive checks what the engine hands over). */
async function readReport(container: Docker.Container): Promise<unknown> {
  let archive: NodeJS.ReadableStream;
  try {
    archive = await container.getArchive({ path: REPORT_PATH });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) throw reportError('was not written');
    throw engineError('reading the resolution report failed', err);
  }
  return readReportArchive(archive);
}

/**
 * The report from the engine's tar of its path: one regular file of at most MAX_REPORT_BYTES, parsed as
 * JSON. The container ran a package's build code as the user pip runs as, so what sits at the path is
 * not trusted to be pip's: a link, a directory or anything oversized is refused, never followed or read.
 */
export async function readReportArchive(archive: NodeJS.ReadableStream): Promise<unknown> {
  try {
    const content = await singleFileOf(archive);
    try {
      return JSON.parse(content.toString('utf8')) as unknown;
    } catch {
      throw reportError('is not JSON');
    }
  } finally {
    (archive as Readable).destroy();
  }
}

function reportError(why: string): RgridError {
  return new RgridError('build_failed', `resolution failed: pip's report ${why}`);
}

/** The content of a tar that holds exactly one regular file of at most MAX_REPORT_BYTES. */
function singleFileOf(archive: NodeJS.ReadableStream): Promise<Buffer> {
  const extract = tar.extract();
  return new Promise<Buffer>((resolve, reject) => {
    let content: Buffer | undefined;
    let failed = false;
    const fail = (error: RgridError): void => {
      if (failed) return;
      failed = true;
      reject(error);
      extract.destroy();
    };
    extract.on('entry', (header, stream, next) => {
      // A refused entry destroys the extract, and with it this stream: that is not a second failure.
      stream.on('error', () => undefined);
      if (content !== undefined) return fail(reportError('is more than one file'));
      if (header.type !== 'file') return fail(reportError(`is not a regular file (${header.type ?? 'unknown'})`));
      if ((header.size ?? 0) > MAX_REPORT_BYTES) return fail(reportError(`is larger than ${MAX_REPORT_BYTES / 1024 / 1024} MiB`));
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (data: unknown) => {
        const chunk = data as Buffer;
        size += chunk.length;
        if (size > MAX_REPORT_BYTES) fail(reportError(`is larger than ${MAX_REPORT_BYTES / 1024 / 1024} MiB`));
        else chunks.push(chunk);
      });
      stream.on('end', () => {
        content = Buffer.concat(chunks);
        next();
      });
    });
    extract.on('finish', () => {
      if (failed) return;
      if (content === undefined) fail(reportError('was not written'));
      else resolve(content);
    });
    extract.on('error', () => fail(reportError('could not be read')));
    archive.on('error', () => fail(reportError('could not be read')));
    archive.pipe(extract);
  });
}

/** POSIX shell single-quoting: an index URL with `&` or `?` must reach pip unchanged. */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
