import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { AgentClient } from '../../agent/client/agent-client.js';

/**
 * Integration helpers: the real `rgrid-agent` from dist/ (npm test builds first), a real Docker engine,
 * per-run accounts so that test runs never hit each other's images, and cleanup by label.
 */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AGENT_BIN = join(ROOT, 'dist', 'agent', 'cli', 'main.js');
export const docker = new Docker();

export function uniqueAccount(prefix: string): string {
  return `it-${prefix}-${process.pid}-${Date.now().toString(36)}`;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `rgrid-${prefix}-`));
}

export function writeFiles(dir: string, files: Record<string, string | Buffer>): Record<string, string> {
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, name);
    writeFileSync(paths[name], content);
  }
  return paths;
}

export interface AgentProcess {
  socket: string;
  dataDir: string;
  proc: ChildProcess;
  log: () => string;
  client: AgentClient;
  /** SIGTERM and wait for exit (SIGKILL after a grace period). */
  stop(): Promise<number | null>;
  kill(): Promise<void>;
}

export async function startAgent(options: { dataDir: string; socket: string; baseImage: string; wheelhouse?: string; extra?: string[] }): Promise<AgentProcess> {
  const args = [AGENT_BIN, 'serve', '--socket', options.socket, '--data-dir', options.dataDir, '--runtime', `python3.11=${options.baseImage}`, '--log-level', 'info'];
  if (options.wheelhouse) args.push('--pip-find-links', options.wheelhouse);
  args.push(...(options.extra ?? []));
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const client = new AgentClient(options.socket);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`agent exited during start (${proc.exitCode}):\n${output}`);
    try {
      const health = await client.health();
      if (health.phase === 'running') break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`agent did not start within 30 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    socket: options.socket,
    dataDir: options.dataDir,
    proc,
    client,
    log: () => output,
    async stop() {
      await client.close().catch(() => undefined);
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
      await client.destroy().catch(() => undefined);
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], socket: string): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    execFile(
      process.execPath,
      [AGENT_BIN, ...args],
      { env: { ...process.env, RGRID_AGENT_SOCKET: socket }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolvePromise({ code, stdout, stderr });
      },
    );
  });
}

export async function cliJson<T = Record<string, unknown>>(args: string[], socket: string): Promise<T> {
  const res = await cli([...args, '--json'], socket);
  if (res.code !== 0) throw new Error(`rgrid-agent ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

export async function imageExists(id: string): Promise<boolean> {
  try {
    await docker.getImage(id).inspect();
    return true;
  } catch {
    return false;
  }
}

/** Removes every image of a test account: script images first (they are built FROM the deps images). */
export async function removeAccountImages(account: string): Promise<void> {
  const images = await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } });
  const order = (kind: string | undefined): number => (kind === 'image' ? 0 : 1);
  images.sort((a, b) => order(a.Labels?.['io.rgrid.kind']) - order(b.Labels?.['io.rgrid.kind']));
  for (const image of images) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
}

/** Python scripts whose bytes are unique per test run, so their image keys are new. */
export function nonceScript(body: string): string {
  return `# nonce ${process.pid}-${Date.now()}-${Math.random()}\n${body}\n`;
}
