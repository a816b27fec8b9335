/**
 * What `rgrid run` and `rgrid status` print about an execution for a person (stderr, or stdout for
 * status): kept apart from the program so the wording is tested without starting a CLI. Text that came
 * from the control plane goes through displaySafe; the lock fields were checked by client/answers.ts.
 */
import { displaySafe } from '../common/names.js';
import type { Execution } from '../common/wire/control-api.js';
import type { RunSummary } from './run.js';

export const yesNo = (v: boolean | null): string => (v === null ? 'n/a' : v ? 'hit' : 'miss');

/**
 * The dependency cache flag, and with requirements how the lock was obtained: `dependencies hit
 * (resolution cached, 12 pinned, lock 3f2a9c1b7d4e)`. A control plane or worker older than locks reports
 * none: `resolution n/a`.
 */
export function dependenciesText(e: Pick<Execution, 'dependency_cache_hit' | 'requirements_sha256'> & Partial<Pick<Execution, 'lock_sha256' | 'resolved' | 'resolution'>>): string {
  const flag = `dependencies ${yesNo(e.dependency_cache_hit)}`;
  if (e.requirements_sha256 === null) return flag;
  const resolution = e.resolution ?? null;
  if (resolution === null) return `${flag} (resolution n/a)`;
  const pins = e.resolved ? `, ${e.resolved.length} pinned` : '';
  const lock = e.lock_sha256 ? `, lock ${e.lock_sha256.slice(0, 12)}` : '';
  return `${flag} (resolution ${resolution}${pins}${lock})`;
}

/** The summary after the script's output: state, cache flags and lock, blobs, phase timings. */
export function summaryLine(s: RunSummary, e: Execution): string {
  const state = e.failure ? `${e.status} (${e.failure}${e.error ? `: ${displaySafe(e.error.slice(0, 500))}` : ''})` : e.status;
  const t = s.timings;
  const phases = ['queue_ms', 'build_ms', 'input_fetch_ms', 'run_ms', 'output_upload_ms', 'client_total_ms']
    .filter((k) => typeof t[k] === 'number' && Number.isFinite(t[k]))
    .map((k) => `${k.replace(/_ms$/, '')} ${Math.round(t[k]!)} ms`)
    .join(', ');
  return [
    `rgrid: ${s.execution_id} ${state}, exit ${s.exit_code ?? '-'} on ${s.worker_id ?? '-'} (attempt ${e.attempts})`,
    `rgrid: script ${yesNo(s.script_cache_hit)}, ${dependenciesText(e)}, inputs ${yesNo(s.input_cache_hit)}; uploaded ${s.uploaded_blobs} blob(s), worker downloaded ${s.downloaded_blobs ?? '-'}`,
    `rgrid: ${phases}`,
  ].join('\n');
}
