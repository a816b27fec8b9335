import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cli, cliJson, docker, imageExists, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';

// ensure against the real engine through the real CLI.
interface EnsureJson {
  image_id: string;
  image_key: string;
  deps_key: string | null;
  script_sha256: string;
  requirements_sha256: string | null;
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  built: boolean;
  duration_ms: number;
}

describe('rgrid-agent ensure against a real Docker engine', () => {
  const account = uniqueAccount('ensure');
  const dir = tempDir('ensure');
  let agent: AgentProcess;
  let files: Record<string, string>;
  const ensure = (script: string, requirements?: string, extra: string[] = []): Promise<EnsureJson> =>
    cliJson<EnsureJson>(['ensure', '--script', files[script]!, ...(requirements ? ['--requirements', files[requirements]!] : []), '--account', account, ...extra], agent.socket);
  const ls = async (): Promise<unknown[]> => cliJson<unknown[]>(['ls', '--account', account], agent.socket);

  beforeAll(async () => {
    const wheelhouse = createWheelhouse([
      { name: 'rgtest-alpha', version: '1.0' },
      { name: 'rgtest-alpha', version: '1.1' },
      { name: 'rgtest-beta', version: '2.0', requires: ['rgtest-alpha'] },
    ], tempDir('wheels'));
    files = writeFiles(dir, {
      'a.py': nonceScript('import rgtest_alpha\nprint(rgtest_alpha.VERSION)'),
      'b.py': nonceScript('import rgtest_beta\nprint(rgtest_beta.VERSION)'),
      'c.py': nonceScript('print("concurrent")'),
      // The same set written three ways: canonical requirements are equal (live).
      'r1.txt': 'rgtest-alpha==1.0\nrgtest-beta==2.0\n',
      'r1-variant.txt': '# deps\nRGTest_Beta == 2.0   # beta\n\nrgtest.alpha==1.0\n',
      'r2.txt': 'rgtest-alpha==1.1\nrgtest-beta==2.0\n',
      'include.txt': 'rgtest-alpha==1.0\n-r other.txt\n',
      'latin1.txt': Buffer.from([0x72, 0x67, 0x74, 0x65, 0x73, 0x74, 0xe9, 0x0a]),
      'missing-dist.txt': 'rgtest-not-in-wheelhouse==9.9\n',
    });
    agent = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  let first: EnsureJson;

  it('1: ensure twice — the first builds, the second is a hit with the same image', async () => {
    first = await ensure('a.py', 'r1.txt');
    expect(first).toMatchObject({ script_cache_hit: false, dependency_cache_hit: false, built: true });
    expect(first.deps_key).toMatch(/^[0-9a-f]{64}$/);
    const second = await ensure('a.py', 'r1.txt');
    expect(second).toMatchObject({ script_cache_hit: true, dependency_cache_hit: true, built: false, image_id: first.image_id });
    expect(second.image_key).toBe(first.image_key);
    // The entry records both uses, durably in the index.
    const entries = (await ls()) as Array<{ key: string; use_count: number; kind: string }>;
    expect(entries.find((e) => e.key === first.image_key)?.use_count).toBe(2);
    // Labels carry every key, so the index could be rebuilt from the engine.
    const labels = (await docker.getImage(first.image_id).inspect()).Config.Labels;
    expect(labels).toMatchObject({
      'io.rgrid.kind': 'image',
      'io.rgrid.image-key': first.image_key,
      'io.rgrid.deps-key': first.deps_key,
      'io.rgrid.script-sha256': first.script_sha256,
      'io.rgrid.requirements-sha256': first.requirements_sha256,
      'io.rgrid.runtime': 'python3.11',
      'io.rgrid.account': account,
    });
  });

  it('8 (live): another spelling of the same requirements is the same key and a hit', async () => {
    const variant = await ensure('a.py', 'r1-variant.txt');
    expect(variant).toMatchObject({ script_cache_hit: true, built: false, image_id: first.image_id, requirements_sha256: first.requirements_sha256 });
  });

  it('2: a new script with the same requirements reuses the dependency layer (no pip install)', async () => {
    const res = await cli(['ensure', '--script', files['b.py']!, '--requirements', files['r1.txt']!, '--account', account, '--json', '--progress'], agent.socket);
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout) as EnsureJson;
    expect(out).toMatchObject({ script_cache_hit: false, dependency_cache_hit: true, built: true, deps_key: first.deps_key });
    expect(res.stderr).toContain('[image]');
    expect(res.stderr).not.toContain('[deps]');
    expect(res.stderr).not.toMatch(/pip install|Successfully installed/);
    // The script image is built FROM the deps image: the deps layer is a parent.
    const depsEntry = ((await ls()) as Array<{ kind: string; key: string; image_id: string }>).find((e) => e.kind === 'deps' && e.key === first.deps_key)!;
    const history = (await docker.getImage(out.image_id).history()) as Array<{ Id: string }>;
    expect(history.map((h) => h.Id)).toContain(depsEntry.image_id);
  });

  let changed: EnsureJson;

  it('3: changed requirements miss both caches; reverting them hits again', async () => {
    changed = await ensure('a.py', 'r2.txt');
    expect(changed).toMatchObject({ script_cache_hit: false, dependency_cache_hit: false, built: true });
    expect(changed.image_key).not.toBe(first.image_key);
    expect(changed.deps_key).not.toBe(first.deps_key);
    const reverted = await ensure('a.py', 'r1.txt');
    expect(reverted).toMatchObject({ script_cache_hit: true, built: false, image_id: first.image_id });
  });

  it('4: 100 concurrent ensures of one new key — exactly one build, one image ID', async () => {
    const clients = Array.from({ length: 100 }, () => new AgentClient(agent.socket));
    try {
      const script = Buffer.from(nonceScript('print("one build for all")'));
      const requirements = Buffer.from('rgtest-alpha==1.0\nrgtest-beta==2.0\n');
      const results = await Promise.all(clients.map((c) => c.ensure({ script, requirements, account })));
      expect(results.filter((r) => r.built === true).length).toBe(1);
      expect(new Set(results.map((r) => r.image_id)).size).toBe(1);
      expect(results.every((r) => r.dependency_cache_hit === true)).toBe(true);
      const entry = ((await ls()) as Array<{ key: string; use_count: number }>).find((e) => e.key === results[0]!.image_key);
      expect(entry?.use_count).toBe(100);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('5: docker rmi of a cached image turns the next ensure into a miss and a rebuild (exit 0)', async () => {
    const before = await ensure('a.py', 'r1.txt');
    execFileSync('docker', ['rmi', before.image_id], { stdio: 'ignore' });
    expect(await imageExists(before.image_id)).toBe(false);
    const healed = await ensure('a.py', 'r1.txt');
    expect(healed).toMatchObject({ script_cache_hit: false, dependency_cache_hit: true, built: true, image_key: before.image_key });
    expect(healed.image_id).not.toBe(before.image_id);
    expect(await imageExists(healed.image_id)).toBe(true);
    expect(await ensure('a.py', 'r1.txt')).toMatchObject({ script_cache_hit: true, image_id: healed.image_id });
  });

  it('5: a vanished dependency layer is rebuilt too', async () => {
    const entries = (await ls()) as Array<{ kind: string; key: string; image_id: string }>;
    const depsImage = entries.find((e) => e.kind === 'deps' && e.key === changed.deps_key)!.image_id;
    execFileSync('docker', ['rmi', changed.image_id], { stdio: 'ignore' });
    execFileSync('docker', ['rmi', depsImage], { stdio: 'ignore' });
    const healed = await ensure('a.py', 'r2.txt');
    expect(healed).toMatchObject({ script_cache_hit: false, dependency_cache_hit: false, built: true, deps_key: changed.deps_key });
    const after = (await ls()) as Array<{ kind: string; key: string; image_id: string }>;
    expect(await imageExists(after.find((e) => e.kind === 'deps' && e.key === changed.deps_key)!.image_id)).toBe(true);
  });

  describe('7: bad input gives one line on stderr, a non-zero exit, and stores nothing', () => {
    const cases: Array<[string, () => string[], RegExp]> = [
      ['unknown runtime', () => ['--script', files['a.py']!, '--runtime', 'python2.7'], /^rgrid-agent: unknown_runtime: .*python2\.7/],
      ['unreproducible requirement line', () => ['--script', files['a.py']!, '--requirements', files['include.txt']!], /^rgrid-agent: bad_requirements: .*line 2 "-r other\.txt"/],
      ['non-UTF-8 requirements', () => ['--script', files['a.py']!, '--requirements', files['latin1.txt']!], /^rgrid-agent: bad_requirements: .*UTF-8/],
      ['missing script file', () => ['--script', join(dir, 'nope.py')], /^rgrid-agent: bad_request: cannot read script .*ENOENT/],
      ['missing requirements file', () => ['--script', files['a.py']!, '--requirements', join(dir, 'nope.txt')], /^rgrid-agent: bad_request: cannot read requirements/],
      ['pip failure', () => ['--script', files['a.py']!, '--requirements', files['missing-dist.txt']!], /^rgrid-agent: build_failed: .*No matching distribution found for rgtest-not-in-wheelhouse/],
    ];

    it.each(cases)('%s', async (_name, args, message) => {
      const entriesBefore = await ls();
      const imagesBefore = (await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } })).map((i) => i.Id).sort();
      const res = await cli(['ensure', ...args(), '--account', account], agent.socket);
      expect(res.code).not.toBe(0);
      expect(res.stdout).toBe('');
      expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(res.stderr).toMatch(message);
      expect(await ls()).toEqual(entriesBefore);
      const imagesAfter = (await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } })).map((i) => i.Id).sort();
      expect(imagesAfter).toEqual(imagesBefore);
    });

    it('a pip failure carries the tail of pip output in --json detail and leaves no build leftovers', async () => {
      const res = await cli(['ensure', '--script', files['a.py']!, '--requirements', files['missing-dist.txt']!, '--account', account, '--json'], agent.socket);
      expect(res.code).toBe(1);
      const body = JSON.parse(res.stdout) as { error: string; detail: { output_tail: string[] } };
      expect(body.error).toBe('build_failed');
      expect(body.detail.output_tail.length).toBeGreaterThan(0);
      expect(body.detail.output_tail.length).toBeLessThanOrEqual(20);
      expect(body.detail.output_tail.join('\n')).toContain('No matching distribution');
      const agentId = String((await agent.client.health()).agent_id);
      expect(await docker.listImages({ all: true, filters: { label: [`io.rgrid.agent=${agentId}`] } })).toEqual([]);
      expect(await docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${agentId}`] } })).toEqual([]);
    });
  });
});
