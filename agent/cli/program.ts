import type { Command } from 'commander';
import { createProgram, envHelp, exitStatusOfError, oneLine, runProgram } from '../../common/cli.js';
import { isRgridError, RgridError } from '../../common/errors.js';
import type { EnsureFlags, RunFlags, CommonFlags } from './client-commands.js';
import type { ServeFlags } from './serve.js';

/**
 * rgrid-agent: `serve` runs the daemon; `ensure`, `run`, `ls` talk to it over its Unix socket. The
 * environment is read here, once, and passed down (RGRID_AGENT_SOCKET); nothing reads it at import time.
 * Failures print ONE line on stderr (`rgrid-agent: <code>: <reason>`) and exit with the status of their
 * kind (common/cli.ts: 2 for refused input, else 1); with --json the error body also goes to stdout as
 * JSON (it carries e.g. the tail of pip's output).
 *
 * Start-up cost: a command loads only what it uses. The daemon's modules (dockerode, lmdb, fastify, the
 * builder, TypeBox schemas) are imported by `serve` alone; a socket command loads its HTTP client and
 * nothing else; `--help` and `--version` load neither (test/agent/cli-light.test.ts holds this).
 */
const clientCommands = (): Promise<typeof import('./client-commands.js')> => import('./client-commands.js');
const runCommand = (): Promise<typeof import('./run-command.js')> => import('./run-command.js');
const fleetCommands = (): Promise<typeof import('./fleet-commands.js')> => import('./fleet-commands.js');
const env = {
  socket: process.env.RGRID_AGENT_SOCKET,
  workerToken: process.env.RGRID_WORKER_TOKEN,
  workerTokenFile: process.env.RGRID_WORKER_TOKEN_FILE,
  // systemd's LoadCredential=worker-token:… (the token never appears in a command line or the unit).
  credentialsDirectory: process.env.CREDENTIALS_DIRECTORY,
  dockerHost: process.env.DOCKER_HOST,
};
// Read once; out of the environment so that nothing the agent starts could inherit the secret.
delete process.env.RGRID_WORKER_TOKEN;
type ListFlags = CommonFlags & { kind?: string; account?: string };
type Fleet = typeof import('./fleet-commands.js');
const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function fail(err: unknown, json: boolean): never {
  const error = isRgridError(err) ? err : new RgridError('unavailable', (err as Error).message ?? String(err));
  if (json) process.stdout.write(`${JSON.stringify({ error: error.code, message: error.message, ...(error.detail ? { detail: error.detail } : {}) })}\n`);
  // One line, always: a message with newlines is folded (the full pip tail is in the --json detail).
  process.stderr.write(`rgrid-agent: ${error.code}: ${oneLine(error.message)}\n`);
  process.exit(exitStatusOfError(error));
}

function action<F extends { json?: boolean }>(run: (flags: F) => Promise<number>) {
  return async (flags: F): Promise<void> => {
    try {
      process.exitCode = await run(flags);
    } catch (err) {
      fail(err, flags.json === true);
    }
  };
}

const program = createProgram('rgrid-agent', 'rgrid worker agent: content-addressed image and dependency-layer cache over a local Docker engine');
const SOCKET_HELP = envHelp('agent socket', 'RGRID_AGENT_SOCKET');

program
  .command('serve')
  .description('run the agent daemon on a Unix socket')
  .option('--config <file>', 'JSON config file (flags override it)')
  .option('--socket <path>', envHelp('Unix socket to listen on', 'RGRID_AGENT_SOCKET'))
  .option('--data-dir <dir>', 'directory for the LMDB index and run scratch space')
  .option('--runtime <name=image>', 'runtime name mapped to a base image (repeatable)', collect)
  .option('--default-runtime <name>', 'runtime used when a request names none')
  .option('--build-network <mode>', 'network of build containers: none|host|default (default none)')
  .option('--pip-find-links <dir>', 'wheelhouse directory; dependency builds then use --no-index')
  .option('--pip-index-url <url>', 'package index URL for dependency builds')
  .option('--build-concurrency <n>', 'builds running at once (default 1)')
  .option('--run-network <mode>', 'network of run containers: none|host (default none)')
  .option('--socket-group <group>', 'group owning the socket (mode 0660)')
  .option('--drain-timeout <duration>', 'on SIGTERM, time for builds and runs to finish: seconds or e.g. 90s, 2m (default 60)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
  .option('--control-url <url>', 'control plane base URL; enables sync and claiming executions')
  .option('--worker-token <token>', envHelp('worker token for the control plane; visible in ps: prefer --worker-token-file', 'RGRID_WORKER_TOKEN'))
  .option('--worker-token-file <file>', envHelp('file holding the worker token, mode 0600 (else worker_token_file in the config)', 'RGRID_WORKER_TOKEN_FILE', '$CREDENTIALS_DIRECTORY/worker-token'))
  .option('--worker-id <id>', 'worker id the token is bound to (default: host name)')
  .option('--run-capacity <n>', 'executions run at once for the control plane (default 2)')
  .option('--ttl <duration>', 'prune entries unused this long, e.g. 2s, 30d (default 30d)')
  .option('--min-age <duration>', 'never prune entries younger than this (default 1h)')
  .option('--prune-interval <duration>', 'period of the background prune, 0 = on demand only (default 5m)')
  .option('--disk-usage-file <file>', 'JSON {used_bytes,total_bytes} read instead of statfs')
  .option('--warm-dir <dir>', 'requirements files to pre-build (default DATA_DIR/warm.d)')
  .option('--metrics-listen <host:port>', 'also serve GET /metrics on this TCP address')
  .option('--docker-host <url>', envHelp('Docker engine: unix:///path or tcp://host:port', 'DOCKER_HOST'))
  .option('--registry <host:port[/prefix]>', 'OCI registry to share images through with other workers (default: no sharing)')
  .option('--registry-auth-file <file>', 'JSON {"username","password"} for the registry, read per push and pull')
  .option('--registry-timeout <duration>', 'bound of one push or pull (default 300s)')
  .option('--build-wait <duration>', 'how long to wait for another worker\'s build before building (default 900s)')
  .option('--resolve-ttl <duration|never>', 'how long a requirements file\'s resolved lock is used before pip resolves it again; 0 = every time, never = no resolution (default 1h)')
  .action(async (flags: ServeFlags) => {
    try {
      const { serve } = await import('./serve.js');
      await serve(flags, env);
    } catch (err) {
      fail(err, false);
    }
  });

const clientOptions = (cmd: Command): Command =>
  cmd
    .option('--socket <path>', SOCKET_HELP)
    .option('--progress', 'print build progress on stderr even when it is not a terminal')
    .option('--quiet', 'no build progress');

clientOptions(
  program
    .command('ensure')
    .description('make sure the image for a script (and its requirements) exists; print its keys and hit flags')
    .requiredOption('--script <file>', 'Python script')
    .option('--requirements <file>', 'requirements.txt')
    .option('--runtime <name>', 'runtime name (default: the agent default)')
    .option('--account <name>', 'account the entry belongs to (default "default")')
    .option('--json', 'print one JSON object'),
).action(action(async (flags: EnsureFlags) => (await clientCommands()).ensureCommand(flags, env)));

clientOptions(
  program
    .command('run')
    .description('run a script in its cached image (built if missing); exit status is the script\'s')
    .requiredOption('--script <file>', 'Python script')
    .option('--requirements <file>', 'requirements.txt')
    .option('--input <file...>', 'input file, read-only under /work/inputs/<name> (repeatable)', (v: string, p: string[] = []) => [...p, v])
    .option('--output-dir <dir>', 'where files the script wrote to /work/outputs are copied')
    .option('--runtime <name>', 'runtime name')
    .option('--account <name>', 'account (default "default")')
    .option('--timeout <seconds>', 'wall-clock limit: seconds, or a duration such as 90s, 15m, 2h; the container is killed after it')
    .option('--memory <mb>', 'memory limit in MB (16 to 1048576)')
    .option('--cpus <n>', 'CPU limit')
    .option('--json', 'print one JSON object (script output in its stdout/stderr fields)'),
).action(action(async (flags: RunFlags) => (await runCommand()).runCommand(flags, env)));

clientOptions(
  program
    .command('ls')
    .description('list index entries (script images and dependency layers)')
    .option('--kind <kind>', 'image|deps')
    .option('--account <name>', 'only this account')
    .option('--json', 'print a JSON array'),
).action(action(async (flags: ListFlags) => (await clientCommands()).lsCommand(flags, env)));

clientOptions(
  program
    .command('inspect <key>')
    .description('one entry in detail: index record, image in the engine, lease, dependent script images')
    .option('--kind <kind>', 'image|deps')
    .option('--account <name>', 'only this account')
    .option('--pylock <file>', "write the entry's dependency lock as a PEP 751 pylock.toml")
    .option('--json', 'print one JSON object'),
).action((key: string, flags: ListFlags & { pylock?: string }) => action(async (f: ListFlags & { pylock?: string }) => (await clientCommands()).inspectCommand(key, f, env))(flags));

program
  .command('sync')
  .description('sync state with the control plane: outbox depth, last success, ok|retrying|open')
  .option('--socket <path>', SOCKET_HELP)
  .option('--now', 'send the outbox now (ignoring backoff) before answering; exit 1 if ops remain')
  .option('--json', 'print one JSON object')
  .action(action(async (flags: Parameters<Fleet['syncCommand']>[0]) => (await fleetCommands()).syncCommand(flags, env)));

program
  .command('prune')
  .description('remove entries unused past the TTL, and LRU entries while the disk is above the high mark')
  .option('--socket <path>', SOCKET_HELP)
  .option('--dry-run', 'report what would be removed; remove nothing')
  .option('--json', 'print a JSON array of {key, kind, image_id, reason}')
  .action(action(async (flags: Parameters<Fleet['pruneCommand']>[0]) => (await fleetCommands()).pruneCommand(flags, env)));

program
  .command('verify')
  .description('compare the index with the engine\'s labelled images; --repair fixes the drift')
  .option('--socket <path>', SOCKET_HELP)
  .option('--repair', 'fix the drift found')
  .option('--json', 'print the report as JSON')
  .action(action(async (flags: Parameters<Fleet['verifyCommand']>[0]) => (await fleetCommands()).verifyCommand(flags, env)));

program
  .command('reindex')
  .description('rebuild index entries from the engine\'s image labels (after a lost index)')
  .option('--socket <path>', SOCKET_HELP)
  .option('--json', 'print the report as JSON')
  .action(action(async (flags: Parameters<Fleet['reindexCommand']>[0]) => (await fleetCommands()).reindexCommand(flags, env)));

program
  .command('status')
  .description('version, uptime, config, runtimes, entries, bytes, build queue, sync and warm state')
  .option('--socket <path>', SOCKET_HELP)
  .option('--json', 'print one JSON object')
  .action(action(async (flags: Parameters<Fleet['statusCommand']>[0]) => (await fleetCommands()).statusCommand(flags, env)));

void runProgram(program, process.argv, (err) => fail(err, false));
