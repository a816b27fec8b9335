/**
 * The naming contract: the one definition of every name, id and file name that crosses a process
 * boundary (client → control plane → agent → container and back). Each definition exists twice in one
 * place: as a pattern string, which the wire schemas (common/wire/) embed so that Fastify, TypeBox and
 * the OpenAPI document all check the same thing, and as an assertion function, which the sides call on
 * values that do not pass through a schema (config files, CLI arguments, container output, answers
 * from another process). Patterns are compiled with the `u` flag everywhere (ajv and TypeBox both do).
 */
import { RgridError } from './errors.js';

/** Accounts: what tokens, entries, blobs and executions belong to. `org:team` and `user@org` are allowed. */
export const ACCOUNT_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$';
/** Worker ids: defaults to the host name, so dots and up to 128 characters. */
export const WORKER_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';
/** Runtime names (`python3.11`): keys of the agent's runtimes map. */
export const RUNTIME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
/** Execution, claim and token ids: lower-case canonical UUIDs, as PostgreSQL prints them. */
export const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
/** Every rgrid digest: SHA-256, lower-case hex. */
export const SHA256_PATTERN = '^[0-9a-f]{64}$';
/** The longest id any route carries in its path; the HTTP router's parameter limit is set from it. */
export const LONGEST_PATH_ID = 128;

/**
 * Characters no name may contain: C0 and C1 controls and DEL (terminal escapes, NUL), the bidirectional
 * overrides and isolates (a name that reads differently from what it is), and lone UTF-16 surrogates
 * (not representable in UTF-8, so the file system and PostgreSQL would each store something else).
 */
const FORBIDDEN_CHARS = '\\u0000-\\u001f\\u007f-\\u009f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ud800-\\udfff';
/** One path segment: not `.` or `..`, no separator of either kind, no forbidden character. */
const SEGMENT = `(?!\\.\\.?(?:/|$))[^/\\\\${FORBIDDEN_CHARS}]{1,255}`;
/** An input file: one segment, as it appears under /work/inputs. */
export const INPUT_FILE_NAME_PATTERN = `^${SEGMENT}$`;
/** An output file: a relative path of segments under /work/outputs (subdirectories are kept). */
export const OUTPUT_FILE_PATH_PATTERN = `^${SEGMENT}(?:/${SEGMENT}){0,31}$`;
export const FILE_NAME_MAX_BYTES = 255;
export const FILE_PATH_MAX_BYTES = 1024;
/** Text that PostgreSQL can store and a terminal can show safely enough: no NUL, no lone surrogate. */
export const STORABLE_TEXT_PATTERN = '^[^\\u0000\\ud800-\\udfff]*$';

const compiled = (pattern: string): RegExp => new RegExp(pattern, 'u');
const ACCOUNT_RE = compiled(ACCOUNT_PATTERN);
const WORKER_ID_RE = compiled(WORKER_ID_PATTERN);
const RUNTIME_RE = compiled(RUNTIME_PATTERN);
const UUID_RE = compiled(UUID_PATTERN);
const SHA256_RE = compiled(SHA256_PATTERN);
const SEGMENT_RE = compiled(INPUT_FILE_NAME_PATTERN);
const FORBIDDEN_RE = compiled(`[${FORBIDDEN_CHARS}]`);
const STORABLE_RE = compiled(STORABLE_TEXT_PATTERN);
// JSON.stringify already escapes C0 controls and lone surrogates; these are the rest a terminal would act on.
const UNSAFE_FOR_DISPLAY = new RegExp(`[${FORBIDDEN_CHARS}\\u2028\\u2029]`, 'gu');

/**
 * A value for an error message or a log line: quoted, cut, with every control, bidi or surrogate
 * character escaped, so a hostile name can neither move a terminal's cursor nor hide its own tail.
 */
export function shown(value: unknown, max = 80): string {
  if (typeof value !== 'string') return value === null ? 'null' : typeof value;
  const cut = value.length > max ? `${value.slice(0, max)}…` : value;
  return displaySafe(JSON.stringify(cut));
}

/**
 * Longer text from another process (an error message, a JSON document) for a terminal, unquoted: the
 * characters `shown()` escapes are written as `\uXXXX`, newlines included, so it stays one line.
 */
export function displaySafe(text: string): string {
  return text.replace(UNSAFE_FOR_DISPLAY, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function check(re: RegExp, value: unknown, field: string, rule: string): string {
  if (typeof value === 'string' && re.test(value)) return value;
  throw new RgridError('bad_request', `${field} ${shown(value)} is not valid: ${rule}`);
}

export const isAccount = (value: unknown): value is string => typeof value === 'string' && ACCOUNT_RE.test(value);
export const isWorkerId = (value: unknown): value is string => typeof value === 'string' && WORKER_ID_RE.test(value);
export const isRuntimeName = (value: unknown): value is string => typeof value === 'string' && RUNTIME_RE.test(value);
export const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID_RE.test(value);
export const isSha256 = (value: unknown): value is string => typeof value === 'string' && SHA256_RE.test(value);

export function assertAccount(value: unknown, field = 'account'): string {
  return check(ACCOUNT_RE, value, field, '1-64 of A-Z a-z 0-9 . _ @ : -, starting with a letter or digit');
}

export function assertWorkerId(value: unknown, field = 'worker id'): string {
  return check(WORKER_ID_RE, value, field, '1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit');
}

export function assertRuntimeName(value: unknown, field = 'runtime'): string {
  return check(RUNTIME_RE, value, field, '1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit');
}

export function assertUuid(value: unknown, field = 'id'): string {
  return check(UUID_RE, value, field, 'a lower-case UUID');
}

/** Why `name` is not a safe file-name segment, or undefined when it is. */
function segmentProblem(name: string): string | undefined {
  if (name.length === 0) return 'has an empty path segment';
  if (name === '.' || name === '..') return 'must not contain . or .. segments';
  if (name.includes('\\')) return 'must not contain a backslash';
  if (FORBIDDEN_RE.test(name)) return 'must not contain control, bidirectional-override or unpaired surrogate characters';
  if (Buffer.byteLength(name, 'utf8') > FILE_NAME_MAX_BYTES) return `has a segment over ${FILE_NAME_MAX_BYTES} bytes`;
  return SEGMENT_RE.test(name) ? undefined : 'is not a valid file name';
}

/** Why `name` is not a safe file name (one segment, or a relative path when `path` is set). */
export function fileNameProblem(name: unknown, path: boolean): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'must be a non-empty string';
  if (name.startsWith('/')) return 'must be relative';
  const segments = path ? name.split('/') : [name];
  if (!path && name.includes('/')) return 'must not contain a path separator';
  if (segments.length > 32) return 'is nested more than 32 directories deep';
  if (Buffer.byteLength(name, 'utf8') > FILE_PATH_MAX_BYTES) return `must be at most ${FILE_PATH_MAX_BYTES} bytes`;
  for (const segment of segments) {
    const problem = segmentProblem(segment);
    if (problem) return problem;
  }
  return undefined;
}

/** An input file name as it appears under /work/inputs: exactly one safe segment. */
export function assertInputFileName(name: unknown): string {
  const problem = fileNameProblem(name, false);
  if (problem) throw new RgridError('bad_file_name', `input file name ${shown(name)} ${problem}`);
  return name as string;
}

/** An output file's path under /work/outputs (or the client's --output-dir): safe relative segments. */
export function assertOutputPath(name: unknown): string {
  const problem = fileNameProblem(name, true);
  if (problem) throw new RgridError('bad_file_name', `output file name ${shown(name)} ${problem}`);
  return name as string;
}

export const isStorableText = (value: string): boolean => STORABLE_RE.test(value);

/** Refuses text that PostgreSQL cannot store as `text` (NUL) or that is not valid Unicode. */
export function assertStorableText(value: string, field: string): string {
  if (!isStorableText(value)) throw new RgridError('bad_request', `${field} must not contain NUL or unpaired surrogate characters`);
  return value;
}

/**
 * Logs are a record of what a script printed, never refused: NUL becomes U+FFFD (PostgreSQL cannot store
 * it) and unpaired surrogates become U+FFFD too, as UTF-8 encoding would make them anyway.
 */
export function storableLog(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8').replaceAll('\u0000', '\uFFFD');
}

// ---- Python distributions ------------------------------------------------------------------------

/** A project name after PEP 503 normalization (lower case, `-` for runs of `-_.`): what a lock names. */
export const PROJECT_NAME_PATTERN = '^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$';
/** A version as pip reports it (PEP 440 characters; local versions after `+`). */
export const DIST_VERSION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$';
/** One pin of a lock as it crosses a boundary (`resolved` lists): `name==version`. */
export const PINNED_REQUIREMENT_PATTERN = `^${PROJECT_NAME_PATTERN.slice(1, -1)}==${DIST_VERSION_PATTERN.slice(1, -1)}$`;
const PROJECT_NAME_RE = compiled(PROJECT_NAME_PATTERN);
const DIST_VERSION_RE = compiled(DIST_VERSION_PATTERN);

export function assertProjectName(value: unknown, field = 'project name'): string {
  return check(PROJECT_NAME_RE, value, field, 'a normalized project name (lower case, digits and -)');
}

export function assertDistVersion(value: unknown, field = 'version'): string {
  return check(DIST_VERSION_RE, value, field, 'a version of letters, digits and . + ! _ -');
}

// ---- registry names ------------------------------------------------------------------------------

/** An OCI manifest or config digest as registries and engines print it. */
export const OCI_DIGEST_PATTERN = '^sha256:[0-9a-f]{64}$';
const OCI_PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const HOST_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
/** `HOST:PORT[/PREFIX]`: where the agents push and pull, and the repository prefix under it. */
export const REGISTRY_ADDRESS_PATTERN = `^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}(?:/${OCI_PATH_COMPONENT}){0,8}$`;
const OCI_DIGEST_RE = compiled(OCI_DIGEST_PATTERN);
const REGISTRY_ADDRESS_RE = compiled(REGISTRY_ADDRESS_PATTERN);

export const isOciDigest = (value: unknown): value is string => typeof value === 'string' && OCI_DIGEST_RE.test(value);

export function assertOciDigest(value: unknown, field = 'digest'): string {
  return check(OCI_DIGEST_RE, value, field, 'sha256:<64 lower-case hex>');
}

export function assertRegistryAddress(value: unknown, field = 'registry'): string {
  const address = check(REGISTRY_ADDRESS_RE, value, field, 'HOST:PORT or HOST:PORT/PREFIX (lower-case path components)');
  const port = Number(/:([0-9]{1,5})(?:\/|$)/u.exec(address)?.[1]);
  if (!(port >= 1 && port <= 65_535)) throw new RgridError('bad_request', `${field} ${shown(address)} has no valid port`);
  return address;
}
