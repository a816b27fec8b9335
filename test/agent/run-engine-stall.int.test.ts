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
import { Agent } from 'node:http';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import Docker from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createImageCache, type ManagedImageCache } from '../../agent/builder/image-cache.js';
import { createImageProbe, type ImageProbe } from '../../agent/builder/image-probe.js';
import { createRuntimeResolver } from '../../agent/builder/runtimes.js';
import { resolveConfig, type AgentConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import { createRunner } from '../../agent/runner/run.js';
import { docker, nonceScript, removeAccountImages, tempDir, uniqueAccount } from './helpers.js';

const logger = pino({ level: 'silent' });
const account = uniqueAccount('stall');
const dir = tempDir('stall');
// dockerode's default names the socket through a function (docker-modem's findDefaultUnixSocket), not a path.
const modemSocket = (docker.modem as { socketPath?: unknown }).socketPath;
const engineSocket = typeof modemSocket === 'string' ? modemSocket : '/var/run/docker.sock';
const proxySocket = join(dir, 'engine.sock');
let index: AgentIndex;
let probe: ImageProbe;
let cache: ManagedImageCache;
let config: AgentConfig;
let proxy: Server;
/** Names (as the engine has them: `/rgrid-…`) whose start the proxy holds; the held starts' container IDs. */
let stallNames: RegExp | undefined;
const stalled: string[] = [];
const held = new Set<Socket>();
const connections = new Set<Socket>();

/**
 * Each connection carries one request (the runner's client below keeps none alive): its first line
 * decides. Every connection is kept, to be closed at the end.
 */
function startProxy(): Promise<Server> {
  const server = createServer((client) => {
    connections.add(client);
    client.on('close', () => connections.delete(client));
    let buffered = Buffer.alloc(0);
    let decided = false;
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      if (decided || !buffered.includes('\r\n')) return;
      decided = true;
      client.pause();
      void decide(buffered.subarray(0, buffered.indexOf('\r\n')).toString()).then((stall) => {
        client.off('data', onData);
        if (stall) {
          held.add(client);
          return;
        }
        const upstream = connect(engineSocket, () => {
          upstream.write(buffered);
          client.pipe(upstream).pipe(client);
          client.resume();
        });
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        client.on('close', () => upstream.destroy());
      });
    };
    client.on('data', onData);
  });
  return new Promise((resolve) => server.listen(proxySocket, () => resolve(server)));
}

async function decide(requestLine: string): Promise<boolean> {
  const start = /^POST \/(?:v[\d.]+\/)?containers\/([^/?]+)\/start/.exec(requestLine);
  if (!start || !stallNames) return false;
  const name = (await docker.getContainer(start[1]!).inspect()).Name;
  if (!stallNames.test(name)) return false;
  stalled.push(start[1]!);
  return true;
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting: ${what}`);
}

beforeAll(async () => {
  proxy = await startProxy();
  config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { 'python3.11': inject('baseImage') } }, {});
  index = createIndex({ path: join(dir, 'index') });
  probe = createImageProbe(docker, { logger });
  cache = createImageCache({ docker, index, leases: createLeaseTable(), runtimes: createRuntimeResolver(docker, config), config, logger, probe });
});

afterAll(async () => {
  for (const socket of connections) socket.destroy();
  await new Promise((r) => proxy?.close(r));
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
    const proxied = new Docker({ socketPath: proxySocket, agent: new Agent({ keepAlive: false }) } as Docker.DockerOptions);
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
