/**
 * The control plane's answers, checked before the client acts on them: the control plane is trusted to
 * run the grid, not to name files on the user's machine. An execution passes through a worker on its way
 * here (outputs, exit code, error text), and a compromised worker or an older control plane may send what
 * the wire schema forbids. Every field the client uses is checked against the naming contract
 * (common/names.ts) and the wire schema's bounds; an answer that fails is refused as `bad_response`.
 *
 * Hand-written rather than `Value.Check` against the TypeBox schemas: loading TypeBox's value module
 * costs about 200 ms, more than a whole cached `rgrid run`. test/client/answers.test.ts holds these
 * checks to the wire schemas, so the two cannot drift apart.
 */
import { RgridError } from '../common/errors.js';
import { MAX_LOCKED_DISTRIBUTIONS, RESOLUTIONS } from '../common/lock.js';
import { assertOutputPath, isSha256, isUuid, isWorkerId, PINNED_REQUIREMENT_PATTERN, shown } from '../common/names.js';
import type { Execution, ExecutionFailure, ExecutionStatus, ManifestResponse, OutputFile } from '../common/wire/control-api.js';
import type { LogsResponse } from '../common/wire/dispatch-api.js';

const IMAGE_ORIGINS: readonly string[] = ['local', 'pulled', 'built'];
const PINNED_RE = new RegExp(PINNED_REQUIREMENT_PATTERN, 'u');
/** The pins of a lock as the wire bounds them (ResolvedList): `name==version`, at most 200 characters each. */
const isPinList = (v: unknown): boolean =>
  Array.isArray(v) && v.length <= MAX_LOCKED_DISTRIBUTIONS && v.every((p) => typeof p === 'string' && p.length <= 200 && PINNED_RE.test(p));

export const EXECUTION_STATUSES: readonly ExecutionStatus[] = ['queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled'];
export const EXECUTION_FAILURES: readonly ExecutionFailure[] = [
  'nonzero_exit', 'timeout', 'memory_limit', 'output_limit', 'build_failed', 'input_unavailable', 'lost', 'error',
];
/** What a worker may report (the complete call's bound); more is refused before anything is written. */
export const MAX_OUTPUTS = 10_000;

function refuse(reason: string): never {
  throw new RgridError('bad_response', `refused the control plane's answer: ${reason}`);
}

type Fields = Record<string, unknown>;
const isObject = (v: unknown): v is Fields => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const orNull = (check: (v: unknown) => boolean) => (v: unknown): boolean => v === null || check(v);
/** A field newer than some control planes: absent counts as null. */
const absentOr = (check: (v: unknown) => boolean) => (v: unknown): boolean => v === undefined || v === null || check(v);
const isBoolean = (v: unknown): boolean => typeof v === 'boolean';

function must(e: Fields, field: string, check: (v: unknown) => boolean, rule: string): void {
  if (!check(e[field])) refuse(`${field} ${shown(e[field])} is not ${rule}`);
}

/** An execution as submit, status and wait return it; `expectedId`: the one asked for. */
export function checkExecution(value: unknown, expectedId?: string): Execution {
  if (!isObject(value)) refuse('an execution must be a JSON object');
  must(value, 'id', isUuid, 'a UUID');
  if (expectedId !== undefined && value.id !== expectedId) refuse(`asked for execution ${expectedId}, got ${shown(value.id)}`);
  must(value, 'status', (v) => EXECUTION_STATUSES.includes(v as ExecutionStatus), 'an execution status');
  must(value, 'failure', orNull((v) => EXECUTION_FAILURES.includes(v as ExecutionFailure)), 'a failure kind or null');
  must(value, 'exit_code', orNull(Number.isInteger), 'an integer or null');
  must(value, 'worker_id', orNull(isWorkerId), 'a worker id or null');
  must(value, 'error', orNull((v) => typeof v === 'string'), 'text or null');
  must(value, 'attempts', Number.isInteger, 'an integer');
  must(value, 'max_attempts', Number.isInteger, 'an integer');
  must(value, 'downloaded_blobs', orNull(Number.isInteger), 'an integer or null');
  // Absent from control planes older than image sharing.
  must(value, 'image_origin', (v) => v === undefined || v === null || IMAGE_ORIGINS.includes(v as string), 'local, pulled, built or null');
  for (const flag of ['script_cache_hit', 'dependency_cache_hit', 'input_cache_hit']) must(value, flag, orNull(isBoolean), 'true, false or null');
  must(value, 'requirements_sha256', orNull(isSha256), 'a sha256 or null');
  // The lock the run used: absent from control planes older than locks; shown and printed in --json.
  must(value, 'lock_sha256', absentOr(isSha256), 'a sha256 or null');
  must(value, 'resolution', absentOr((v) => (RESOLUTIONS as readonly unknown[]).includes(v)), `one of ${RESOLUTIONS.join(', ')} or null`);
  must(value, 'resolved', absentOr(isPinList), `a list of at most ${MAX_LOCKED_DISTRIBUTIONS} pins name==version, or null`);
  // Only shown (known keys, numbers only: cli/main.ts), so only its shape is checked, like the schema's.
  must(value, 'timings', isObject, 'an object');
  must(value, 'outputs', (v) => Array.isArray(v) && v.length <= MAX_OUTPUTS, `a list of at most ${MAX_OUTPUTS} files`);
  return value as unknown as Execution;
}

/**
 * The outputs to write, all checked before the first is written: names by the naming contract (relative,
 * no `..`, no control characters), digests, sizes, and no name twice or both a file and a directory.
 */
export function checkOutputs(outputs: readonly unknown[]): OutputFile[] {
  const names = new Set<string>();
  for (const out of outputs) {
    if (!isObject(out)) refuse('an output must be a JSON object');
    try {
      assertOutputPath(out.name);
    } catch (err) {
      refuse((err as Error).message);
    }
    must(out, 'sha256', isSha256, 'a sha256');
    must(out, 'size', isCount, 'a byte count');
    const name = out.name as string;
    if (names.has(name)) refuse(`output file name ${shown(name)} is listed twice`);
    names.add(name);
  }
  for (const name of names) {
    // `a` and `a/b` cannot both be written: one of them would have to replace the other.
    for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
      if (names.has(name.slice(0, i))) refuse(`output ${shown(name.slice(0, i))} is both a file and a directory`);
    }
  }
  return outputs as OutputFile[];
}

/** The blobs the control plane asks for: only ones this client offered in the manifest. */
export function checkManifestAnswer(value: unknown, offered: ReadonlySet<string>): ManifestResponse {
  if (!isObject(value) || !Array.isArray(value.missing)) refuse('a manifest answer must list the missing blobs');
  for (const sha of value.missing) {
    if (!isSha256(sha)) refuse(`missing blob ${shown(sha)} is not a sha256`);
    if (!offered.has(sha)) refuse(`asked for blob ${sha}, which this run did not offer`);
  }
  return value as unknown as ManifestResponse;
}

/** An execution's logs: text, passed on as the script wrote it (see docs/client.md). */
export function checkLogs(value: unknown, executionId: string): LogsResponse {
  if (!isObject(value)) refuse('logs must be a JSON object');
  if (value.execution_id !== executionId) refuse(`asked for the logs of ${executionId}, got those of ${shown(value.execution_id)}`);
  must(value, 'stdout', (v) => typeof v === 'string', 'text');
  must(value, 'stderr', (v) => typeof v === 'string', 'text');
  must(value, 'truncated', isBoolean, 'true or false');
  return value as unknown as LogsResponse;
}
