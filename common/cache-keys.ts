import { assertSha256Hex, compositeKey, sha256Hex } from './digest.js';
import { assertInputFileName } from './names.js';
import { RgridError } from './errors.js';
import { canonicalizeRequirements, type CanonicalRequirements } from './requirements.js';

/**
 * The cache keys (docs/architecture.md), defined once and imported by the agent, the control plane and the
 * client. Changing any definition here changes every key in the fleet: bump the version tag with it.
 */
export const DEPS_KEY_VERSION = 'rgrid.deps.v1';
/** The dependency key of a lock (common/lock.ts): built on the exact resolved set, not on the text. */
export const LOCKED_DEPS_KEY_VERSION = 'rgrid.deps.v2';
export const IMAGE_KEY_VERSION = 'rgrid.image.v1';
export const PIP_SETTINGS_VERSION = 'rgrid.pip.v1';
export const INPUT_MANIFEST_VERSION = 'rgrid.inputs.v1';
/** Bumped whenever the generated Dockerfiles change, so old images are not mistaken for new ones. */
export const RECIPE_VERSION = '1';

/** sha256 of the script's bytes exactly as submitted: no newline or encoding rewriting. */
export function scriptSha256(script: string | Uint8Array): string {
  return sha256Hex(script);
}

export interface RequirementsDigest extends CanonicalRequirements {
  sha256: string;
}

export function requirementsDigest(requirements: string | Uint8Array): RequirementsDigest {
  const canonical = canonicalizeRequirements(requirements);
  return { ...canonical, sha256: sha256Hex(canonical.text) };
}

/**
 * Fingerprint of everything that changes how pip resolves the same requirements: options written in the
 * file plus the worker's own pip settings (index URL, find-links). Order-independent.
 */
export function pipSettingsFingerprint(fileOptions: readonly string[], workerOptions: readonly string[]): string {
  const all = [...new Set([...fileOptions, ...workerOptions])].sort();
  return compositeKey(PIP_SETTINGS_VERSION, all);
}

export interface DepsKeyInput {
  baseImageId: string;
  requirementsSha256: string;
  pipFingerprint: string;
  /**
   * The lock's digest: the key is then built on the resolved set (rgrid.deps.v2). Null or absent: on
   * the requirements text (rgrid.deps.v1), which only `resolve_ttl: never` still uses.
   */
  lockSha256?: string | null;
}

export function depsKey(input: DepsKeyInput): string {
  assertSha256Hex(input.requirementsSha256, 'requirements_sha256');
  assertSha256Hex(input.pipFingerprint, 'pip settings fingerprint');
  if (!input.baseImageId) throw new RgridError('bad_request', 'base image ID is required for deps_key');
  if (input.lockSha256 !== undefined && input.lockSha256 !== null) {
    assertSha256Hex(input.lockSha256, 'lock_sha256');
    return compositeKey(LOCKED_DEPS_KEY_VERSION, [input.baseImageId, input.lockSha256, input.pipFingerprint]);
  }
  return compositeKey(DEPS_KEY_VERSION, [input.baseImageId, input.requirementsSha256, input.pipFingerprint]);
}

export interface ImageKeyInput {
  /** deps_key when the script has requirements; otherwise null and the base image ID stands in. */
  depsKey: string | null;
  baseImageId: string;
  scriptSha256: string;
}

export function imageKey(input: ImageKeyInput): string {
  assertSha256Hex(input.scriptSha256, 'script_sha256');
  if (input.depsKey !== null) assertSha256Hex(input.depsKey, 'deps_key');
  // The tag tells "deps" from "base" so a deps_key can never collide with a base image ID string.
  const foundation = input.depsKey !== null ? `deps:${input.depsKey}` : `base:${input.baseImageId}`;
  return compositeKey(IMAGE_KEY_VERSION, [foundation, input.scriptSha256, RECIPE_VERSION]);
}

export interface ManifestFile {
  name: string;
  sha256: string;
  size: number;
}

/** Validates names and digests, rejects duplicates, and returns the files sorted by name (byte order). */
export function canonicalManifest(files: readonly ManifestFile[]): ManifestFile[] {
  const seen = new Set<string>();
  for (const file of files) {
    assertInputFileName(file.name);
    assertSha256Hex(file.sha256, `sha256 of ${file.name}`);
    if (!Number.isSafeInteger(file.size) || file.size < 0) {
      throw new RgridError('bad_request', `size of ${file.name} must be a non-negative integer`);
    }
    if (seen.has(file.name)) throw new RgridError('bad_request', `input file name ${file.name} appears twice`);
    seen.add(file.name);
  }
  return [...files]
    .map(({ name, sha256, size }) => ({ name, sha256, size }))
    .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
}

/** input_sha256: names are part of the key, so swapping the contents of two files changes it. */
export function inputSha256(files: readonly ManifestFile[]): string {
  const fields = canonicalManifest(files).flatMap((f) => [f.name, f.sha256, String(f.size)]);
  return compositeKey(INPUT_MANIFEST_VERSION, fields);
}
