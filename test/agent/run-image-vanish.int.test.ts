/**
 * The cached run path's start race against a real engine (agent/runner/run.ts, `createRunContainer`): an
 * image the cache answered as a hit (from the engine's image events, agent/builder/image-probe.ts) can be
 * deleted behind the agent's back before the run container's create, whose answer is then "no such image".
 * The runner tells the probe, ensures the image again (a rebuild) and the run succeeds — once: a second
 * "no such image" in a row is an engine error, with the run's leases released.
 *
 * The window is opened on purpose and deterministically: the runner is wired as the daemon wires it, its
 * engine calls through a pass-through proxy on a unix socket. Every request goes through as it is, except
 * the create of a run container (`rgrid-run-…`, not a hot container made ahead) whose image is the one the
 * index holds for the armed key: before forwarding it, the proxy deletes that image through the real engine,
 * forced as an operator's `docker rmi -f` would (the engine deletes it while only created containers, such
 * as a hot container, refer to it), and checks it is gone. The create then meets the engine's own answer.
 * The cache and its probe talk to the engine directly, as in the daemon; the probe follows the real events.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createImageCache, type CacheObserver, type ManagedImageCache } from '../../agent/builder/image-cache.js';
import { createImageProbe, type ImageProbe } from '../../agent/builder/image-probe.js';
import { createRuntimeResolver } from '../../agent/builder/runtimes.js';
import { resolveConfig, type AgentConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable, type LeaseTable } from '../../agent/index/leases.js';
import type { EntryRef } from '../../agent/index/types.js';
import { POOL_LABEL } from '../../agent/runner/holder-pool.js';
import { HOT_LABEL } from '../../agent/runner/hot-containers.js';
import { createRunner, type Runner, type RunRequest, type RunResult } from '../../agent/runner/run.js';
import { startEngineProxy, type EngineProxy, type EngineRequest } from './engine-proxy.js';
import { docker, imageExists, nonceScript, removeAccountImages, tempDir, uniqueAccount, until } from './helpers.js';

const account = uniqueAccount('vanish');
const dir = tempDir('vanish');
const proxySocket = join(dir, 'engine.sock');
/** The runner's warnings, as JSON lines. */
const warnings: Array<Record<string, unknown>> = [];
const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line) as Record<string, unknown>) });
const VANISHED_WARNING = 'cached image vanished before its run started; ensuring it again';
/**
 * Outputs holders kept ready by the runners here: more than the default, so that the armed run is sure to
 * find one made ahead (from the base image). A run that finds none makes its holder from its own image, and
 * that holder runs before the create: the engine then refuses to delete the image even forced ("being used
 * by running container"), and no vanish can happen.
 */
const HOLDERS = 4;

let index: AgentIndex;
let leases: LeaseTable;
let probe: ImageProbe;
let cache: ManagedImageCache;
let config: AgentConfig;
let baseImageId: string;
let proxy: EngineProxy;
/** The cache's lookups and successful builds of script images. */
const counts = { hits: 0, misses: 0, builds: 0 };
const observer: CacheObserver = {
  lookup(kind, hit) {
    if (kind === 'image') counts[hit ? 'hits' : 'misses']++;
  },
  build(kind, ok) {
    if (kind === 'image' && ok) counts.builds++;
  },
};

/** The index key whose image the proxy deletes at the next `times` run-container creates naming it. */
let armed: { ref: EntryRef; times: number } | undefined;
/** Image IDs the proxy deleted (each checked gone from the engine before the create went on). */
const vanished: string[] = [];

/** A run container's create naming the armed entry's image: that image goes first, through the real engine. */
async function beforeCreate({ line, body }: EngineRequest): Promise<'forward'> {
  if (!/^POST \/(?:v[\d.]+\/)?containers\/create[?\s]/.test(line) || !armed || armed.times <= 0) return 'forward';
  // Its name, labels and image decide: the proxy hands over the whole body of a request with a length.
  if (!body) throw new Error(`a create without Content-Length: ${line}`);
  const query = new URLSearchParams(line.split(' ')[1]?.split('?')[1] ?? '');
  const spec = JSON.parse(body.toString('utf8')) as { Image?: string; Labels?: Record<string, string> };
  const labels = spec.Labels ?? {};
  if (!query.get('name')?.startsWith('rgrid-run-') || labels['io.rgrid.role'] !== 'run' || HOT_LABEL in labels) return 'forward';
  const cached = index.get(armed.ref)?.image_id;
  if (!cached || spec.Image !== cached) return 'forward';
  armed.times--;
  await docker.getImage(cached).remove({ force: true });
  if (await imageExists(cached)) throw new Error(`${cached} still in the engine after its forced delete`);
  vanished.push(cached);
  return 'forward';
}

/** A runner wired as the daemon wires it (outputs holders from the runtime's base image), through the proxy. */
function makeRunner(settings: Partial<AgentConfig>): Runner {
  return createRunner({
    docker: proxy.docker(), cache, probe, config: { ...config, run_holder_pool_size: HOLDERS, ...settings }, agentId: index.agentId, logger, holderImage: () => Promise.resolve(baseImageId),
  });
}

async function run(runner: Runner, script: string, extra: Partial<RunRequest> = {}): Promise<{ result: RunResult; stdout: string }> {
  let stdout = '';
  const prepared = await runner.prepare({ script: Buffer.from(script), account, inputs: [], ...extra });
  const result = await runner.run(prepared, { onEvent: (e) => void (e.type === 'stdout' && (stdout += e.data)) });
  return { result, stdout };
}

const imageRef = (result: RunResult): EntryRef => ({ kind: 'image', account, key: result.image_key });
const vanishWarnings = (): Array<Record<string, unknown>> => warnings.filter((w) => w.msg === VANISHED_WARNING);
/** The agent's hot containers as the engine lists them (created, never started). */
const hotContainers = async (): Promise<Docker.ContainerInfo[]> =>
  (await docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${index.agentId}`, `${HOT_LABEL}=${index.agentId}`] } })).filter((c) => c.State === 'created');

/**
 * Waits until the armed run's create can meet a real vanish: no running container uses the image (an
 * earlier run's holder made from it may still be going away), and a holder is ready in the pool. The pool
 * is not visible from here, so the engine's running pool holders that no run or hot container mounts are
 * counted: besides the ready ones, they include at most one being made (the pool makes one at a time) and
 * the holders of this runner's finished runs still being removed — at most one here, as one run came before.
 */
async function readyToVanish(runner: Runner, imageId: string): Promise<void> {
  await until(() => runner.stats().cleaning === 0, 'the earlier run\'s clean-up');
  await until(async () => (await docker.listContainers({ filters: { ancestor: [imageId], status: ['running'] } })).length === 0, 'no running container of the image');
  await until(async () => {
    const holders = (await docker.listContainers({ filters: { label: [`${POOL_LABEL}=${index.agentId}`, 'io.rgrid.role=run-holder'], status: ['running'] } }))
      .filter((c) => c.ImageID === baseImageId);
    const runs = await docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${index.agentId}`, 'io.rgrid.role=run'] } });
    const taken = new Set(runs.flatMap((c) => c.Mounts.map((m) => m.Name)));
    return holders.filter((h) => !h.Mounts.some((m) => taken.has(m.Name))).length >= HOLDERS - 1;
  }, 'outputs holders made ahead');
}
const accountRunContainers = async (): Promise<Docker.ContainerInfo[]> =>
  docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`, 'io.rgrid.role=run'] } });

beforeAll(async () => {
  proxy = await startEngineProxy(proxySocket, beforeCreate);
  // The hot containers' disk check reads a file that says "10% used": whatever the host's disk, they are kept.
  writeFileSync(join(dir, 'disk.json'), JSON.stringify({ used_bytes: 10, total_bytes: 100 }));
  config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { 'python3.11': inject('baseImage') }, disk_usage_file: join(dir, 'disk.json') }, {});
  index = createIndex({ path: join(dir, 'index') });
  leases = createLeaseTable();
  probe = createImageProbe(docker, { logger });
  cache = createImageCache({ docker, index, leases, runtimes: createRuntimeResolver(docker, config), config, logger, observer, probe });
  baseImageId = (await docker.getImage(inject('baseImage')).inspect()).Id;
  // Hits answered from the events, as in the daemon: the probe cannot have heard of a deletion at the create.
  await until(() => probe.stats().live, 'the image events to be followed');
});

afterEach(() => {
  armed = undefined;
  expect(proxy.errors).toEqual([]);
});

afterAll(async () => {
  await proxy?.close();
  await cache?.close();
  await probe?.close();
  await index?.close();
  await removeAccountImages(account);
});

describe('an image deleted between its hit and the run container\'s create', () => {
  it('a warm run whose image vanishes at the create: the image is rebuilt once and the run succeeds', async () => {
    // No hot containers: the second run must create its container (a hot one taken skips the create).
    const runner = makeRunner({ run_hot_containers: 0 });
    try {
      const script = nonceScript('print("warm after a vanish")');
      const first = await run(runner, script);
      expect(first.result).toMatchObject({ exit_code: 0, built: true });
      const ref = imageRef(first.result);
      const imageId = first.result.image_id;
      const before = { ...counts };
      const warned = vanishWarnings().length;

      await readyToVanish(runner, imageId);
      armed = { ref, times: 1 };
      const second = await run(runner, script);
      // The first ensure was a hit (the probe still had the image), the create met "no such image".
      expect(counts.hits - before.hits).toBe(1);
      expect(vanished).toEqual([imageId]);
      // The run went on, in a rebuilt image: one build, no more.
      expect(second.result).toMatchObject({ exit_code: 0, built: true, script_cache_hit: false, image_origin: 'built', timed_out: false });
      expect(second.stdout).toBe('warm after a vanish\n');
      expect(second.result.phases.hot).toBe(false);
      expect(counts.builds - before.builds).toBe(1);
      expect(counts.misses - before.misses).toBe(1);
      expect(second.result.image_id).not.toBe(imageId);
      expect(await imageExists(imageId)).toBe(false);
      expect(await imageExists(second.result.image_id)).toBe(true);
      // The index now names the rebuilt image, which the engine has.
      expect(index.get(ref)?.image_id).toBe(second.result.image_id);
      expect(vanishWarnings().slice(warned)).toEqual([expect.objectContaining({ level: 40, image_id: imageId, image_key: ref.key })]);
      expect(leases.size).toBe(0);

      // And the next run is a plain hit on it.
      const third = await run(runner, script);
      expect(third.result).toMatchObject({ exit_code: 0, built: false, script_cache_hit: true, image_id: second.result.image_id });
      expect(vanished).toHaveLength(1);
    } finally {
      await runner.close();
      vanished.length = 0;
    }
  });

  it('deleted again at the retry\'s create: the run fails with an engine error, its leases released, nothing left', async () => {
    const runner = makeRunner({ run_hot_containers: 0 });
    try {
      const script = nonceScript('print("vanishes twice")');
      const first = await run(runner, script);
      expect(first.result).toMatchObject({ exit_code: 0, built: true });
      const ref = imageRef(first.result);
      const before = { ...counts };
      const warned = vanishWarnings().length;

      await readyToVanish(runner, first.result.image_id);
      armed = { ref, times: 2 };
      const prepared = await runner.prepare({ script: Buffer.from(script), account, inputs: [] });
      await expect(runner.run(prepared, { onEvent: () => undefined })).rejects.toMatchObject({
        name: 'RgridError', code: 'engine_unavailable', message: 'Docker engine: creating the run container failed (HTTP 404)',
      });
      // Both creates met "no such image": the hit's image, then the rebuilt one — one rebuild, no loop.
      expect(vanished).toHaveLength(2);
      expect(vanished[0]).toBe(first.result.image_id);
      expect(vanished[1]).not.toBe(first.result.image_id);
      expect(counts.builds - before.builds).toBe(1);
      expect(vanishWarnings().slice(warned)).toHaveLength(1);
      // Nothing is held: no lease, no active run, no run container once the clean-up settled.
      expect(leases.size).toBe(0);
      expect(leases.list()).toEqual([]);
      expect(runner.stats().active).toBe(0);
      await until(() => runner.stats().cleaning === 0, 'the run\'s clean-up');
      expect(await accountRunContainers()).toEqual([]);

      // The agent is not left broken: the next run (nothing deleted) rebuilds and succeeds.
      const next = await run(runner, script);
      expect(next.result).toMatchObject({ exit_code: 0, built: true });
      expect(next.stdout).toBe('vanishes twice\n');
      expect(await imageExists(next.result.image_id)).toBe(true);
      expect(index.get(ref)?.image_id).toBe(next.result.image_id);
      expect(leases.size).toBe(0);
    } finally {
      await runner.close();
      vanished.length = 0;
    }
  });

  it('with hot containers on: the one made for the vanished image is dropped, never used, and none is left for a missing image', async () => {
    expect(config.run_hot_containers).toBe(2); // the default: hot containers on
    const runner = makeRunner({});
    try {
      const script = nonceScript('print("hot after a vanish")');
      const first = await run(runner, script);
      expect(first.result).toMatchObject({ exit_code: 0, built: true });
      const ref = imageRef(first.result);
      const imageId = first.result.image_id;
      // A hot container is made ahead for the first run's settings and image.
      await until(async () => (await hotContainers()).some((c) => c.ImageID === imageId), 'a hot container for the image');
      const madeAhead = (await hotContainers()).filter((c) => c.ImageID === imageId).map((c) => c.Id);
      expect(madeAhead).toHaveLength(1);

      // Other limits: no hot container matches, so this run creates its container — and meets the vanish.
      await readyToVanish(runner, imageId);
      armed = { ref, times: 1 };
      const second = await run(runner, script, { memory_mb: 200 });
      expect(vanished).toEqual([imageId]);
      expect(second.result).toMatchObject({ exit_code: 0, built: true });
      expect(second.stdout).toBe('hot after a vanish\n');
      expect(second.result.phases.hot).toBe(false);
      const rebuilt = second.result.image_id;
      expect(rebuilt).not.toBe(imageId);

      // The container made ahead for the deleted image is removed from the engine.
      await until(async () => (await docker.listContainers({ all: true, filters: { id: madeAhead } })).length === 0, 'the vanished image\'s hot container removed');

      // The first run's settings again: a hit on the rebuilt image, in a container created for it.
      const third = await run(runner, script);
      expect(third.result).toMatchObject({ exit_code: 0, built: false, script_cache_hit: true, image_id: rebuilt });
      expect(third.result.phases.hot).toBe(false);
      expect(third.stdout).toBe('hot after a vanish\n');

      // Hot containers are made for the rebuilt image (the vanished run's settings included), none for a
      // missing one.
      await until(() => runner.stats().cleaning === 0, 'the runs\' clean-ups');
      await until(async () => (await hotContainers()).filter((c) => c.ImageID === rebuilt).length === 2, 'hot containers for the rebuilt image');
      const left = await hotContainers();
      expect(left.map((c) => c.Id)).not.toContain(madeAhead[0]);
      for (const c of left) expect(await imageExists(c.ImageID)).toBe(true);
      expect(left.some((c) => c.ImageID === imageId)).toBe(false);

      // The vanished run's own settings now find theirs ready, made for the rebuilt image.
      const fourth = await run(runner, script, { memory_mb: 200 });
      expect(fourth.result).toMatchObject({ exit_code: 0, image_id: rebuilt });
      expect(fourth.result.phases.hot).toBe(true);
      expect(vanished).toHaveLength(1);
      expect(leases.size).toBe(0);
    } finally {
      await runner.close();
      vanished.length = 0;
    }
    // None outlives the runner.
    expect(await hotContainers()).toEqual([]);
  });
});
