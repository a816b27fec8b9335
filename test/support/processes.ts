/**
 * Real processes for tests: `rgrid-control serve` and `rgrid-agent serve` from dist/, awaited on their
 * health endpoints (never on log text), tokens through files, always stopped; `runCli` for the three
 * CLIs; cleanup of an account's containers, volumes and images by label. The implementation lives in
 * tools/harness/processes.ts, where the demo and the benchmarks use it too.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export * from '../../tools/harness/processes.js';

/** Every process's command line, from `ps -eo args` and from /proc: where a leaked token would show. */
export function allCommandLines(): string {
  let all = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      all += `\n${readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\u0000', ' ')}`;
    } catch {
      // gone meanwhile
    }
  }
  return all;
}
