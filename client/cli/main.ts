#!/usr/bin/env node
/**
 * `rgrid`: run a script on the grid (`run`), look at an execution (`status`, `logs`). The only module of
 * the client that reads the environment (RGRID_CONTROL_URL, RGRID_TOKEN, RGRID_RUNTIME) and exits.
 */
import { Command } from 'commander';
import { isRgridError, RgridError } from '../../common/errors.js';
import type { Execution } from '../../common/wire/control-api.js';
import { ControlApi } from '../api.js';
import { exitStatus, runRemote, type RunSummary } from '../run.js';

interface Conn {
  control?: string;
  token?: string;
}

function connect(flags: Conn): ControlApi {
  const url = flags.control ?? process.env.RGRID_CONTROL_URL;
  const token = flags.token ?? process.env.RGRID_TOKEN;
  if (!url) throw new RgridError('bad_request', 'no control plane: pass --control URL or set RGRID_CONTROL_URL');
  if (!token) throw new RgridError('bad_request', 'no token: pass --token TOKEN or set RGRID_TOKEN');
  return new ControlApi(url, token);
}

const yesNo = (v: boolean | null): string => (v === null ? 'n/a' : v ? 'hit' : 'miss');

function summaryLine(s: RunSummary, e: Execution): string {
  const state = e.failure ? `${e.status} (${e.failure}${e.error ? `: ${e.error}` : ''})` : e.status;
  const t = s.timings;
  const phases = ['queue_ms', 'build_ms', 'input_fetch_ms', 'run_ms', 'output_upload_ms', 'client_total_ms']
    .filter((k) => t[k] !== undefined)
    .map((k) => `${k.replace(/_ms$/, '')} ${Math.round(t[k]!)} ms`)
    .join(', ');
  return [
    `rgrid: ${s.execution_id} ${state}, exit ${s.exit_code ?? '-'} on ${s.worker_id ?? '-'} (attempt ${e.attempts})`,
    `rgrid: script ${yesNo(s.script_cache_hit)}, dependencies ${yesNo(s.dependency_cache_hit)}, inputs ${yesNo(s.input_cache_hit)}; uploaded ${s.uploaded_blobs} blob(s), worker downloaded ${s.downloaded_blobs ?? '-'}`,
    `rgrid: ${phases}`,
  ].join('\n');
}

function fail(err: unknown): never {
  const msg = isRgridError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
  process.stderr.write(`rgrid: ${msg}\n`);
  process.exit(isRgridError(err) && err.code === 'bad_request' ? 2 : 1);
}

const program = new Command('rgrid').description('run Python scripts on the rgrid grid').showHelpAfterError();
const withConn = (cmd: Command): Command =>
  cmd.option('--control <url>', 'control plane URL (default: $RGRID_CONTROL_URL)').option('--token <token>', 'client token (default: $RGRID_TOKEN)');

withConn(program.command('run').argument('<script>', 'Python script').argument('[inputs...]', 'input files, visible as /work/inputs/<name>'))
  .description('run a script on a worker; exits with the script\'s exit code')
  .option('-r, --requirements <file>', 'requirements.txt')
  .option('--runtime <name>', 'runtime (default: $RGRID_RUNTIME or python3.11)')
  .option('--output-dir <dir>', 'where outputs are written (default ./rgrid-outputs/<execution id>)')
  .option('--timeout <seconds>', 'wall-clock limit of the run')
  .option('--memory <mb>', 'memory limit of the run in MB')
  .option('--json', 'print one JSON object (script output goes to stderr)')
  .action(async (script: string, inputs: string[], flags: Conn & { requirements?: string; runtime?: string; outputDir?: string; timeout?: string; memory?: string; json?: boolean }) => {
    const api = connect(flags);
    try {
      const { summary, execution, stdout, stderr, outputDir } = await runRemote(api, {
        script, inputs, requirements: flags.requirements, runtime: flags.runtime ?? process.env.RGRID_RUNTIME ?? 'python3.11',
        outputDir: flags.outputDir, timeoutS: flags.timeout ? Number(flags.timeout) : undefined, memoryMb: flags.memory ? Number(flags.memory) : undefined,
        progress: process.stderr.isTTY === true && !flags.json,
      });
      if (flags.json) {
        process.stderr.write(stdout + stderr);
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } else {
        process.stdout.write(stdout);
        process.stderr.write(stderr);
        if (outputDir) process.stderr.write(`rgrid: outputs in ${outputDir}: ${summary.outputs.join(', ')}\n`);
        process.stderr.write(`${summaryLine(summary, execution)}\n`);
      }
      process.exitCode = exitStatus(execution);
    } finally {
      await api.close();
    }
  });

withConn(program.command('status').argument('<id>', 'execution id'))
  .description('show an execution')
  .option('--json', 'print the execution as JSON')
  .action(async (id: string, flags: Conn & { json?: boolean }) => {
    const api = connect(flags);
    try {
      const e = await api.get(id);
      if (flags.json) process.stdout.write(`${JSON.stringify(e, null, 2)}\n`);
      else {
        process.stdout.write(`${e.id} ${e.status}${e.failure ? ` (${e.failure})` : ''} exit ${e.exit_code ?? '-'} worker ${e.worker_id ?? '-'} attempts ${e.attempts}/${e.max_attempts}\n`);
        if (e.error) process.stdout.write(`error: ${e.error}\n`);
        process.stdout.write(`script ${yesNo(e.script_cache_hit)}, dependencies ${yesNo(e.dependency_cache_hit)}, inputs ${yesNo(e.input_cache_hit)}; timings ${JSON.stringify(e.timings)}\n`);
      }
    } finally {
      await api.close();
    }
  });

withConn(program.command('logs').argument('<id>', 'execution id'))
  .description("print an execution's stdout (to stdout) and stderr (to stderr)")
  .option('--json', 'print {stdout, stderr, truncated} as JSON')
  .action(async (id: string, flags: Conn & { json?: boolean }) => {
    const api = connect(flags);
    try {
      const logs = await api.logs(id);
      if (flags.json) process.stdout.write(`${JSON.stringify(logs)}\n`);
      else {
        process.stdout.write(logs.stdout);
        process.stderr.write(logs.stderr);
        if (logs.truncated) process.stderr.write('rgrid: logs were truncated (the tail is kept)\n');
      }
    } finally {
      await api.close();
    }
  });

program.parseAsync(process.argv).catch(fail);
