/**
 * An engine call that never answers ends the run, within a bound, instead of hanging it (and its claim)
 * for good — agent/runner/engine-deadline.ts. Seen on the test host under a load of 16: `runc init` hung
 * in its handshake and the engine's start of that container never answered (nor anything else naming
 * it); the batch of 100 waited on four such runs until its deadline.
 *
 * The hang is made on purpose with a real engine behind a pass-through proxy on a unix socket: every
 * request goes through to the engine as it is, except the start of the containers a test names, which
 * the proxy holds without ever answering — the engine's side of such a hang. The runner under test is
 * wired as the daemon wires it, with a short step deadline.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createImageCache, type ManagedImageCache } from '../../agent/builder/image-cache.js';
import { createImageProbe, type ImageProbe } from '../../agent/builder/image-probe.js';
import { createRuntimeResolver } from '../../agent/builder/runtimes.js';
import { resolveConfig, type AgentConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import { createRunner } from '../../agent/runner/run.js';
import { startEngineProxy, type EngineProxy, type EngineRequest } from './engine-proxy.js';
import { docker, nonceScript, removeAccountImages, tempDir, uniqueAccount, until } from './helpers.js';

const logger = pino({ level: 'silent' });
const account = uniqueAccount('stall');
const dir = tempDir('stall');
const proxySocket = join(dir, 'engine.sock');
let index: AgentIndex;
let probe: ImageProbe;
let cache: ManagedImageCache;
let config: AgentConfig;
let proxy: EngineProxy;
/** Names (as the engine has them: `/rgrid-…`) whose start the proxy holds; the held starts' container IDs. */
let stallNames: RegExp | undefined;
const stalled: string[] = [];

/** Holds the start of a container whose name matches `stallNames`. */
async function decide(request: EngineRequest): Promise<'forward' | 'hold'> {
  const start = /^POST \/(?:v[\d.]+\/)?containers\/([^/?]+)\/start/.exec(request.line);
  if (!start || !stallNames) return 'forward';
  const name = (await docker.getContainer(start[1]!).inspect()).Name;
  if (!stallNames.test(name)) return 'forward';
  stalled.push(start[1]!);
  return 'hold';
}

beforeAll(async () => {
  proxy = await startEngineProxy(proxySocket, decide);
  config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { 'python3.11': inject('baseImage') } }, {});
  index = createIndex({ path: join(dir, 'index') });
  probe = createImageProbe(docker, { logger });
  cache = createImageCache({ docker, index, leases: createLeaseTable(), runtimes: createRuntimeResolver(docker, config), config, logger, probe });
});

afterAll(async () => {
  await proxy?.close();
  await cache?.close();
  await probe?.close();
  await index?.close();
  await removeAccountImages(account);
});

describe('an engine call that never answers', () => {
  it.each([
    ['the run container', /^\/rgrid-run-/, 'starting the run container got no answer', { run_holder_pool_size: 2 }],
    ['its outputs holder (made at the run)', /^\/rgrid-hold-/, 'starting an outputs holder got no answer', { run_holder_pool_size: 0 }],
  ] as const)('a start of %s that never answers fails the run as engine_unavailable, and nothing is left', async (_what, names, message, settings) => {
    const proxied = proxy.docker();
    const baseImageId = (await docker.getImage(inject('baseImage')).inspect()).Id;
    const runner = createRunner({
      docker: proxied, cache, probe, config: { ...config, ...settings, run_hot_containers: 0 }, agentId: index.agentId, logger,
      ...(settings.run_holder_pool_size > 0 ? { holderImage: () => Promise.resolve(baseImageId) } : {}), engineStepTimeoutMs: 1500,
    });
    try {
      const prepared = await runner.prepare({ script: Buffer.from(nonceScript('print("never")')), account, inputs: [] });
      stalled.length = 0;
      stallNames = names;
      await expect(runner.run(prepared, { onEvent: () => undefined })).rejects.toMatchObject({ code: 'engine_unavailable', message: expect.stringContaining(message) as unknown });
      expect(stalled).toHaveLength(1);
      expect(runner.stats().active).toBe(0);
      // The container whose start never answered was never started: the run's clean-up removes it.
      await until(() => runner.stats().cleaning === 0, 'the run\'s clean-up');
      await until(async () => (await docker.listContainers({ all: true, filters: { id: [stalled[0]!] } })).length === 0, 'the held container removed');
      expect(await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`, 'io.rgrid.role=run'] } })).toEqual([]);
    } finally {
      stallNames = undefined;
      await runner.close();
    }
  });
});
