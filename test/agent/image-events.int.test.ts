/**
 * Hits answered from the engine's image events (agent/builder/image-probe.ts) against a real Docker
 * engine, with the cache and the runner wired in-process as the daemon wires them:
 *  - a deletion behind the agent's back reaches the set through the event stream: the next ensure
 *    rebuilds without asking the engine (the old probe asked on every hit);
 *  - the start race: an image deleted after a hit and before its container is created turns into a
 *    rebuild and a successful run, never an error (the old runner failed the run with engine_unavailable).
 *    The window is opened on purpose: the image is really deleted through the engine, and the probe the
 *    cache sees still answers "present" for it once, as the event set does until the deletion's event
 *    arrives;
 *  - before the stream is followed (or without it) every question goes to the engine.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createImageCache, type ManagedImageCache } from '../../agent/builder/image-cache.js';
import { createImageProbe, type ImageProbe } from '../../agent/builder/image-probe.js';
import { createRuntimeResolver } from '../../agent/builder/runtimes.js';
import { resolveConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import { createRunner, type Runner } from '../../agent/runner/run.js';
import { docker, imageExists, nonceScript, removeAccountImages, tempDir, uniqueAccount, until } from './helpers.js';

const logger = pino({ level: 'silent' });
const account = uniqueAccount('events');
const dir = tempDir('image-events');
let index: AgentIndex;
let probe: ImageProbe;
/** IDs the cache's probe still calls present (the event of their deletion "not yet arrived"). */
const stale = new Set<string>();
let cache: ManagedImageCache;
/** One runner with outputs holders made ahead (as the daemon runs), one that makes them at each run. */
const runners: Record<string, Runner> = {};


beforeAll(async () => {
  const config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { 'python3.11': inject('baseImage') } }, {});
  index = createIndex({ path: join(dir, 'index') });
  probe = createImageProbe(docker, { logger });
  const cacheProbe: ImageProbe = {
    ...probe,
    exists: (id) => (stale.has(id) ? Promise.resolve(true) : probe.exists(id)),
    forget(id) {
      stale.delete(id);
      probe.forget(id);
    },
  };
  cache = createImageCache({ docker, index, leases: createLeaseTable(), runtimes: createRuntimeResolver(docker, config), config, logger, probe: cacheProbe });
  const baseImageId = (await docker.getImage(inject('baseImage')).inspect()).Id;
  runners['made ahead'] = createRunner({ docker, cache, probe: cacheProbe, config, agentId: index.agentId, logger, holderImage: () => Promise.resolve(baseImageId) });
  runners['made at the run'] = createRunner({ docker, cache, probe: cacheProbe, config: { ...config, run_holder_pool_size: 0 }, agentId: index.agentId, logger });
  await until(() => probe.stats().live, 'the image events to be followed');
});

afterAll(async () => {
  for (const runner of Object.values(runners)) await runner.close();
  await cache?.close();
  await probe?.close();
  await index?.close();
  await removeAccountImages(account);
});

const ensure = async (script: string) => (await cache.ensure(await cache.prepare({ script: Buffer.from(script), account }))).result;

describe('image presence from the engine\'s events', () => {
  it('a deletion behind the agent\'s back: the next ensure rebuilds without asking the engine', async () => {
    const script = nonceScript('print("events")');
    const built = await ensure(script);
    expect(built.built).toBe(true);
    // The first hit learns the new ID (an untagged build emits no event); later hits ask nothing.
    expect((await ensure(script)).script_cache_hit).toBe(true);
    const checks = probe.stats().engine_checks;
    expect((await ensure(script)).script_cache_hit).toBe(true);
    expect(probe.stats().engine_checks).toBe(checks);

    await docker.getImage(built.image_id).remove({ force: true });
    // Until the deletion's event arrives the entry is still a hit (the run path covers that window).
    let rebuilt = await ensure(script);
    await until(async () => {
      if (!rebuilt.built) rebuilt = await ensure(script);
      return rebuilt.built;
    }, 'a rebuild after the deletion');
    expect(rebuilt.script_cache_hit).toBe(false);
    expect(rebuilt.image_id).not.toBe(built.image_id);
    expect(await imageExists(rebuilt.image_id)).toBe(true);
    expect(probe.stats().engine_checks).toBe(checks);
  });

  it.each(['made ahead', 'made at the run'])('the start race (outputs holder %s): deleted between the hit and the container create → rebuilt, and the run succeeds', async (which) => {
    const runner = runners[which]!;
    const script = nonceScript('print("raced")');
    const first = await ensure(script);
    expect(first.built).toBe(true);
    stale.add(first.image_id);
    await docker.getImage(first.image_id).remove({ force: true });
    expect(await imageExists(first.image_id)).toBe(false);

    let stdout = '';
    const prepared = await runner.prepare({ script: Buffer.from(script), account, inputs: [] });
    const result = await runner.run(prepared, { onEvent: (e) => void (e.type === 'stdout' && (stdout += e.data)) });
    expect(result.exit_code).toBe(0);
    expect(stdout).toBe('raced\n');
    expect(result.built).toBe(true);
    expect(result.image_id).not.toBe(first.image_id);
    // The probe took the runner's word: the stale answer is gone, and the new image is the entry.
    expect(stale.has(first.image_id)).toBe(false);
    expect((await ensure(script)).image_id).toBe(result.image_id);
  });

  it('without the event stream, every question goes to the engine, with the engine\'s answer', async () => {
    const asking = createImageProbe(docker, { watch: false });
    try {
      const base = (await docker.getImage(inject('baseImage')).inspect()).Id;
      expect(await asking.exists(base)).toBe(true);
      expect(await asking.exists(`sha256:${'0'.repeat(64)}`)).toBe(false);
      expect(await asking.exists(base)).toBe(true);
      expect(asking.stats()).toMatchObject({ live: false, engine_checks: 3 });
    } finally {
      await asking.close();
    }
  });
});
