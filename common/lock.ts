import { compositeKey, sha256Hex } from './digest.js';
import { RgridError } from './errors.js';
import { assertDistVersion, assertProjectName, shown } from './names.js';
import { canonicalizeRequirements, normalizeProjectName, type CanonicalRequirements } from './requirements.js';

/**
 * Locks (docs/keys.md): the exact set of distributions a dependency layer installs, one pinned and hashed
 * line each. A requirements file that is not fully pinned is resolved first (pip's dry run with a report,
 * agent/builder/resolver.ts); the dependency key is then built on the lock, not on the text the user
 * wrote, so two workers that resolved on different days never share a key for different versions.
 *
 * The lock's text is canonical requirements text (common/requirements.ts), so a lock written back as a
 * requirements file reads as itself: `lock_sha256` of a fully locked file is its own requirements_sha256.
 */
export const RESOLUTION_KEY_VERSION = 'rgrid.resolution.v1';

/**
 * How a run's lock was obtained: `locked` the file is its own lock (no resolution); `resolved` pip
 * resolved it for this request; `cached` a resolution from within the freshness window (or being
 * refreshed in the background); `stale` the last refresh failed, so the last good lock was used.
 */
export const RESOLUTIONS = ['locked', 'cached', 'resolved', 'stale'] as const;
export type Resolution = (typeof RESOLUTIONS)[number];

/** Where a resolved distribution came from: the artifact pip chose (for pylock.toml). */
export interface LockedArtifact {
  /** The artifact's file name (`pkg-1.0-py3-none-any.whl`, `pkg-1.0.tar.gz`). */
  filename: string;
  /** As pip reported it (a wheelhouse file is a file:// URL inside the resolver's container). */
  url: string;
}

export interface LockedDistribution {
  name: string;
  version: string;
  /** `sha256:<hex>` (also sha384/sha512 when a locked file names those), sorted. */
  hashes: string[];
  /** Null for a file that was its own lock (its artifacts are not known before the install). */
  artifact: LockedArtifact | null;
}

export interface Lock {
  /** Canonical lines `name==version --hash=sha256:…`, sorted, joined with "\n": what the build installs. */
  text: string;
  /** sha256 of `text`. */
  sha256: string;
  /** `name==version` of every distribution, sorted by name. */
  resolved: string[];
  distributions: LockedDistribution[];
  /**
   * True when the user's file was its own lock. pip's hash-checking mode then verifies the set is
   * complete (a missing dependency fails the build); a resolved lock is complete by construction and is
   * installed with --no-deps.
   */
  fromFile: boolean;
}

/** The resolution cache's key: per (requirements, pip settings, base image); the agent adds the account. */
export function resolutionKey(input: { baseImageId: string; requirementsSha256: string; pipFingerprint: string }): string {
  return compositeKey(RESOLUTION_KEY_VERSION, [input.baseImageId, input.requirementsSha256, input.pipFingerprint]);
}

// A canonical requirement line that pins exactly one version: name, optional extras, == or ===, a
// version without wildcards, an optional marker; then its hashes.
const PINNED_HEAD = /^([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(\[[^\]]*\])?(?:===?)([A-Za-z0-9][A-Za-z0-9.+!_-]*)(;.*)?$/;
const HASH_OPTION = /^--hash=(sha256|sha384|sha512):([0-9a-f]+)$/;

/**
 * The lock of a fully locked file, or null when the file needs resolving. Fully locked: at least one
 * requirement, and every one an exact pin (`name==version`) carrying at least one `--hash` — what
 * `pip-compile --generate-hashes` and `uv pip compile --generate-hashes` write.
 */
export function lockOfLockedFile(canonical: CanonicalRequirements & { sha256: string }): Lock | null {
  if (canonical.lines.length === 0) return null;
  const distributions: LockedDistribution[] = [];
  for (const line of canonical.lines) {
    const [head, ...options] = line.split(' ');
    const pin = PINNED_HEAD.exec(head ?? '');
    if (!pin || options.length === 0) return null;
    const hashes: string[] = [];
    for (const option of options) {
      const hash = HASH_OPTION.exec(option);
      if (!hash) return null;
      hashes.push(`${hash[1]}:${hash[2]}`);
    }
    distributions.push({ name: pin[1]!, version: pin[3]!, hashes: hashes.sort(), artifact: null });
  }
  return { text: canonical.text, sha256: canonical.sha256, resolved: resolvedList(distributions), distributions, fromFile: true };
}

/** The most a report may hold: a resolution of thousands of distributions is a mistake, not a lock. */
export const MAX_LOCKED_DISTRIBUTIONS = 2000;
const MAX_URL_LENGTH = 2048;

/**
 * The lock of a pip installation report (`pip install --dry-run --report`, format version 1). The
 * report is a container's output: every field is checked here before it reaches a key, a file or a log.
 * A distribution that cannot be pinned by hash (a VCS checkout, a local directory, an artifact without a
 * sha256) fails the resolution: a half-locked set is never keyed.
 */
export function lockFromPipReport(report: unknown): Lock {
  const fail = (why: string): never => {
    throw new RgridError('build_failed', `resolution failed: pip's report ${why}`);
  };
  if (!isRecord(report)) return fail('is not a JSON object');
  if (report.version !== '1') return fail(`has format version ${shown(report.version)}, not "1"`);
  const install = report.install;
  if (!Array.isArray(install)) return fail('has no install list');
  if (install.length === 0) return fail('installs nothing');
  if (install.length > MAX_LOCKED_DISTRIBUTIONS) return fail(`installs ${install.length} distributions (at most ${MAX_LOCKED_DISTRIBUTIONS})`);
  const seen = new Set<string>();
  const lines: string[] = [];
  const distributions: LockedDistribution[] = [];
  for (const item of install) {
    if (!isRecord(item) || !isRecord(item.metadata) || !isRecord(item.download_info)) return fail('has an entry without metadata or download_info');
    const metadata = item.metadata;
    const rawName = metadata.name;
    if (typeof rawName !== 'string') return fail('has an entry without a name');
    const name = asReported(() => assertProjectName(normalizeProjectName(rawName), 'resolved project name'));
    const version = asReported(() => assertDistVersion(metadata.version, `version of ${name}`));
    if (seen.has(name)) return fail(`names ${name} twice`);
    seen.add(name);
    const info = item.download_info;
    const url = info.url;
    if (typeof url !== 'string' || url.length === 0 || url.length > MAX_URL_LENGTH || !/^[\x21-\x7e]+$/.test(url)) return fail(`has an unusable URL for ${name}`);
    if (isRecord(info.vcs_info)) return fail(`resolves ${name} to a VCS checkout, which cannot be locked by hash`);
    if (isRecord(info.dir_info)) return fail(`resolves ${name} to a local directory, which cannot be locked by hash`);
    if (!isRecord(info.archive_info)) return fail(`has no archive for ${name}`);
    const hashes = archiveHashes(info.archive_info);
    if (!hashes.some((h) => h.startsWith('sha256:'))) return fail(`gives no sha256 for ${name} (${shown(url, 120)}); a lock needs one`);
    const isDirect = item.is_direct === true;
    const hashOptions = hashes.map((h) => `--hash=${h}`).join(' ');
    // A direct reference stays one (with its hash); anything from an index is pinned by name and version.
    lines.push(isDirect ? `${name} @ ${url} ${hashOptions}` : `${name}==${version} ${hashOptions}`);
    distributions.push({ name, version, hashes, artifact: { filename: artifactFilename(url), url } });
  }
  // Through the one canonical form, so a lock written back as a requirements file has the same digest.
  const canonical = canonicalizeRequirements(lines.join('\n'));
  if (canonical.lines.length !== distributions.length) return fail('did not read back as one line per distribution');
  distributions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { text: canonical.text, sha256: sha256Hex(canonical.text), resolved: resolvedList(distributions), distributions, fromFile: false };
}

/** A naming-contract refusal inside a report is the resolution's failure (the report is pip's), not the caller's. */
function asReported<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    throw new RgridError('build_failed', `resolution failed: pip's report has a ${(err as Error).message}`);
  }
}

function archiveHashes(archive: Record<string, unknown>): string[] {
  const out = new Set<string>();
  const add = (algorithm: string, hex: unknown): void => {
    if (!['sha256', 'sha384', 'sha512'].includes(algorithm)) return;
    const length = { sha256: 64, sha384: 96, sha512: 128 }[algorithm as 'sha256'];
    if (typeof hex === 'string' && new RegExp(`^[0-9a-f]{${length}}$`).test(hex)) out.add(`${algorithm}:${hex}`);
  };
  if (isRecord(archive.hashes)) for (const [algorithm, hex] of Object.entries(archive.hashes)) add(algorithm, hex);
  if (typeof archive.hash === 'string') {
    const [algorithm, hex] = archive.hash.split('=', 2);
    add(algorithm ?? '', hex);
  }
  return [...out].sort();
}

function artifactFilename(url: string): string {
  const path = url.split('#', 1)[0]!.split('?', 1)[0]!;
  let last = path.slice(path.lastIndexOf('/') + 1);
  try {
    last = decodeURIComponent(last);
  } catch {
    // A malformed escape stays as written.
  }
  return last;
}

function resolvedList(distributions: readonly LockedDistribution[]): string[] {
  return distributions.map((d) => `${d.name}==${d.version}`).sort();
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A TOML basic string. */
function tomlString(text: string): string {
  return JSON.stringify(text).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface PylockOptions {
  /** Maps an artifact URL as pip saw it to what the user can fetch it by (a wheelhouse path on the host). */
  artifactLocation?: (artifact: LockedArtifact) => { url: string } | { path: string };
  /** `python_version` etc. of the environment the lock was made for, written as a comment. */
  environment?: string;
}

/**
 * The lock as a PEP 751 `pylock.toml`, so the user can reproduce the environment elsewhere
 * with any installer that reads PEP 751 lock files.
 */
export function pylockToml(lock: Lock, options: PylockOptions = {}): string {
  const out = ['lock-version = "1.0"', 'created-by = "rgrid"'];
  if (options.environment) out.push(`# resolved for ${options.environment.replace(/[\r\n]/g, ' ')}`);
  out.push(`# lock_sha256 ${lock.sha256}`);
  for (const d of lock.distributions) {
    out.push('', '[[packages]]', `name = ${tomlString(d.name)}`, `version = ${tomlString(d.version)}`);
    const hashes = `{ ${d.hashes.map((h) => `${h.split(':')[0]} = ${tomlString(h.split(':')[1]!)}`).join(', ')} }`;
    if (!d.artifact) {
      // A file that was its own lock: the hashes are known, the artifact's name and location are not.
      out.push(`# hashes from the requirements file: ${hashes}`);
      continue;
    }
    const located = options.artifactLocation?.(d.artifact) ?? { url: d.artifact.url };
    const where = 'path' in located ? `path = ${tomlString(located.path)}` : `url = ${tomlString(located.url.split('#', 1)[0]!)}`;
    const source = `{ name = ${tomlString(d.artifact.filename)}, ${where}, hashes = ${hashes} }`;
    out.push(d.artifact.filename.endsWith('.whl') ? `wheels = [${source}]` : `sdist = ${source}`);
  }
  return `${out.join('\n')}\n`;
}
