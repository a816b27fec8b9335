/**
 * A grid whose workers share images through a registry, for the e2e tests: a real registry on loopback,
 * one extra Docker engine per worker host (the base image pushed to the registry once and pulled into each,
 * so every host has it under the same ID and computes the same keys), the real control plane in-process on
 * a fresh database, and real agents from dist/ each on its own engine with `--registry`.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, inject } from 'vitest';
import { buildControlApp } from '../../control/app.js';
import { registryLocation } from '../../common/registry-names.js';
import { createToken, testConfig, useTestDatabase, type TestDatabase } from '../control/support.js';
import { cliJson, docker, startAgent, tempDir, type AgentProcess } from '../agent/helpers.js';
import { agentMetrics } from '../agent/worker-support.js';
import { pullImage, pushImage, startEngine, type TestEngine } from '../support/engines.js';
import { removeAccountResources } from '../support/processes.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

export const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.index.v1+json',
].join(', ');

export interface LsEntry {
  kind: 'image' | 'deps';
  key: string;
  account: string;
  script_sha256: string | null;
  deps_key: string | null;
  origin: string;
  registry_digest: string | null;
}

/** One worker host: its engine and (while it runs) its agent. */
export interface Worker {
  readonly id: string;
  readonly engine: TestEngine;
  readonly dataDir: string;
  agent: AgentProcess | undefined;
}

export interface SharingGrid {
  db: TestDatabase;
  registry: () => TestRegistry;
  app: () => FastifyInstance;
  url: () => string;
  /** The base image as the agents name it: its reference in the registry, pulled into every engine. */
  baseRef: () => string;
  workers: () => Worker[];
  /** A new worker host: its own engine with the base image pulled from the registry; no agent yet. */
  addWorker(id: string): Promise<Worker>;
  /** Starts (or restarts, same data dir) the worker's agent. */
  startAgent(worker: Worker): Promise<AgentProcess>;
  stopAgent(worker: Worker): Promise<void>;
  ls(worker: Worker): Promise<LsEntry[]>;
  /** A counter of the worker's agent (undefined when it has no sample yet). */
  agentMetric(worker: Worker, line: RegExp): Promise<number>;
  /** A counter of the control plane. */
  controlMetric(line: RegExp): Promise<number>;
  /** HEAD of a manifest in the account's repository. */
  manifestStatus(kind: 'image' | 'deps', key: string, digest: string): Promise<number>;
}

export function useSharingGrid(account: string, wheelhouse: () => string, capacity = 2): SharingGrid {
  const db = useTestDatabase();
  let registry: TestRegistry | undefined;
  let app: FastifyInstance | undefined;
  let url = '';
  let baseRef = '';
  const workers: Worker[] = [];

  beforeAll(async () => {
    registry = await startRegistry();
    // Short claim and build leases: a killed worker's claims and build lease are taken over within
    // seconds; long enough that a healthy worker on a loaded machine keeps them.
    app = await buildControlApp(
      testConfig(db, { claimLeaseMs: 8000, workerDeadAfterMs: 10_000, dispatchSweepIntervalMs: 500, buildLeaseMs: 10_000 }),
      { logger: false },
    );
    url = await app.listen({ host: '127.0.0.1', port: 0 });
    baseRef = await pushImage(docker, inject('baseImage'), registry.address, 'rgrid-test/python', 'bookworm');
  });

  afterAll(async () => {
    await Promise.all(workers.map(async (w) => { await w.agent?.stop(); }));
    await app?.close();
    await Promise.all(workers.map((w) => w.engine.stop()));
    await registry?.destroy();
    if (baseRef) await docker.getImage(baseRef).remove({ noprune: true }).catch(() => undefined);
    await removeAccountResources(account, docker);
  });

  const metricOf = (text: string, line: RegExp): number => {
    const m = line.exec(text);
    return m ? Number(m[1]) : 0;
  };

  const grid: SharingGrid = {
    db,
    registry: () => registry!,
    app: () => app!,
    url: () => url,
    baseRef: () => baseRef,
    workers: () => workers,
    async addWorker(id) {
      const engine = await startEngine(id);
      const worker: Worker = { id, engine, dataDir: join(tempDir(`share-${id}`), 'data'), agent: undefined };
      workers.push(worker);
      const imageId = await pullImage(engine.docker, baseRef);
      if (imageId !== inject('baseImageId')) throw new Error(`the base image pulled into ${id} has another ID: ${imageId}`);
      return worker;
    },
    async startAgent(worker) {
      mkdirSync(worker.dataDir, { recursive: true });
      const token = await createToken(app!, account, 'worker', worker.id);
      worker.agent = await startAgent({
        dataDir: worker.dataDir, baseImage: baseRef, wheelhouse: wheelhouse(),
        control: { url, workerToken: token, workerId: worker.id, capacity },
        args: ['--docker-host', worker.engine.host, '--registry', registry!.address],
        awaitRegistration: true,
      });
      return worker.agent;
    },
    async stopAgent(worker) {
      await worker.agent?.stop();
      worker.agent = undefined;
    },
    ls: (worker) => cliJson<LsEntry[]>(['ls', '--account', account], worker.agent!.socket),
    agentMetric: async (worker, line) => metricOf(await agentMetrics(worker.agent!.socket), line),
    controlMetric: async (line) => metricOf((await app!.inject({ method: 'GET', url: '/metrics' })).body, line),
    async manifestStatus(kind, key, digest) {
      const { repository } = registryLocation(registry!.address, account, kind, key);
      const name = repository.slice(registry!.address.length + 1);
      const res = await fetch(`http://${registry!.address}/v2/${name}/manifests/${digest}`, { method: 'HEAD', headers: { accept: MANIFEST_TYPES } });
      return res.status;
    },
  };
  return grid;
}

/** Polls `check` until it returns something other than undefined, up to `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
