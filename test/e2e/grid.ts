/**
 * The whole grid for the e2e tests: the control plane (the real app, listening on a loopback port, on a
 * fresh database of the run's PostgreSQL), real agents spawned from dist/ with their claim loop on, and
 * the real `rgrid` CLI from dist/. Every test uses its own account, so runs never share images.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, inject } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import type { ControlConfig } from '../../control/config.js';
import { ADMIN_TOKEN, createToken, testConfig, useTestDatabase, type TestDatabase } from '../control/support.js';
import { docker, removeAccountImages, ROOT, startAgent, tempDir, type AgentProcess } from '../agent/helpers.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';

export const RGRID_BIN = join(ROOT, 'dist', 'client', 'cli', 'main.js');

export interface Grid {
  db: TestDatabase;
  app: () => FastifyInstance;
  url: () => string;
  wheelhouse: () => string;
  /** Starts an agent serving `account` as worker `workerId` (new data dir unless given). */
  agent(account: string, workerId: string, opts?: { dataDir?: string; capacity?: number; extra?: string[] }): Promise<AgentProcess>;
  clientToken(account: string): Promise<string>;
  cleanupAccount(account: string): Promise<void>;
}

export function useGrid(overrides: Partial<ControlConfig> = {}): Grid {
  const db = useTestDatabase();
  let app: FastifyInstance | undefined;
  let url = '';
  let wheelhouse = '';
  const agents: AgentProcess[] = [];
  const accounts = new Set<string>();
  beforeAll(async () => {
    app = await buildControlApp(testConfig(db, { claimLeaseMs: 3000, workerDeadAfterMs: 5000, dispatchSweepIntervalMs: 500, ...overrides }), { logger: false });
    url = await app.listen({ host: '127.0.0.1', port: 0 });
    wheelhouse = createWheelhouse([{ name: 'rgrid-e2e-dep', version: '1.0.0' }]);
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await app?.close();
    for (const account of accounts) await removeAccountContainersAndImages(account);
  });
  return {
    db,
    app: () => app!,
    url: () => url,
    wheelhouse: () => wheelhouse,
    async agent(account, workerId, opts = {}) {
      accounts.add(account);
      const token = await createToken(app!, account, 'worker', workerId);
      const dataDir = opts.dataDir ?? tempDir(`e2e-${workerId}`);
      const agent = await startAgent({
        dataDir, socket: join(dataDir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse,
        extra: ['--control-url', url, '--worker-token', token, '--worker-id', workerId, '--run-capacity', String(opts.capacity ?? 2), ...(opts.extra ?? [])],
      });
      agents.push(agent);
      return agent;
    },
    clientToken: (account) => {
      accounts.add(account);
      return createToken(app!, account, 'client');
    },
    cleanupAccount: removeAccountContainersAndImages,
  };
}

export async function removeAccountContainersAndImages(account: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`] } });
  for (const c of containers) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  // Outputs volumes of runs cut off by a killed agent (a live agent removes its own).
  const { Volumes } = await docker.listVolumes({ filters: { label: [`io.rgrid.account=${account}`] } });
  for (const v of Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
  await removeAccountImages(account);
}

export interface RgridResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function rgrid(args: string[], env: { url: string; token: string }, cwd?: string): Promise<RgridResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [RGRID_BIN, ...args],
      { env: { ...process.env, RGRID_CONTROL_URL: env.url, RGRID_TOKEN: env.token }, maxBuffer: 64 * 1024 * 1024, ...(cwd ? { cwd } : {}) },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export interface RunJson {
  execution_id: string;
  worker_id: string;
  exit_code: number | null;
  script_cache_hit: boolean | null;
  dependency_cache_hit: boolean | null;
  input_cache_hit: boolean | null;
  uploaded_blobs: number;
  downloaded_blobs: number | null;
  timings: Record<string, number>;
  outputs: string[];
}

export async function rgridRun(args: string[], env: { url: string; token: string }, cwd?: string): Promise<RunJson & { code: number; stderr: string }> {
  const res = await rgrid(['run', ...args, '--json'], env, cwd);
  let parsed: RunJson;
  try {
    parsed = JSON.parse(res.stdout) as RunJson;
  } catch {
    throw new Error(`rgrid run ${args.join(' ')} printed no JSON (exit ${res.code}): ${res.stdout}\n${res.stderr}`);
  }
  return { ...parsed, code: res.code, stderr: res.stderr };
}

export { ADMIN_TOKEN };
