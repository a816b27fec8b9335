/**
 * `rgrid`: run a script on the grid (`run`), look at an execution (`status`, `logs`). The only module of
 * the client that reads the environment (RGRID_CONTROL_URL, RGRID_TOKEN, RGRID_TOKEN_FILE,
 * RGRID_RUNTIME, RGRID_RETRY_FOR) and exits. Text that came from the control plane is escaped before it
 * reaches the terminal (`displaySafe`), except the script's own stdout and stderr, passed on as written.
 */
import { Option, type Command } from 'commander';
import { createProgram, envHelp, exitStatusOfError, runProgram } from '../../common/cli.js';
import { isRgridError, RgridError } from '../../common/errors.js';
import { assertUuid, displaySafe } from '../../common/names.js';
import type { ControlApi } from '../api.js';
import { dependenciesText, summaryLine, yesNo } from '../summary.js';
import { EXIT, exitStatusOf } from '../../common/executions.js';

const env = {
  control: process.env.RGRID_CONTROL_URL,
  token: process.env.RGRID_TOKEN,
  tokenFile: process.env.RGRID_TOKEN_FILE,
  runtime: process.env.RGRID_RUNTIME,
  retryFor: process.env.RGRID_RETRY_FOR,
};
// Read once; out of the environment so that nothing started from this process could inherit the secret.
delete process.env.RGRID_TOKEN;

interface Conn {
  controlUrl?: string;
  /** The old spelling of --control-url, kept as a hidden alias. */
  control?: string;
  token?: string;
  tokenFile?: string;
  retryFor?: string;
}

const stderrLine = (line: string): void => void process.stderr.write(`${line}\n`);

/**
 * The HTTP client, the run flow and the token files are loaded by the commands that use them, so that
 * `--help` and `--version` start with commander alone.
 */
async function connect(flags: Conn): Promise<ControlApi> {
  const url = flags.controlUrl ?? flags.control ?? env.control;
  if (!url) throw new RgridError('bad_request', 'no control plane: pass --control-url URL or set RGRID_CONTROL_URL');
  const [{ ControlApi }, { resolveToken }, { parseRetryFor }] = await Promise.all([import('../api.js'), import('../token.js'), import('./options.js')]);
  const token = resolveToken({ flagToken: flags.token, flagFile: flags.tokenFile, envToken: env.token, envFile: env.tokenFile }, stderrLine);
  const retryForMs = flags.retryFor !== undefined ? parseRetryFor(flags.retryFor, '--retry-for') : parseRetryFor(env.retryFor, 'RGRID_RETRY_FOR');
  return new ControlApi(url, token, { retryForMs, notice: stderrLine });
}

/**
 * JSON for stdout with nothing in it a terminal would act on, and still the same JSON: the characters
 * escaped can only stand inside strings, where `\uXXXX` means the same. The newlines of the indentation
 * are kept (line by line).
 */
const printJson = (value: unknown, indent?: number): void =>
  void process.stdout.write(`${JSON.stringify(value, null, indent).split('\n').map(displaySafe).join('\n')}\n`);

/** An execution id as typed: a UUID, in any case (the control plane prints them lower-case). */
const executionId = (text: string): string => assertUuid(text.trim().toLowerCase(), 'execution id');

/** The one line that reports a failure of the CLI, whatever the message holds. */
function errorLine(err: unknown): string {
  // Like the other two CLIs: an error that is not typed is reported as unavailable.
  const msg = isRgridError(err) ? `${err.code}: ${err.message}` : `unavailable: ${err instanceof Error ? err.message : String(err)}`;
  return `rgrid: ${displaySafe(msg)}`;
}

/** Exit 2 for a usage or input error, else 1 (common/cli.ts). */
function fail(err: unknown): never {
  stderrLine(errorLine(err));
  process.exit(exitStatusOfError(err));
}

const program = createProgram('rgrid', 'run Python scripts on the rgrid grid');
const withConn = (cmd: Command): Command =>
  cmd
    .addOption(new Option('--control-url <url>', envHelp('control plane URL', 'RGRID_CONTROL_URL')).conflicts('control'))
    .addOption(new Option('--control <url>').hideHelp())
    .option('--token-file <file>', envHelp('file holding the client token, mode 0600', 'RGRID_TOKEN_FILE'))
    .option('--token <token>', envHelp('client token; visible in ps: prefer --token-file', 'RGRID_TOKEN'))
    .option('--retry-for <duration>', envHelp('ride out a control-plane outage this long, 0 = fail at once (default 10m)', 'RGRID_RETRY_FOR'));

withConn(program.command('run').argument('<script>', 'Python script').argument('[inputs...]', 'input files, visible as /work/inputs/<name>'))
  .description('run a script on a worker; exits with the script\'s exit code')
  .option('-r, --requirements <file>', 'requirements.txt')
  .option('--runtime <name>', envHelp('runtime (default python3.11)', 'RGRID_RUNTIME'))
  .option('--output-dir <dir>', 'where outputs are written (default ./rgrid-outputs/<execution id>)')
  .option('--timeout <seconds>', 'wall-clock limit of the run: seconds, or a duration such as 90s, 15m, 2h')
  .option('--memory <mb>', 'memory limit of the run in MB')
  .option('--json', 'print one JSON object (script output goes to stderr)')
  .action(async (script: string, inputs: string[], flags: Conn & { requirements?: string; runtime?: string; outputDir?: string; timeout?: string; memory?: string; json?: boolean }) => {
    const [{ parseMemory, parseTimeout }, { runRemote }] = await Promise.all([import('./options.js'), import('../run.js')]);
    const timeoutS = parseTimeout(flags.timeout);
    const memoryMb = parseMemory(flags.memory);
    const api = await connect(flags);
    try {
      const { summary, execution, stdout, stderr, outputDir, outputsError } = await runRemote(api, {
        script, inputs, requirements: flags.requirements, runtime: flags.runtime ?? env.runtime ?? 'python3.11',
        outputDir: flags.outputDir, timeoutS, memoryMb, progress: process.stderr.isTTY === true && !flags.json,
      });
      if (flags.json) {
        process.stderr.write(stdout + stderr);
        printJson(summary);
      } else {
        process.stdout.write(stdout);
        process.stderr.write(stderr);
        if (outputDir) process.stderr.write(`rgrid: outputs in ${outputDir}: ${summary.outputs.join(', ')}\n`);
        process.stderr.write(`${summaryLine(summary, execution)}\n`);
      }
      if (outputsError) stderrLine(errorLine(outputsError));
      // Outputs asked for and not delivered: a failure whatever the script's own status.
      process.exitCode = outputsError ? EXIT.failure : exitStatusOf(execution);
    } finally {
      await api.close();
    }
  });

withConn(program.command('status').argument('<id>', 'execution id'))
  .description('show an execution')
  .option('--json', 'print the execution as JSON')
  .action(async (idArg: string, flags: Conn & { json?: boolean }) => {
    const id = executionId(idArg);
    const api = await connect(flags);
    try {
      const e = await api.get(id);
      if (flags.json) printJson(e, 2);
      else {
        process.stdout.write(`${e.id} ${e.status}${e.failure ? ` (${e.failure})` : ''} exit ${e.exit_code ?? '-'} worker ${e.worker_id ?? '-'} attempts ${e.attempts}/${e.max_attempts}\n`);
        if (e.error) process.stdout.write(`error: ${displaySafe(e.error)}\n`);
        process.stdout.write(`script ${yesNo(e.script_cache_hit)}, ${dependenciesText(e)}, inputs ${yesNo(e.input_cache_hit)}; timings ${JSON.stringify(e.timings)}\n`);
      }
    } finally {
      await api.close();
    }
  });

withConn(program.command('logs').argument('<id>', 'execution id'))
  .description("print an execution's stdout (to stdout) and stderr (to stderr)")
  .option('--json', 'print {stdout, stderr, truncated} as JSON')
  .action(async (idArg: string, flags: Conn & { json?: boolean }) => {
    const id = executionId(idArg);
    const api = await connect(flags);
    try {
      const logs = await api.logs(id);
      if (flags.json) printJson(logs);
      else {
        process.stdout.write(logs.stdout);
        process.stderr.write(logs.stderr);
        if (logs.truncated) process.stderr.write('rgrid: logs were truncated (the tail is kept)\n');
      }
    } finally {
      await api.close();
    }
  });

void runProgram(program, process.argv, fail);
