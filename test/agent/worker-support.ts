/**
 * Shared by the claim-loop tests against a fake control plane: a real agent from dist/ pointed at the
 * fake, claims built like the control plane builds them, the agent's metrics over its socket, cleanup.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { canonicalManifest, inputSha256 } from '../../common/cache-keys.js';
import { docker, removeAccountImages, startAgent, type AgentProcess } from './helpers.js';
import { sha256, type FakeControl } from './fake-control.js';

export async function startWorkerAgent(fake: FakeControl, dataDir: string, workerId: string, config: Record<string, unknown> = {}): Promise<AgentProcess> {
  const configFile = join(dataDir, '..', `${workerId}.json`);
  writeFileSync(configFile, JSON.stringify(config));
  return startAgent({
    dataDir, socket: join(dataDir, 'agent.sock'), baseImage: inject('baseImage'),
    control: { url: fake.url, workerToken: 'fake-token', workerId, capacity: 2 },
    args: ['--config', configFile],
  });
}

export interface ClaimFiles {
  script: string;
  inputs?: Array<{ name: string; data: Buffer }>;
}

/** A claim as the control plane would hand it out, its blobs stored in the fake. */
export function claimFor(fake: FakeControl, account: string, files: ClaimFiles, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const script = Buffer.from(files.script);
  fake.blobs.set(sha256(script), script);
  const inputs = (files.inputs ?? []).map((i) => {
    fake.blobs.set(sha256(i.data), i.data);
    return { name: i.name, sha256: sha256(i.data), size: i.data.length };
  });
  return {
    execution_id: randomUUID(), claim_id: randomUUID(), account, runtime: 'python3.11', script_sha256: sha256(script),
    requirements_sha256: null, requirements_blob_sha256: null, input_sha256: inputs.length ? inputSha256(canonicalManifest(inputs)) : null, inputs,
    timeout_s: 120, memory_mb: 128, attempt: 1, lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), queue_ms: 1,
    ...overrides,
  };
}

/** The agent's Prometheus text, over its socket (the harness's scrape). */
export { agentMetrics } from '../support/processes.js';

export async function removeAccountLeftovers(account: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`] } });
  for (const c of containers) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  // Outputs volumes of runs cut off by a killed agent (a live agent removes its own).
  const { Volumes } = await docker.listVolumes({ filters: { label: [`io.rgrid.account=${account}`] } });
  for (const v of Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
  await removeAccountImages(account);
}
