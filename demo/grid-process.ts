/**
 * A whole local grid as real processes, for the demo and the grid benchmark: `rgrid-control serve` on
 * embedded PostgreSQL in a temp dir (run as the postgres user when we are root), one `rgrid-agent serve`
 * with its claim loop, tokens for a fresh account. `stop()` ends both processes, removes the account's
 * containers and images and the temp dir.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
export const ROOT = repoRoot();
export const BIN = {
  control: join(ROOT, 'dist', 'control', 'cli', 'main.js'),
  agent: join(ROOT, 'dist', 'agent', 'cli', 'main.js'),
  rgrid: join(ROOT, 'dist', 'client', 'cli', 'main.js'),
};
export const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';

export interface LocalGrid {
  dir: string;
  url: string;
  account: string;
  clientToken: string;
  workerId: string;
  stop(): Promise<void>;
}

function waitForLine(child: ChildProcess, match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    let tail = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${timeoutMs / 1000} s:\n${tail}`)), timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      tail = (tail + chunk.toString()).slice(-4000);
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (match(parsed)) {
            clearTimeout(timer);
            resolve(parsed);
          }
        } catch {
          // not a JSON log line
        }
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => (tail = (tail + chunk.toString()).slice(-4000)));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}:\n${tail}`));
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

export async function startLocalGrid(opts: { wheelhouse: string; capacity?: number; log?: (line: string) => void }): Promise<LocalGrid> {
  const log = opts.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-grid-'));
  chmodSync(dir, 0o711); // the embedded PostgreSQL may run as another user (root → postgres)
  const admin = randomBytes(24).toString('hex');
  const account = `demo-${randomBytes(4).toString('hex')}`;
  const workerId = 'local-worker-1';
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const child of [...children].reverse()) await stopChild(child);
    const docker = new Docker();
    for (const c of await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    }
    const images = await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } });
    images.sort((a) => (a.Labels?.['io.rgrid.kind'] === 'image' ? -1 : 1)); // script images before the layers they build on
    for (const image of images) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    log('starting the control plane (embedded PostgreSQL)…');
    const control = spawn(process.execPath, [BIN.control, 'serve', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'control'), '--log-level', 'info'], {
      env: { ...process.env, RGRID_CONTROL_ADMIN_TOKEN: admin, DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(control);
    const serving = await waitForLine(control, (l) => l.msg === 'rgrid-control serving', 'rgrid-control', 120_000);
    const url = String(serving.url);
    const token = async (role: string, extra: Record<string, string> = {}): Promise<string> => {
      const res = await fetch(`${url}/v1/admin/tokens`, {
        method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ account, role, ...extra }),
      });
      if (res.status !== 201) throw new Error(`token create: ${res.status} ${await res.text()}`);
      return ((await res.json()) as { token: string }).token;
    };
    const workerToken = await token('worker', { worker_id: workerId });
    const clientToken = await token('client');
    log('starting one agent…');
    const agent = spawn(process.execPath, [
      BIN.agent, 'serve', '--socket', join(dir, 'agent.sock'), '--data-dir', join(dir, 'agent'), '--runtime', `python3.11=${BASE_IMAGE}`,
      '--pip-find-links', opts.wheelhouse, '--control-url', url, '--worker-id', workerId, '--run-capacity', String(opts.capacity ?? 2), '--log-level', 'info',
    ], { env: { ...process.env, RGRID_WORKER_TOKEN: workerToken }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(agent);
    await waitForLine(agent, (l) => typeof l.msg === 'string' && l.msg.startsWith('registered with the control plane'), 'rgrid-agent', 60_000);
    return { dir, url, account, clientToken, workerId, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface CliRun {
  code: number;
  wallMs: number;
  json: Record<string, unknown>;
  stderr: string;
}

/** Runs the real `rgrid run … --json` and times it from spawn to exit. */
export function rgridRun(grid: LocalGrid, args: string[]): Promise<CliRun> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN.rgrid, 'run', ...args, '--json'], {
      env: { ...process.env, RGRID_CONTROL_URL: grid.url, RGRID_TOKEN: grid.clientToken }, maxBuffer: 64 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      const wallMs = performance.now() - started;
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      try {
        resolve({ code, wallMs, json: JSON.parse(stdout) as Record<string, unknown>, stderr });
      } catch {
        reject(new Error(`rgrid run printed no JSON (exit ${code}): ${stderr}`));
      }
    });
  });
}
