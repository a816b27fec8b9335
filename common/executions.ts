/**
 * What every side agrees on about an execution's end: which statuses are final, and the exit status a CLI
 * gives for a result. `rgrid run` and `rgrid-agent run` behave like `docker run` and timeout(1): the
 * script's own status when it ran to its end, 124 for a timeout, 137 for a memory kill, and 1 when the
 * platform could not give it a fair run (build failed, inputs unavailable, outputs over the limit, lost).
 */
import type { ExecutionFailure, ExecutionStatus } from './wire/control-api.js';

export const TERMINAL_STATUSES: readonly ExecutionStatus[] = ['succeeded', 'failed', 'cancelled'];

export function isTerminal(status: string): boolean {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** Exit statuses of the three CLIs. */
export const EXIT = {
  ok: 0,
  /** The request failed, or the run failed for a reason that is not the script's own exit. */
  failure: 1,
  /** A usage error: a flag, argument or value that was refused before anything was sent. */
  usage: 2,
  timeout: 124,
  memoryLimit: 137,
} as const;

/** Failures after which the exit code, if any, is not the script's verdict. */
const PLATFORM_FAILURES: ReadonlySet<ExecutionFailure> = new Set(['build_failed', 'lost', 'error', 'input_unavailable', 'output_limit']);

export function exitStatusOf(e: { exit_code: number | null; failure: ExecutionFailure | null }): number {
  if (e.failure === 'timeout') return EXIT.timeout;
  if (e.failure === 'memory_limit') return EXIT.memoryLimit;
  if (e.failure !== null && PLATFORM_FAILURES.has(e.failure)) return EXIT.failure;
  if (e.exit_code !== null) return Math.min(Math.max(e.exit_code, 0), 255);
  return e.failure === null ? EXIT.ok : EXIT.failure;
}
