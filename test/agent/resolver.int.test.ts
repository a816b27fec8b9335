import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { compileBuildPolicy, type BuildPolicy } from '../../agent/builder/build-policy.js';
import { wheelhouseFiles, type ContextFile } from '../../agent/builder/engine-build.js';
import { requirementsFileText } from '../../agent/builder/recipe.js';
import { createResolutionService } from '../../agent/builder/resolution.js';
import { resolveLabels, resolveLock } from '../../agent/builder/resolver.js';
import { resolveConfig, type AgentConfigInput } from '../../agent/config.js';
import { createIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import { createPruner } from '../../agent/prune/pruner.js';
import { pipSettingsFingerprint, requirementsDigest } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';
import type { Lock } from '../../common/lock.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { docker, tempDir } from './helpers.js';
import { makeSdist } from './sdist.js';

/**
 * The resolver against the real engine, the base image and pip: a local wheelhouse resolves an unpinned
 * file to the pinned, hashed set; pip's failures come back as build_failed with pip's own line; the dry
 * run gets the build policy's network and deadline (an sdist's metadata step runs package code).
 */
const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const logger = pino({ level: 'silent' });

describe('resolver against a real Docker engine', () => {
  const dir = tempDir('resolver');
  const agentId = `it-resolver-${process.pid}-${Date.now().toString(36)}`;
  let wheelhouse: string;
  let wheels: ContextFile[];
  let index: Server;
  let indexRequests: string[];
  let indexUrl: string;

  const policyOf = (extra: AgentConfigInput = {}): BuildPolicy =>
    compileBuildPolicy(resolveConfig({ socket: join(dir, 's'), data_dir: dir, pip_find_links: wheelhouse, ...extra }, {}));

  async function resolveText(text: string, policy: BuildPolicy, lines: string[] = []): Promise<Lock> {
    const requirements = requirementsDigest(text);
    return resolveLock(docker, {
      baseImageId: inject('baseImageId'),
      fileText: requirementsFileText(requirements.pipOptions, requirements.text),
      wheelhouse: policy.pip.findLinksDir ? wheels : [],
      policy,
      labels: resolveLabels(agentId, randomUUID()),
      signal: new AbortController().signal,
      deadline: AbortSignal.timeout(policy.limits.timeoutMs),
      onLine: (line) => lines.push(line),
      logger,
    });
  }

  const failureOf = (promise: Promise<unknown>): Promise<RgridError> =>
    promise.then(
      () => {
        throw new Error('expected the resolution to fail');
      },
      (err: unknown) => err as RgridError,
    );

  /** What the resolutions left in the engine: containers carrying this test's agent label. */
  const leftovers = async (): Promise<unknown[]> => docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${agentId}`] } });

  beforeAll(async () => {
    wheelhouse = createWheelhouse(
      [
        { name: 'rgtest-a', version: '1.0', requires: ['rgtest-b>=2'] },
        { name: 'rgtest-b', version: '1.0' },
        { name: 'rgtest-b', version: '2.0' },
        { name: 'rgtest-solo', version: '3.0' },
      ],
      tempDir('wheels-resolver'),
    );
    await makeSdist(wheelhouse, 'rgtest-sleepy', '1.0', 'sleep');
    wheels = await wheelhouseFiles(wheelhouse);
    // A package index on the host's loopback, serving the wheelhouse (PEP 503 simple pages).
    indexRequests = [];
    index = createServer((req, res) => {
      indexRequests.push(req.url ?? '');
      const page = /^\/simple\/([a-z0-9-]+)\/$/.exec(req.url ?? '');
      const file = /^\/files\/([A-Za-z0-9_.-]+)$/.exec(req.url ?? '');
      const files = readdirSync(wheelhouse);
      if (page) {
        const prefix = `${page[1]!.replace(/-/g, '_')}-`;
        const links = files.filter((f) => f.startsWith(prefix)).map((f) => `<a href="/files/${f}#sha256=${sha256(join(wheelhouse, f))}">${f}</a>`);
        res.writeHead(links.length ? 200 : 404, { 'content-type': 'text/html' }).end(`<html><body>${links.join('\n')}</body></html>`);
      } else if (file && files.includes(file[1]!)) {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(readFileSync(join(wheelhouse, file[1]!)));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => index.listen(0, '127.0.0.1', resolve));
    indexUrl = `http://127.0.0.1:${(index.address() as AddressInfo).port}/simple`;
  });

  afterAll(async () => {
    await new Promise((resolve) => index?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
    if (wheelhouse) rmSync(wheelhouse, { recursive: true, force: true });
  });

  it('resolves an unpinned file to the pinned, hashed set: the hashes are the wheel files\' sha256', async () => {
    const lines: string[] = [];
    const lock = await resolveText('rgtest-a\n', policyOf(), lines);
    const hashA = sha256(join(wheelhouse, 'rgtest_a-1.0-py3-none-any.whl'));
    const hashB = sha256(join(wheelhouse, 'rgtest_b-2.0-py3-none-any.whl'));
    expect(lock.resolved).toEqual(['rgtest-a==1.0', 'rgtest-b==2.0']);
    expect(lock.text).toBe(`rgtest-a==1.0 --hash=sha256:${hashA}\nrgtest-b==2.0 --hash=sha256:${hashB}`);
    expect(lock.sha256).toBe(createHash('sha256').update(lock.text).digest('hex'));
    expect(lock.fromFile).toBe(false);
    expect(lock.distributions.map((d) => d.artifact)).toEqual([
      { filename: 'rgtest_a-1.0-py3-none-any.whl', url: 'file:///tmp/rgrid-wheelhouse/rgtest_a-1.0-py3-none-any.whl' },
      { filename: 'rgtest_b-2.0-py3-none-any.whl', url: 'file:///tmp/rgrid-wheelhouse/rgtest_b-2.0-py3-none-any.whl' },
    ]);
    expect(lines[0]).toMatch(/^resolution container \(network none, 2048 MB, 1 CPUs, 512 processes, 900 s, user 65534:65534\): /);
    expect(await leftovers()).toEqual([]);
  });

  it('a missing distribution fails with pip\'s own verdict', async () => {
    const err = await failureOf(resolveText('rgtest-missing\n', policyOf()));
    expect(err).toBeInstanceOf(RgridError);
    expect(err.code).toBe('build_failed');
    expect(err.message).toMatch(/^resolution failed: ERROR: No matching distribution found for rgtest-missing \(exit 1\)$/);
    expect((err.detail?.output_tail as string[]).join('\n')).toMatch(/No matching distribution found for rgtest-missing/);
    expect(await leftovers()).toEqual([]);
  });

  describe('the build policy\'s network', () => {
    // The file names the index (the operator allows index options); only the network differs.
    const file = `--index-url ${'INDEX'}\nrgtest-solo\n`;

    it('host: the loopback index is reached and resolves (the control case)', async () => {
      indexRequests.length = 0;
      const lock = await resolveText(file.replace('INDEX', indexUrl), policyOf({ build_allow_index_options: true, build_network: 'host', pip_find_links: undefined }));
      expect(lock.resolved).toEqual(['rgtest-solo==3.0']);
      expect(lock.distributions[0]!.hashes).toEqual([`sha256:${sha256(join(wheelhouse, 'rgtest_solo-3.0-py3-none-any.whl'))}`]);
      expect(indexRequests).toContain('/simple/rgtest-solo/');
    });

    it('none: the same index is unreachable, and the index never hears from the resolver', async () => {
      indexRequests.length = 0;
      const err = await failureOf(resolveText(file.replace('INDEX', indexUrl), policyOf({ build_allow_index_options: true, pip_find_links: undefined })));
      expect(err.code).toBe('build_failed');
      expect(err.message).toMatch(/^resolution failed: ERROR: No matching distribution found for rgtest-solo/);
      expect((err.detail?.output_tail as string[]).join('\n')).toMatch(/Connection refused|NewConnectionError|Network is unreachable/);
      expect(indexRequests).toEqual([]);
      expect(await leftovers()).toEqual([]);
    });
  });

  it('an sdist whose metadata step sleeps is killed at the deadline', async () => {
    const err = await failureOf(resolveText('rgtest-sleepy\n', policyOf({ build_timeout_s: 8 })));
    expect(err.code).toBe('build_failed');
    expect(err.message).toBe('resolution stopped: it exceeded the build time limit of 8 s (build_timeout_s)');
    expect(err.detail?.limit).toBe('build_timeout_s');
    expect(await leftovers()).toEqual([]);
  });

  it('the service on the real resolver: resolved once, cached, kept across a reopen, and bounded by the prune pass', async () => {
    const indexDir = join(dir, 'index');
    const config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, pip_find_links: wheelhouse, prune_ttl_s: 60 }, {});
    const policy = compileBuildPolicy(config);
    const requirements = requirementsDigest('rgtest-a\n');
    const request = {
      account: 'it-resolver',
      runtime: { name: 'python3', image: inject('baseImage'), imageId: inject('baseImageId') },
      requirements,
      pipFingerprint: pipSettingsFingerprint(requirements.pipOptions, policy.fingerprintOptions),
      fileText: requirementsFileText(requirements.pipOptions, requirements.text),
    };
    let clock = Date.now();
    let agentIndex = createIndex({ path: indexDir, agentId });
    try {
      const service = createResolutionService({ docker, index: agentIndex, config, policy, logger, now: () => clock });
      const first = await service.lockFor(request);
      expect(first?.resolution).toBe('resolved');
      expect(first?.lock.resolved).toEqual(['rgtest-a==1.0', 'rgtest-b==2.0']);
      expect((await service.lockFor(request))?.resolution).toBe('cached');
      await agentIndex.close();
      agentIndex = createIndex({ path: indexDir, agentId });
      const again = createResolutionService({ docker, index: agentIndex, config, policy, logger, now: () => clock });
      expect(await again.lockFor(request)).toEqual({ lock: first!.lock, resolution: 'cached' });

      // The prune pass drops what was not checked for the image TTL (60 s here, less than the resolve window: the window wins).
      const pruner = createPruner({
        docker,
        index: agentIndex,
        leases: createLeaseTable(),
        settings: () => config,
        disk: { read: () => Promise.resolve({ used_bytes: 0, total_bytes: 100, source: 'test' }) },
        logger,
        now: () => clock,
      });
      try {
        clock += 3_600_000;
        await pruner.prune();
        expect(agentIndex.resolutions.list()).toHaveLength(1);
        clock += 1000;
        await pruner.prune();
        expect(agentIndex.resolutions.list()).toEqual([]);
        expect(agentIndex.resolutions.lockCount()).toBe(0);
      } finally {
        await pruner.stop();
      }
    } finally {
      await agentIndex.close();
    }
  });
});
