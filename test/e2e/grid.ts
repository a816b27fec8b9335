/**
 * The whole grid for the e2e tests: the control plane (the real app, listening on a loopback port, on a
 * fresh database of the run's PostgreSQL), real agents spawned from dist/ with their claim loop on, and
 * the real `rgrid` CLI from dist/ — both through the shared process harness (test/support/processes.ts).
 * Every test uses its own account, so runs never share images.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, inject } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import type { ControlConfig } from '../../control/config.js';
import { ADMIN_TOKEN, createToken, testConfig, useTestDatabase, type TestDatabase } from '../control/support.js';
import { docker, startAgent, tempDir, type AgentProcess } from '../agent/helpers.js';
import { BIN, removeAccountResources, removeAgentLeftovers, runCli, type CliResult } from '../support/processes.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';

export const RGRID_BIN = BIN.rgrid;

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
    // An agent a test killed outright left its outputs holders for a next start that never comes.
    await Promise.all(agents.map((a) => removeAgentLeftovers(a.dataDir, docker)));
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
        dataDir, baseImage: inject('baseImage'), wheelhouse,
        control: { url, workerToken: token, workerId, capacity: opts.capacity ?? 2 },
        args: opts.extra ?? [],
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

/** Containers, outputs volumes and images labelled with the account (test/support/processes.ts). */
export const removeAccountContainersAndImages = (account: string): Promise<void> => removeAccountResources(account, docker);

export type RgridResult = CliResult;

/** `rgrid <args>` with the control plane and the client token in its environment (never in argv). */
export function rgrid(args: string[], env: { url: string; token: string }, cwd?: string): Promise<RgridResult> {
  return runCli('rgrid', args, { env: { RGRID_CONTROL_URL: env.url, RGRID_TOKEN: env.token }, ...(cwd ? { cwd } : {}) });
}

export interface RunJson {
  execution_id: string;
  worker_id: string;
  exit_code: number | null;
  script_cache_hit: boolean | null;
  dependency_cache_hit: boolean | null;
  input_cache_hit: boolean | null;
  image_origin: 'local' | 'pulled' | 'built' | null;
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: 'locked' | 'cached' | 'resolved' | 'stale' | null;
  uploaded_blobs: number;
  downloaded_blobs: number | null;
  timings: Record<string, number>;
  outputs: string[];
}

export async function rgridRun(args: string[], env: { url: string; token: string }, cwd?: string): Promise<RunJson & { code: number | null; stderr: string }> {
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
