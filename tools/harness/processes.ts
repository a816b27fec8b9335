/**
 * The rgrid processes as the tests, the demo and the benchmarks start them: the real binaries from dist/
 * (build first), each daemon awaited on its health endpoint — never on a log line, whose text is free to
 * change — with secrets through files or the environment, never argv, and always stopped. Also the
 * removal of everything a run left in the Docker engine, found by its account label.
 *
 * No test framework is imported here: the demo and the benchmarks use it from dist/ as the tests do from
 * source (test/support/processes.ts re-exports it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { AgentClient } from '../../agent/client/agent-client.js';

function repoRoot(): string {
  // tools/harness (source) or dist/tools/harness (compiled): the nearest directory with package.json.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

export const ROOT = repoRoot();
export const BIN = {
  rgrid: join(ROOT, 'dist', 'client', 'cli', 'main.js'),
  'rgrid-agent': join(ROOT, 'dist', 'agent', 'cli', 'main.js'),
  'rgrid-control': join(ROOT, 'dist', 'control', 'cli', 'main.js'),
} as const;
export type CliName = keyof typeof BIN;

/**
 * Variables the three CLIs read. A child starts without the ones inherited from the caller's shell or
 * CI, so it sees exactly what the caller passes (a test must not pass because of its environment).
 */
const CLI_VARIABLES = [
  'RGRID_CONTROL_URL', 'RGRID_TOKEN', 'RGRID_TOKEN_FILE', 'RGRID_RUNTIME', 'RGRID_RETRY_FOR',
  'RGRID_AGENT_SOCKET', 'RGRID_WORKER_TOKEN', 'RGRID_WORKER_TOKEN_FILE',
  'RGRID_CONTROL_DATA_DIR', 'RGRID_CONTROL_LOG_LEVEL', 'RGRID_CONTROL_ADMIN_TOKEN', 'RGRID_CONTROL_ADMIN_TOKEN_FILE',
  'DATABASE_URL', 'DATABASE_URL_FILE', 'CREDENTIALS_DIRECTORY',
];

/** The caller's environment without the CLIs' variables, plus `extra` (an undefined value removes one). */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of CLI_VARIABLES) delete env[name];
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

/** Ports handed out by this process: two daemons started at once must not be given the same one. */
const handedOut = new Set<number>();

export async function freeLoopbackPort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolvePort, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        const bound = typeof address === 'object' && address ? address.port : 0;
        server.close(() => resolvePort(bound));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** Polls `url` until it answers `status` (or `timeoutMs` passes: then throws with `what`). */
export async function waitForHttp(url: string, what: string, timeoutMs = 30_000, status = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await fetch(url, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => undefined);
    if (got === status) return;
    if (Date.now() > deadline) throw new Error(`${what} did not answer ${status} on ${url} within ${timeoutMs} ms (last: ${got ?? 'no answer'})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A file holding `secret`, readable by its owner only, in a directory of its own (`removeSecretFile`). */
export function secretFile(secret: string, name = 'token'): string {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-secret-'));
  const path = join(dir, name);
  writeFileSync(path, `${secret}\n`, { mode: 0o600 });
  return path;
}

export const removeSecretFile = (path: string): void => rmSync(dirname(path), { recursive: true, force: true });

/** Creates a token through the admin API of a running control plane. */
export async function createTokenOver(url: string, adminToken: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/v1/admin/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}

// ---- daemons -------------------------------------------------------------------------------------------

/** A daemon started from dist/. Its output is kept whole: tests look for lines written at start too. */
export interface DaemonProcess {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** stdout and stderr as written. */
  log(): string;
  /** stdout's JSON log lines, parsed (a line that is not JSON is left out). */
  logLines(): Array<Record<string, unknown>>;
  /** Resolves with the exit code (null after a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after a grace period; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: nothing is cleaned up, as in a crash. */
  kill(): Promise<void>;
}

interface SpawnedDaemon extends DaemonProcess {
  running(): boolean;
}

function spawnDaemon(what: string, argv: string[], env: NodeJS.ProcessEnv, graceMs: number, onOutput?: (chunk: string) => void, onGone?: () => void): SpawnedDaemon {
  const proc = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let pending = '';
  const lines: Array<Record<string, unknown>> = [];
  proc.stdout.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    onOutput?.(text);
    pending += text;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        const parsed: unknown = JSON.parse(line);
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) lines.push(parsed as Record<string, unknown>);
      } catch {
        // not a JSON log line
      }
    }
  });
  proc.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    onOutput?.(chunk.toString());
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const running = (): boolean => proc.exitCode === null && proc.signalCode === null;
  if (proc.pid === undefined) throw new Error(`${what} could not be started`);
  return {
    proc,
    pid: proc.pid,
    log: () => output,
    logLines: () => lines,
    exited,
    running,
    async stop() {
      if (running()) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      onGone?.();
      return proc.exitCode;
    },
    async kill() {
      if (running()) {
        proc.kill('SIGKILL');
        await exited;
      }
      onGone?.();
    },
  };
}

/** Waits for `ready`, failing early with the output when the process exits first. */
async function awaitStart(daemon: SpawnedDaemon, what: string, ready: Promise<void>): Promise<void> {
  try {
    await Promise.race([
      ready,
      daemon.exited.then((code) => {
        throw new Error(`${what} exited with ${code} during start:\n${daemon.log().slice(-4000)}`);
      }),
    ]);
  } catch (err) {
    await daemon.kill();
    throw err;
  }
}

export interface ControlProcess extends DaemonProcess {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
}

export interface ControlProcessOptions {
  /** External PostgreSQL; without it the control plane starts its embedded one under dataDir/postgres. */
  databaseUrl?: string;
  adminToken: string;
  /**
   * How the admin token reaches the process: a private file (`RGRID_CONTROL_ADMIN_TOKEN_FILE`, the
   * default) or the variable itself, for tests about what the process does with its environment.
   */
  adminTokenVia?: 'file' | 'env';
  /** Listen on this port (to restart on the same address); a free one otherwise. */
  port?: number;
  /** Kept as given; without it a temp directory is made and removed when the process is stopped. */
  dataDir?: string;
  logLevel?: string;
  /** More `serve` flags. */
  args?: string[];
  /** Flags of node itself (e.g. `--cpu-prof`). */
  nodeArgs?: string[];
  env?: Record<string, string | undefined>;
  /** The embedded PostgreSQL's first start (initdb) takes a while on a loaded machine. */
  startTimeoutMs?: number;
  onOutput?: (chunk: string) => void;
}

/** `rgrid-control serve` on 127.0.0.1, ready once `/readyz` answers 200. */
export async function startControlProcess(options: ControlProcessOptions): Promise<ControlProcess> {
  const port = options.port ?? (await freeLoopbackPort());
  const ownDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'rgrid-control-proc-'));
  const tokenFile = options.adminTokenVia === 'env' ? undefined : secretFile(options.adminToken, 'admin-token');
  const env = childEnv({
    ...(options.databaseUrl !== undefined ? { DATABASE_URL: options.databaseUrl } : {}),
    ...(tokenFile ? { RGRID_CONTROL_ADMIN_TOKEN_FILE: tokenFile } : { RGRID_CONTROL_ADMIN_TOKEN: options.adminToken }),
    ...options.env,
  });
  const argv = [
    ...(options.nodeArgs ?? []), BIN['rgrid-control'], 'serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--log-level', options.logLevel ?? 'warn', ...(options.args ?? []),
  ];
  const cleanup = (): void => {
    if (tokenFile) removeSecretFile(tokenFile);
    if (ownDataDir) rmSync(dataDir, { recursive: true, force: true });
  };
  const daemon = spawnDaemon('rgrid-control serve', argv, env, 20_000, options.onOutput, cleanup);
  const url = `http://127.0.0.1:${port}`;
  await awaitStart(daemon, 'rgrid-control serve', waitForHttp(`${url}/readyz`, 'rgrid-control serve', options.startTimeoutMs ?? 120_000));
  return { ...daemon, url, port, dataDir };
}

export interface AgentProcess extends DaemonProcess {
  readonly socket: string;
  readonly dataDir: string;
  /** A client on the socket, closed by stop() and kill(). */
  readonly client: AgentClient;
}

export interface AgentProcessOptions {
  dataDir: string;
  /** Default: `<dataDir>/agent.sock`. */
  socket?: string;
  /** `--runtime python3.11=<baseImage>`. */
  baseImage: string;
  wheelhouse?: string;
  /** The claim loop and sync: the worker token travels in a private file (`--worker-token-file`). */
  control?: { url: string; workerToken: string; workerId: string; capacity?: number };
  /** Also wait until the agent has registered with the control plane (its sync status says so). */
  awaitRegistration?: boolean;
  logLevel?: string;
  /** More `serve` flags. */
  args?: string[];
  env?: Record<string, string | undefined>;
  startTimeoutMs?: number;
  onOutput?: (chunk: string) => void;
}

async function agentReady(client: AgentClient, what: string, timeoutMs: number, registration: boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    try {
      const health = await client.health();
      last = `phase ${String(health.phase)}`;
      if (health.phase === 'running') {
        if (!registration) return;
        const sync = (await client.call('GET', '/v1/sync')) as { registered?: unknown; last_error?: unknown };
        last = `not registered (${typeof sync.last_error === 'string' ? sync.last_error : 'no error yet'})`;
        if (sync.registered === true) return;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what} was not ready within ${timeoutMs} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `rgrid-agent serve`, ready once its socket's `/v1/health` says `running` (and, if asked, it registered). */
export async function startAgentProcess(options: AgentProcessOptions): Promise<AgentProcess> {
  const socket = options.socket ?? join(options.dataDir, 'agent.sock');
  const tokenFile = options.control ? secretFile(options.control.workerToken, 'worker-token') : undefined;
  const argv = [
    BIN['rgrid-agent'], 'serve', '--socket', socket, '--data-dir', options.dataDir, '--runtime', `python3.11=${options.baseImage}`,
    '--log-level', options.logLevel ?? 'info',
    ...(options.wheelhouse ? ['--pip-find-links', options.wheelhouse] : []),
    ...(options.control && tokenFile
      ? ['--control-url', options.control.url, '--worker-token-file', tokenFile, '--worker-id', options.control.workerId, '--run-capacity', String(options.control.capacity ?? 2)]
      : []),
    ...(options.args ?? []),
  ];
  const client = new AgentClient(socket);
  const daemon = spawnDaemon('rgrid-agent serve', argv, childEnv(options.env), 30_000, options.onOutput, () => {
    if (tokenFile) removeSecretFile(tokenFile);
  });
  await awaitStart(daemon, 'rgrid-agent serve', agentReady(client, 'rgrid-agent serve', options.startTimeoutMs ?? 60_000, options.awaitRegistration === true)).catch(
    async (err: unknown) => {
      await client.destroy().catch(() => undefined);
      throw err;
    },
  );
  return {
    ...daemon,
    socket,
    dataDir: options.dataDir,
    client,
    async stop() {
      await client.close().catch(() => undefined);
      return daemon.stop();
    },
    async kill() {
      await daemon.kill();
      await client.destroy().catch(() => undefined);
    },
  };
}

// ---- the CLIs ------------------------------------------------------------------------------------------

export interface CliResult {
  /** Exit code; null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** From spawn to exit. */
  wallMs: number;
}

export interface CliOptions {
  /** Variables on top of the caller's environment without the CLIs' own (tokens go here or in files). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /**
   * Called with the pid right after the start, and a promise settled when the process has ended; the
   * result is returned once both have finished.
   */
  whileRunning?: (pid: number, ended: Promise<unknown>) => Promise<void>;
}

/** Runs `rgrid`, `rgrid-agent` or `rgrid-control` from dist/ to its end. */
export async function runCli(cli: CliName, args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN[cli], ...args], { env: childEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'], ...(options.cwd ? { cwd: options.cwd } : {}) });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // 'close', not 'exit': the output is complete only when both pipes have ended.
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  if (options.whileRunning && child.pid !== undefined) {
    try {
      await options.whileRunning(child.pid, closed.catch(() => undefined));
    } catch (err) {
      // A failed look at the running command must not leave it running (it may wait for the look to end).
      child.kill('SIGKILL');
      await closed.catch(() => undefined);
      throw err;
    }
  }
  const { code, signal } = await closed;
  return { code, signal, stdout, stderr, wallMs: performance.now() - started };
}

/** An agent's Prometheus text, scraped over its socket (`GET /metrics`); anything but 200 is an error. */
export function agentMetrics(socket: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: '/metrics', method: 'GET' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`agent /metrics answered ${res.statusCode}: ${text}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- cleanup by label ----------------------------------------------------------------------------------

/**
 * Removes what runs of `account` left in the engine, found by the `io.rgrid.account` label the agent
 * puts on everything it creates: containers (force), the outputs volumes of runs cut off by a killed
 * agent, then images — script images before the dependency layers they are built on.
 */
export async function removeAccountResources(account: string, docker: Docker = new Docker()): Promise<void> {
  const label = { label: [`io.rgrid.account=${account}`] };
  for (const c of await docker.listContainers({ all: true, filters: label })) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
  const { Volumes } = await docker.listVolumes({ filters: label });
  for (const v of Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
  const images = await docker.listImages({ filters: label });
  const order = (kind: string | undefined): number => (kind === 'image' ? 0 : 1);
  images.sort((a, b) => order(a.Labels?.['io.rgrid.kind']) - order(b.Labels?.['io.rgrid.kind']));
  for (const image of images) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
}

/**
 * Removes the outputs holders an agent made ahead (label `io.rgrid.outputs-pool=<agent id>`) and their
 * volumes: after a SIGKILL they stay until that agent's next start repairs them, and a test that kills an
 * agent for good never starts it again.
 */
export async function removeAgentLeftovers(dataDir: string, docker: Docker = new Docker()): Promise<void> {
  let agentId: string;
  try {
    agentId = readFileSync(join(dataDir, 'agent-id'), 'utf8').trim();
  } catch {
    return; // never started far enough to have an id: nothing made ahead
  }
  const label = { label: [`io.rgrid.outputs-pool=${agentId}`] };
  for (const c of await docker.listContainers({ all: true, filters: label })) {
    await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
  }
  const { Volumes } = await docker.listVolumes({ filters: label });
  for (const v of Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
}
