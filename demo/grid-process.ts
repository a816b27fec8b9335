/**
 * A whole local grid as real processes, for the demo and the grid benchmark: `rgrid-control serve` on
 * embedded PostgreSQL in a temp dir (run as the postgres user when we are root), one `rgrid-agent serve`
 * with its claim loop, tokens for a fresh account — started and awaited through the shared process
 * harness (tools/harness/processes.ts). `stop()` ends both processes, removes the account's containers
 * and images and the temp dir.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createTokenOver, removeAccountResources, ROOT, runCli, startAgentProcess, startControlProcess, type DaemonProcess,
} from '../tools/harness/processes.js';

export { ROOT };
export const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';

export interface LocalGrid {
  dir: string;
  url: string;
  account: string;
  clientToken: string;
  workerId: string;
  stop(): Promise<void>;
}

export async function startLocalGrid(opts: { wheelhouse: string; capacity?: number; log?: (line: string) => void }): Promise<LocalGrid> {
  const log = opts.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-grid-'));
  chmodSync(dir, 0o711); // the embedded PostgreSQL may run as another user (root → postgres)
  const admin = randomBytes(24).toString('hex');
  const account = `demo-${randomBytes(4).toString('hex')}`;
  const workerId = 'local-worker-1';
  const daemons: DaemonProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const daemon of [...daemons].reverse()) await daemon.stop();
    await removeAccountResources(account);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    log('starting the control plane (embedded PostgreSQL)…');
    const control = await startControlProcess({ adminToken: admin, dataDir: join(dir, 'control') });
    daemons.push(control);
    const workerToken = await createTokenOver(control.url, admin, { account, role: 'worker', worker_id: workerId });
    const clientToken = await createTokenOver(control.url, admin, { account, role: 'client' });
    log('starting one agent…');
    const agent = await startAgentProcess({
      dataDir: join(dir, 'agent'), socket: join(dir, 'agent.sock'), baseImage: BASE_IMAGE, wheelhouse: opts.wheelhouse, logLevel: 'warn',
      control: { url: control.url, workerToken, workerId, capacity: opts.capacity ?? 2 },
      awaitRegistration: true,
    });
    daemons.push(agent);
    return { dir, url: control.url, account, clientToken, workerId, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface CliRun {
  code: number | null;
  wallMs: number;
  json: Record<string, unknown>;
  stderr: string;
}

/** Runs the real `rgrid run … --json` (the client token in its environment) and times it from spawn to exit. */
export async function rgridRun(grid: LocalGrid, args: string[]): Promise<CliRun> {
  const res = await runCli('rgrid', ['run', ...args, '--json'], { env: { RGRID_CONTROL_URL: grid.url, RGRID_TOKEN: grid.clientToken } });
  try {
    return { code: res.code, wallMs: res.wallMs, json: JSON.parse(res.stdout) as Record<string, unknown>, stderr: res.stderr };
  } catch {
    throw new Error(`rgrid run printed no JSON (exit ${res.code}): ${res.stderr}`);
  }
}
