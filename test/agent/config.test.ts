import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultRuntime, durationsOf, parseRuntimeFlags, readConfigFile, resolveConfig } from '../../agent/config.js';
import {
  depsDockerfile,
  depsImageTag,
  execDockerfile,
  execImageTag,
  installCommand,
  requirementsFileText,
  workerPipArgs,
  workerPipFingerprintOptions,
} from '../../agent/builder/recipe.js';

const base = { socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid' };

describe('agent config', () => {
  it('fills documented defaults', () => {
    const config = resolveConfig(base, {});
    expect(config).toMatchObject({
      build_network: 'none',
      build_concurrency: 1,
      run_network: 'none',
      run_memory_mb: 1024,
      run_cpus: 1,
      run_timeout_s: 3600,
      run_pids_limit: 256,
      drain_timeout_s: 60,
      log_level: 'info',
      runtimes: {},
    });
  });

  it('lets flags win over the file, and adds flag runtimes to the file runtimes', () => {
    const config = resolveConfig(
      { ...base, build_concurrency: 2, runtimes: { 'python3.11': 'python:3.11-slim', 'python3.12': 'python:3.12-slim' } },
      { build_concurrency: 3, runtimes: { 'python3.11': 'local/python:bookworm' } },
    );
    expect(config.build_concurrency).toBe(3);
    expect(config.runtimes).toEqual({ 'python3.11': 'local/python:bookworm', 'python3.12': 'python:3.12-slim' });
  });

  it.each([
    [{ build_network: 'bridge' }, /build_network/],
    [{ build_concurrency: 0 }, /build_concurrency/],
    [{ unknown_key: 1 }, /additional/],
    [{ pip_find_links: 'relative/dir' }, /absolute/],
    [{ default_runtime: 'python9' }, /default_runtime/],
  ])('rejects %j', (bad, message) => {
    expect(() => resolveConfig({ ...base, ...bad }, {})).toThrow(message);
  });

  it('takes account and worker names by the one naming contract (org:team as the control plane does)', () => {
    expect(resolveConfig({ ...base, warm_account: 'org:team', worker_id: 'host-1.example:a' }, {}).warm_account).toBe('org:team');
    expect(() => resolveConfig({ ...base, warm_account: 'a/b' }, {})).toThrow(/invalid agent config/);
  });

  it('requires a socket and a data dir', () => {
    expect(() => resolveConfig({}, {})).toThrow(/invalid agent config/);
  });

  it('reads a JSON config file and reports a broken one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-config-'));
    try {
      writeFileSync(join(dir, 'ok.json'), JSON.stringify({ ...base, runtimes: { py: 'img' } }));
      writeFileSync(join(dir, 'bad.json'), '{ nope');
      expect(resolveConfig(await readConfigFile(join(dir, 'ok.json')), {}).runtimes).toEqual({ py: 'img' });
      await expect(readConfigFile(join(dir, 'bad.json'))).rejects.toThrow(/not valid JSON/);
      await expect(readConfigFile(join(dir, 'missing.json'))).rejects.toThrow(/ENOENT/);
      // A broken file that holds a token: the error says where, and never shows the token.
      writeFileSync(join(dir, 'secret.json'), '{\n  "worker_token": "tok-SECRET-0123456789" oops\n}');
      const err = await readConfigFile(join(dir, 'secret.json')).catch((e: unknown) => e as Error);
      expect((err as Error).message).toMatch(/not valid JSON at line 2, column \d+/);
      expect((err as Error).message).not.toContain('SECRET');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses --runtime NAME=IMAGE and picks a default runtime only when unambiguous', () => {
    expect(parseRuntimeFlags(['python3.11=reg/python:3.11=x'])).toEqual({ 'python3.11': 'reg/python:3.11=x' });
    expect(() => parseRuntimeFlags(['python3.11'])).toThrow(/NAME=IMAGE/);
    expect(defaultRuntime(resolveConfig({ ...base, runtimes: { a: 'x' } }, {}))).toBe('a');
    expect(defaultRuntime(resolveConfig({ ...base, runtimes: { a: 'x', b: 'y' } }, {}))).toBeUndefined();
    expect(defaultRuntime(resolveConfig({ ...base, runtimes: { a: 'x', b: 'y' }, default_runtime: 'b' }, {}))).toBe('b');
  });
});

describe('image recipes', () => {
  const ids = { baseImageId: `sha256:${'b'.repeat(64)}`, depsKey: 'd'.repeat(64), requirementsSha256: 'r'.repeat(64) };

  it('installs from the wheelhouse in an install container and keeps only /opt/rgrid', () => {
    expect(installCommand({ findLinksDir: '/w' })).toContain('--no-index --find-links /tmp/rgrid-wheelhouse -r /opt/rgrid/requirements.txt');
    expect(installCommand({ findLinksDir: '/w' })).toMatch(/^set -e; python3 -m venv \/opt\/rgrid\/venv; exec \/opt\/rgrid\/venv\/bin\/pip install /);
    const text = depsDockerfile({ ...ids, runtime: 'py', account: 'acme' });
    const lines = text.trim().split('\n');
    expect(lines[0]).toBe(`FROM ${ids.baseImageId}`);
    expect(lines[1]).toBe('COPY rgrid /opt/rgrid');
    expect(text).not.toContain('wheelhouse');
    expect(text).not.toContain('RUN');
    expect(text).toContain(`io.rgrid.deps-key="${ids.depsKey}"`);
  });

  it('builds script images FROM the deps image or the base image', () => {
    const common = { baseImageId: ids.baseImageId, imageKey: 'i'.repeat(64), scriptSha256: 's'.repeat(64), runtime: 'py', account: 'acme' };
    const withDeps = execDockerfile({ ...common, depsImageId: 'sha256:dep', depsKey: ids.depsKey, requirementsSha256: ids.requirementsSha256 });
    expect(withDeps.split('\n')[0]).toBe('FROM sha256:dep');
    expect(withDeps).toContain('ENV PATH=/opt/rgrid/venv/bin:$PATH');
    const noDeps = execDockerfile({ ...common, depsImageId: null, depsKey: null, requirementsSha256: null });
    expect(noDeps.split('\n')[0]).toBe(`FROM ${ids.baseImageId}`);
    expect(noDeps).not.toContain('venv');
    for (const text of [withDeps, noDeps]) {
      expect(text).toContain('CMD ["python3", "/work/script.py"]');
      expect(text).toContain('chmod 1777 /work/outputs');
      for (const label of ['image-key', 'deps-key', 'script-sha256', 'requirements-sha256', 'runtime', 'account', 'kind', 'recipe']) {
        expect(text).toContain(`io.rgrid.${label}=`);
      }
    }
  });

  it('turns worker pip settings into pip args and fingerprint options', () => {
    expect(workerPipArgs({ findLinksDir: '/w' })).toEqual(['--no-index', '--find-links', '/tmp/rgrid-wheelhouse']);
    expect(workerPipArgs({ indexUrl: 'http://127.0.0.1:1/simple' })).toEqual(['--index-url', 'http://127.0.0.1:1/simple']);
    expect(workerPipFingerprintOptions({ findLinksDir: '/w' })).toEqual(['--find-links=/w', '--no-index']);
    expect(requirementsFileText(['--pre'], 'a==1\nb==2')).toBe('\uFEFF--pre\na==1\nb==2\n');
  });

  it('tags per key and per account', () => {
    expect(execImageTag('ab'.repeat(32), 'acme')).toMatch(/^rgrid-exec:abababababababab-[0-9a-f]{8}$/);
    expect(depsImageTag('cd'.repeat(32), 'acme')).not.toBe(depsImageTag('cd'.repeat(32), 'other'));
  });
});

describe('durations compiled once', () => {
  const base = { socket: '/tmp/s', data_dir: '/tmp/d', runtimes: { py: 'img' } };

  it('gives every seconds key in milliseconds, rounded, and nothing else', () => {
    const config = resolveConfig({ ...base, sync_interval_s: 0.2, build_timeout_s: 1.0004, drain_timeout_s: 0 }, {});
    const ms = durationsOf(config);
    expect(ms.sync_interval_ms).toBe(200);
    expect(ms.build_timeout_ms).toBe(1000);
    expect(ms.drain_timeout_ms).toBe(0);
    expect(ms.prune_ttl_ms).toBe(config.prune_ttl_s * 1000);
    const secondsKeys = Object.keys(config).filter((k) => k.endsWith('_s')).map((k) => `${k.slice(0, -2)}_ms`).sort();
    expect(Object.keys(ms).sort()).toEqual(secondsKeys);
  });

  it('computes once per config: the same object back, a new one for a reloaded config', () => {
    const config = resolveConfig(base, {});
    expect(durationsOf(config)).toBe(durationsOf(config));
    const reloaded = resolveConfig({ ...base, sync_timeout_s: 3 }, {});
    expect(durationsOf(reloaded)).not.toBe(durationsOf(config));
    expect(durationsOf(reloaded).sync_timeout_ms).toBe(3000);
    expect(Object.isFrozen(durationsOf(config))).toBe(true);
  });
});
