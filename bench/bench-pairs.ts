import { execFile } from 'node:child_process';
import { runCli } from '../tools/harness/processes.js';
import { percentile } from './stats.js';

/** What the fast-path and heavy-row benches share: a subject against its reference, and how both are timed. */

export const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** A whole command, from spawn to exit, in ms; `expect` (when given) must be in its stdout. */
export function timedExec(file: string, args: string[], expect?: string): Promise<number> {
  const started = performance.now();
  return new Promise((res, rej) => {
    execFile(file, args, { maxBuffer: 16 * 1024 * 1024 }, (err, out, stderr) => {
      if (err) rej(new Error(`${file} ${args[0] ?? ''}: ${stderr}`));
      else if (expect !== undefined && !out.includes(expect)) rej(new Error(`${file} ${args[0] ?? ''} printed ${JSON.stringify(out.slice(0, 200))}, not ${JSON.stringify(expect)}`));
      else res(performance.now() - started);
    });
  });
}

export async function agentCli(args: string[], socket: string): Promise<{ ms: number; stdout: string }> {
  const r = await runCli('rgrid-agent', args, { env: { RGRID_AGENT_SOCKET: socket } });
  if (r.code !== 0) throw new Error(`rgrid-agent ${args.join(' ')} exited ${String(r.code)}: ${r.stderr}`);
  return { ms: r.wallMs, stdout: r.stdout };
}

/**
 * `docker run` of an image with the settings of the agent's run containers (network none, 1 CPU,
 * 1 GiB without swap, 256 PIDs, no capabilities, uid 65534, read-only root): the image's own CMD runs
 * the script, as in the agent's run.
 */
export function bareDockerRunArgs(imageId: string): string[] {
  return [
    'run', '--rm', '--network', 'none', '--cpus', '1', '--memory', '1024m', '--memory-swap', '1024m', '--pids-limit', '256',
    '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--user', '65534:65534', '--read-only', imageId,
  ];
}

/** A row: the subject's percentile against the reference's, with every sample kept. */
export interface Pair { id?: string; name: string; subject_ms: number; reference: string; reference_ms: number; ratio: number; delta_ms: number; subject_samples_ms: number[]; reference_samples_ms: number[] }
export function pair(name: string, reference: string, subject: number[], ref: number[], p = 50): Pair {
  const s = percentile(subject, p);
  const r = percentile(ref, p);
  return { name, subject_ms: round(s, 2), reference, reference_ms: round(r, 2), ratio: round(s / r, 2), delta_ms: round(s - r, 2), subject_samples_ms: subject.map((x) => round(x, 2)), reference_samples_ms: ref.map((x) => round(x, 2)) };
}

/** The p50 of each numeric phase, and how many runs took a hot container / read the outputs archive. */
export function phaseMedians(samples: ReadonlyArray<Record<string, unknown>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of Object.keys(samples[0] ?? {})) {
    const values = samples.map((s) => s[key]);
    if (values.every((v) => typeof v === 'number')) out[key] = round(percentile(values, 50), 1);
    else if (values.every((v) => typeof v === 'boolean')) out[`${key}_count`] = values.filter(Boolean).length;
  }
  return out;
}
