import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentMetrics } from '../../tools/harness/processes.js';
import { createWheelhouse, makeWheel } from '../../tools/wheelhouse/wheelhouse.js';
import { cli, cliJson, docker, imageExists, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';
import { startLocalIndex, type LocalIndex } from './local-index.js';

/**
 * "Never stale" against the real engine: requirements are resolved to a lock, the dependency layer is
 * keyed on the lock, and a resolution older than resolve_ttl (2 s here) is refreshed in the background.
 */
interface EnsureJson {
  image_id: string;
  image_key: string;
  deps_key: string | null;
  requirements_sha256: string | null;
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: 'locked' | 'cached' | 'resolved' | 'stale' | null;
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  built: boolean;
}

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The agent's count of resolutions with this outcome (0 before the first). */
async function resolutions(socket: string, outcome: string): Promise<number> {
  const text = await agentMetrics(socket);
  const line = text.split('\n').find((l) => l.startsWith(`rgrid_agent_resolutions_total{`) && l.includes(`outcome="${outcome}"`));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** Polls until the agent's resolution counter for `outcome` exceeds `before` (a background refresh finished). */
async function awaitResolution(socket: string, outcome: string, before: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await resolutions(socket, outcome)) <= before) {
    if (Date.now() > deadline) throw new Error(`no ${outcome} resolution within 60 s`);
    await sleep(200);
  }
}

/** Polls until no resolution runs on the agent (its gauge). */
async function awaitNoResolution(socket: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const line = (await agentMetrics(socket)).split('\n').find((l) => l.startsWith('rgrid_agent_resolutions_running '));
    if (line === undefined) throw new Error('the agent has no rgrid_agent_resolutions_running gauge');
    if (Number(line.split(' ').pop()) === 0) return;
    if (Date.now() > deadline) throw new Error('a resolution still ran after 60 s');
    await sleep(200);
  }
}

describe('resolution and locks against a real Docker engine (resolve_ttl 2 s)', () => {
  const account = uniqueAccount('lock');
  const dir = tempDir('lock');
  const wheels = tempDir('lock-wheels');
  let agent: AgentProcess;
  let files: Record<string, string>;
  let wheel100: string;
  const ensure = (script: string, requirements: string, on: AgentProcess = agent): Promise<EnsureJson> =>
    cliJson<EnsureJson>(['ensure', '--script', files[script]!, '--requirements', files[requirements]!, '--account', account], on.socket);
  const run = (script: string, requirements: string): ReturnType<typeof cli> =>
    cli(['run', '--script', files[script]!, '--requirements', files[requirements]!, '--account', account], agent.socket);
  const depsEntries = async (): Promise<Array<{ key: string; image_id: string; lock_sha256: string | null }>> =>
    cliJson(['ls', '--account', account, '--kind', 'deps'], agent.socket);

  beforeAll(async () => {
    createWheelhouse([{ name: 'rgtest-fresh', version: '1.0.0' }, { name: 'rgtest-twin', version: '3.0', requires: ['rgtest-twin-dep'] }, { name: 'rgtest-twin-dep', version: '1.2' }], wheels);
    wheel100 = join(wheels, 'rgtest_fresh-1.0.0-py3-none-any.whl');
    files = writeFiles(dir, {
      'fresh.py': nonceScript('import rgtest_fresh\nprint("fresh", rgtest_fresh.VERSION)'),
      'twin.py': nonceScript('import rgtest_twin, rgtest_twin_dep\nprint("twin", rgtest_twin.VERSION, rgtest_twin_dep.VERSION)'),
      'unpinned.txt': 'rgtest-fresh\n',
      'twin.txt': 'rgtest-twin\n',
      'locked.txt': `rgtest-fresh==1.0.0 \\\n    --hash=sha256:${sha256(wheel100)}\n`,
      'bad-hash.txt': `rgtest-fresh==1.0.0 --hash=sha256:${'0'.repeat(64)}\n`,
    });
    agent = await startAgent({ dataDir: join(dir, 'data'), baseImage: inject('baseImage'), wheelhouse: wheels, args: ['--resolve-ttl', '2s'] });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
    rmSync(wheels, { recursive: true, force: true });
  });

  let first: EnsureJson;

  it('1: an unpinned requirement with only 1.0.0 available builds 1.0.0, resolution "resolved"', async () => {
    first = await ensure('fresh.py', 'unpinned.txt');
    expect(first).toMatchObject({ resolution: 'resolved', resolved: ['rgtest-fresh==1.0.0'], built: true, dependency_cache_hit: false });
    expect(first.lock_sha256).toMatch(/^[0-9a-f]{64}$/);
    // The lock is not the text the user wrote: it pins and hashes what was resolved.
    expect(first.lock_sha256).not.toBe(first.requirements_sha256);
    const ran = await run('fresh.py', 'unpinned.txt');
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toContain('fresh 1.0.0');
    // The entry and the image carry the lock; inspect shows the pins and writes pylock.toml.
    const entries = await depsEntries();
    expect(entries).toEqual([expect.objectContaining({ key: first.deps_key, lock_sha256: first.lock_sha256 })]);
    expect((await docker.getImage(entries[0]!.image_id).inspect()).Config.Labels['io.rgrid.lock-sha256']).toBe(first.lock_sha256);
    const pylock = join(dir, 'pylock.toml');
    const inspected = await cli(['inspect', first.deps_key!, '--account', account, '--pylock', pylock], agent.socket);
    expect(inspected.code, inspected.stderr).toBe(0);
    expect(inspected.stdout).toContain('rgtest-fresh==1.0.0');
    const toml = readFileSync(pylock, 'utf8');
    expect(toml).toContain('name = "rgtest-fresh"\nversion = "1.0.0"');
    expect(toml).toContain(`path = "${wheel100}"`);
    expect(toml).toContain(`sha256 = "${sha256(wheel100)}"`);
  });

  it('2: 1.1.0 on the index — within the window a hit on 1.0.0; after it a refresh, then 1.1.0 under a new key; 1.0.0 stays valid', async () => {
    // Start from a resolution made just now. Case 1 took longer than the window, so a refresh may be
    // running: let it end, let the window pass, and have the next hit refresh it (it finds 1.0.0 again).
    await awaitNoResolution(agent.socket);
    await sleep(2200);
    const refreshed = await resolutions(agent.socket, 'refreshed');
    expect((await ensure('fresh.py', 'unpinned.txt')).lock_sha256).toBe(first.lock_sha256);
    await awaitResolution(agent.socket, 'refreshed', refreshed);
    // 1.1.0 appears; a hit within the window (over the socket: well inside 2 s) still gets 1.0.0, as cached.
    const wheel110 = makeWheel(wheels, { name: 'rgtest-fresh', version: '1.1.0' });
    const cached = await agent.client.ensure({ script: readFileSync(files['fresh.py']!), requirements: readFileSync(files['unpinned.txt']!), account });
    expect(cached).toMatchObject({ resolution: 'cached', lock_sha256: first.lock_sha256, deps_key: first.deps_key, script_cache_hit: true, image_id: first.image_id });
    await sleep(2200);
    // Past the window: answered at once with the lock it has, while the refresh runs behind it.
    const changedBefore = await resolutions(agent.socket, 'changed');
    const served = await ensure('fresh.py', 'unpinned.txt');
    expect(served).toMatchObject({ resolution: 'cached', lock_sha256: first.lock_sha256, script_cache_hit: true, image_id: first.image_id });
    await awaitResolution(agent.socket, 'changed', changedBefore);
    const next = await ensure('fresh.py', 'unpinned.txt');
    expect(next).toMatchObject({ resolved: ['rgtest-fresh==1.1.0'], built: true, dependency_cache_hit: false });
    expect(next.lock_sha256).not.toBe(first.lock_sha256);
    expect(next.deps_key).not.toBe(first.deps_key);
    expect(next.resolved).toEqual(['rgtest-fresh==1.1.0']);
    // The new lock pins the new wheel by its own hash.
    const inspected = await cliJson<{ lock: { requirements_text: string } }>(['inspect', next.deps_key!, '--account', account, '--json'], agent.socket);
    expect(inspected.lock.requirements_text).toBe(`rgtest-fresh==1.1.0 --hash=sha256:${sha256(wheel110)}`);
    const ran = await run('fresh.py', 'unpinned.txt');
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toContain('fresh 1.1.0');
    expect(ran.stderr).not.toContain('fresh 1.0.0');
    // The 1.0.0 layer is still indexed and in the engine, for whoever still holds its lock.
    const entries = await depsEntries();
    const old = entries.find((e) => e.key === first.deps_key);
    expect(old?.lock_sha256).toBe(first.lock_sha256);
    expect(await imageExists(old!.image_id)).toBe(true);
    expect(entries.find((e) => e.key === next.deps_key)?.lock_sha256).toBe(next.lock_sha256);
  });

  it('3: a fully hashed lock file is "locked": no resolution runs, and it is the same lock as the resolved 1.0.0', async () => {
    const counts = await Promise.all(['resolved', 'refreshed', 'changed', 'failed'].map((o) => resolutions(agent.socket, o)));
    const locked = await ensure('fresh.py', 'locked.txt');
    expect(locked.resolution).toBe('locked');
    expect(locked.resolved).toEqual(['rgtest-fresh==1.0.0']);
    // A locked file is its own lock; its text equals the lock resolved in case 1, so the layer is reused.
    expect(locked.lock_sha256).toBe(locked.requirements_sha256);
    expect(locked.lock_sha256).toBe(first.lock_sha256);
    expect(locked).toMatchObject({ deps_key: first.deps_key, dependency_cache_hit: true });
    expect(await Promise.all(['resolved', 'refreshed', 'changed', 'failed'].map((o) => resolutions(agent.socket, o)))).toEqual(counts);
  });

  it('6: a locked file whose hash does not match the artifact fails the build clearly and stores nothing', async () => {
    const before = await depsEntries();
    const failed = await cli(['ensure', '--script', files['fresh.py']!, '--requirements', files['bad-hash.txt']!, '--account', account], agent.socket);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/build_failed/);
    expect(failed.stderr).toMatch(/hash/i);
    expect(await depsEntries()).toEqual(before);
    const tagged = await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`, 'io.rgrid.kind=deps'] } });
    expect(tagged.map((i) => i.Id).sort()).toEqual(before.map((e) => e.image_id).sort());
  });

  it('5: two workers resolving the same unpinned file at the same time get the same lock and key', async () => {
    const second = await startAgent({ dataDir: join(dir, 'data-2'), baseImage: inject('baseImage'), wheelhouse: wheels, args: ['--resolve-ttl', '2s'] });
    try {
      const [a, b] = await Promise.all([ensure('twin.py', 'twin.txt', agent), ensure('twin.py', 'twin.txt', second)]);
      expect(a.resolution).toBe('resolved');
      expect(b.resolution).toBe('resolved');
      expect(a.resolved).toEqual(['rgtest-twin-dep==1.2', 'rgtest-twin==3.0']);
      expect(b.lock_sha256).toBe(a.lock_sha256);
      expect(b.deps_key).toBe(a.deps_key);
      expect(b.image_key).toBe(a.image_key);
    } finally {
      await second.stop();
    }
  });
});

describe('resolution when the index goes away (a local index on 127.0.0.1, builds on network host)', () => {
  const account = uniqueAccount('stale');
  const dir = tempDir('stale');
  const wheels = tempDir('stale-wheels');
  let agent: AgentProcess;
  let index: LocalIndex;
  let files: Record<string, string>;

  beforeAll(async () => {
    createWheelhouse([{ name: 'rgtest-stale', version: '2.0' }], wheels);
    index = await startLocalIndex(wheels);
    files = writeFiles(dir, { 'stale.py': nonceScript('import rgtest_stale\nprint("stale", rgtest_stale.VERSION)'), 'req.txt': 'rgtest-stale>=1\n' });
    agent = await startAgent({
      dataDir: join(dir, 'data'), baseImage: inject('baseImage'),
      args: ['--resolve-ttl', '2s', '--pip-index-url', index.url, '--build-network', 'host'],
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await index?.stop().catch(() => undefined);
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
    rmSync(wheels, { recursive: true, force: true });
  });

  it('4: after a first resolution, runs keep succeeding on the last lock, marked "stale"', async () => {
    const ensure = (): Promise<EnsureJson> => cliJson<EnsureJson>(['ensure', '--script', files['stale.py']!, '--requirements', files['req.txt']!, '--account', account], agent.socket);
    const first = await ensure();
    expect(first).toMatchObject({ resolution: 'resolved', resolved: ['rgtest-stale==2.0'], built: true });
    expect(index.requests).toBeGreaterThan(0);
    await index.stop();
    await sleep(2200);
    const failedBefore = await resolutions(agent.socket, 'failed');
    // Past the window the lock is served at once; the refresh behind it cannot reach the index.
    const during = await ensure();
    expect(during).toMatchObject({ lock_sha256: first.lock_sha256, script_cache_hit: true });
    await awaitResolution(agent.socket, 'failed', failedBefore);
    for (let i = 0; i < 2; i++) {
      const stale = await ensure();
      expect(stale).toMatchObject({ resolution: 'stale', lock_sha256: first.lock_sha256, deps_key: first.deps_key, image_id: first.image_id, script_cache_hit: true });
    }
    const ran = await cli(['run', '--script', files['stale.py']!, '--requirements', files['req.txt']!, '--account', account], agent.socket);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toContain('stale 2.0');
  });
});
