import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compileBuildPolicy } from '../../agent/builder/build-policy.js';
import { createResolutionService } from '../../agent/builder/resolution.js';
import type { LockRequest, ResolutionService } from '../../agent/builder/resolution-types.js';
import type { ResolutionOutcome, ResolveInput } from '../../agent/builder/resolver.js';
import { resolveTtlFlag } from '../../agent/cli/serve.js';
import { resolveConfig, resolveTtlMs, type AgentConfigInput } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { pipSettingsFingerprint, requirementsDigest } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';
import { lockFromPipReport, resolutionKey, type Lock, type Resolution } from '../../common/lock.js';

/**
 * The resolution service with a fake resolver (a function that returns the lock the test chooses, when
 * the test lets it) and a fake clock, on a real LMDB index in a temp directory.
 */
const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

/** A lock as pip's report for these `name==version` pairs would give it. */
function lockOf(...pins: string[]): Lock {
  return lockFromPipReport({
    version: '1',
    install: pins.map((pin) => {
      const [name, version] = pin.split('==') as [string, string];
      const file = `${name.replace(/-/g, '_')}-${version}-py3-none-any.whl`;
      return {
        metadata: { name, version },
        download_info: { url: `file:///tmp/rgrid-wheelhouse/${file}`, archive_info: { hash: `sha256=${sha(file)}` } },
        is_direct: false,
      };
    }),
  });
}

interface Deferred {
  input: ResolveInput;
  settle(result: Lock | Error): void;
}

/** The fake resolver: every call waits until the test settles it (or answers at once with `auto`). */
class FakeResolver {
  readonly calls: Deferred[] = [];
  auto: Lock | Error | undefined;
  readonly resolve = (_docker: Docker, input: ResolveInput): Promise<Lock> =>
    new Promise<Lock>((resolvePromise, reject) => {
      const settle = (result: Lock | Error): void => (result instanceof Error ? reject(result) : resolvePromise(result));
      this.calls.push({ input, settle });
      if (this.auto !== undefined) settle(this.auto);
    });
  last(): Deferred {
    return this.calls.at(-1)!;
  }
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('resolution service', () => {
  let dir: string;
  let clock: number;
  let index: AgentIndex;
  let fake: FakeResolver;
  let writes: number;
  let outcomes: ResolutionOutcome[];
  let answers: Resolution[];
  const config = (extra: AgentConfigInput = {}) => resolveConfig({ socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid', pip_find_links: '/nonexistent-wheelhouse', ...extra }, {});

  const openIndex = (): AgentIndex => {
    const opened = createIndex({ path: join(dir, 'index'), now: () => clock });
    // Counts the store's writes (the hit path must not write); the store itself is the real one.
    const store = opened.resolutions;
    for (const method of ['put', 'putRecord', 'putLock'] as const) {
      const real = store[method].bind(store) as (...args: unknown[]) => Promise<void>;
      (store as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
        writes++;
        return real(...args);
      };
    }
    return opened;
  };

  function service(extra: AgentConfigInput = {}, signal?: AbortSignal): ResolutionService {
    const c = config({ ...extra, pip_find_links: undefined });
    return createResolutionService({
      docker: {} as Docker,
      index,
      config: c,
      policy: compileBuildPolicy(c),
      logger: pino({ level: 'silent' }),
      observer: { resolution: (outcome) => outcomes.push(outcome), lockAnswer: (r) => answers.push(r) },
      now: () => clock,
      resolve: fake.resolve,
      ...(signal ? { signal } : {}),
    });
  }

  const request = (text: string, account = 'acme'): LockRequest => {
    const requirements = requirementsDigest(text);
    return {
      account,
      runtime: { name: 'python3', image: 'python:3', imageId: `sha256:${'b'.repeat(64)}` },
      requirements,
      pipFingerprint: pipSettingsFingerprint([], ['--no-index']),
      fileText: `${requirements.text}\n`,
    };
  };
  const keyOf = (r: LockRequest): string =>
    resolutionKey({ baseImageId: r.runtime.imageId, requirementsSha256: r.requirements.sha256, pipFingerprint: r.pipFingerprint });

  const A1 = lockOf('rgtest-a==1.0', 'rgtest-b==2.0');
  const A2 = lockOf('rgtest-a==1.1', 'rgtest-b==2.0');

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-resolution-'));
    clock = 1_000_000;
    writes = 0;
    outcomes = [];
    answers = [];
    fake = new FakeResolver();
    index = openIndex();
  });

  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a fully locked file is its own lock: answered at once, never resolved, stored once for lockBySha', async () => {
    const svc = service();
    const locked = request(`rgtest-a==1.0 --hash=sha256:${'1'.repeat(64)}\nrgtest-b==2.0 --hash=sha256:${'2'.repeat(64)}\n`);
    const first = await svc.lockFor(locked);
    expect(first?.resolution).toBe('locked');
    expect(first?.lock.fromFile).toBe(true);
    expect(first?.lock.sha256).toBe(locked.requirements.sha256);
    expect(first?.lock.resolved).toEqual(['rgtest-a==1.0', 'rgtest-b==2.0']);
    await svc.idle();
    expect(writes).toBe(1);
    clock += 60_000;
    for (let i = 0; i < 5; i++) expect((await svc.lockFor(locked))?.resolution).toBe('locked');
    await svc.idle();
    expect(writes).toBe(1);
    expect(fake.calls).toHaveLength(0);
    expect(svc.lockBySha(first!.lock.sha256)).toEqual(first!.lock);
    expect(answers).toEqual(Array(6).fill('locked'));
    // Another process of the agent finds it in the store.
    await index.close();
    index = openIndex();
    expect(service().lockBySha(first!.lock.sha256)).toEqual(first!.lock);
  });

  it('no record: resolves now, stores the record and the lock, then answers from the window without writing', async () => {
    const svc = service();
    fake.auto = A1;
    const r = request('rgtest-a\n');
    const answer = await svc.lockFor(r);
    expect(answer).toEqual({ lock: A1, resolution: 'resolved' });
    expect(fake.calls).toHaveLength(1);
    expect(fake.last().input.fileText).toBe(r.fileText);
    expect(fake.last().input.baseImageId).toBe(r.runtime.imageId);
    expect(fake.last().input.labels).toMatchObject({ 'io.rgrid.stage': 'resolve', 'io.rgrid.agent': index.agentId });
    expect(index.resolutions.get('acme', keyOf(r))).toEqual({
      lock_sha256: A1.sha256,
      requirements_sha256: r.requirements.sha256,
      base_image_id: r.runtime.imageId,
      resolved_at: clock,
      checked_at: clock,
      failure: null,
    });
    expect(index.resolutions.lock(A1.sha256)).toEqual(A1);
    const written = writes;
    clock += 3_599_000;
    for (let i = 0; i < 10; i++) expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    await svc.idle();
    expect(writes).toBe(written);
    expect(fake.calls).toHaveLength(1);
    expect(outcomes).toEqual(['resolved']);
  });

  it('concurrent first requests share one resolution', async () => {
    const svc = service();
    const r = request('rgtest-a\n');
    const pending = Array.from({ length: 20 }, () => svc.lockFor(r));
    await flush();
    expect(fake.calls).toHaveLength(1);
    fake.last().settle(A1);
    for (const answer of await Promise.all(pending)) expect(answer).toEqual({ lock: A1, resolution: 'resolved' });
    expect(outcomes).toEqual(['resolved']);
  });

  it('a failed first resolution throws build_failed to every waiter, stores nothing, and the next request tries again', async () => {
    const svc = service();
    const r = request('rgtest-missing\n');
    const pending = [svc.lockFor(r), svc.lockFor(r)];
    await flush();
    fake.last().settle(new RgridError('build_failed', 'resolution failed: ERROR: No matching distribution found for rgtest-missing (exit 1)'));
    for (const p of pending) await expect(p).rejects.toMatchObject({ code: 'build_failed', message: /No matching distribution/ });
    expect(index.resolutions.get('acme', keyOf(r))).toBeUndefined();
    expect(outcomes).toEqual(['failed']);
    fake.auto = A1;
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'resolved' });
    expect(fake.calls).toHaveLength(2);
  });

  it('past the window: the stored lock at once, one background refresh, and a changed set takes over after it', async () => {
    const svc = service();
    const r = request('rgtest-a\n');
    fake.auto = A1;
    await svc.lockFor(r);
    fake.auto = undefined;
    clock += 3_600_000;
    // Served while the refresh runs; more requests meanwhile start no second one.
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    await flush();
    expect(fake.calls).toHaveLength(2);
    let idle = false;
    const idled = svc.idle().then(() => (idle = true));
    await flush();
    expect(idle).toBe(false);
    clock += 500;
    fake.last().settle(A2);
    await idled;
    expect(outcomes).toEqual(['resolved', 'changed']);
    const record = index.resolutions.get('acme', keyOf(r));
    expect(record).toMatchObject({ lock_sha256: A2.sha256, checked_at: clock, resolved_at: clock, failure: null });
    expect(await svc.lockFor(r)).toEqual({ lock: A2, resolution: 'cached' });
    // The old lock stays: images built on it are still described by it.
    expect(svc.lockBySha(A1.sha256)).toEqual(A1);
    expect(index.resolutions.lock(A1.sha256)).toEqual(A1);
  });

  it('a refresh that finds the same set only moves checked_at', async () => {
    const svc = service({ resolve_ttl_s: 60 });
    const r = request('rgtest-a\n');
    fake.auto = A1;
    await svc.lockFor(r);
    const resolvedAt = clock;
    clock += 61_000;
    expect((await svc.lockFor(r))?.resolution).toBe('cached');
    await svc.idle();
    expect(outcomes).toEqual(['resolved', 'refreshed']);
    expect(index.resolutions.get('acme', keyOf(r))).toMatchObject({ lock_sha256: A1.sha256, checked_at: clock, failure: null });
    expect(index.resolutions.get('acme', keyOf(r))!.resolved_at).toBeGreaterThan(resolvedAt);
  });

  it('a failed refresh keeps the lock as stale for one window, then a good refresh recovers', async () => {
    const svc = service({ resolve_ttl_s: 60 });
    const r = request('rgtest-a\n');
    fake.auto = A1;
    await svc.lockFor(r);
    clock += 60_000;
    fake.auto = new RgridError('build_failed', 'resolution failed: ERROR: Could not find a version that satisfies the requirement rgtest-a (exit 1)');
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    await svc.idle();
    expect(outcomes).toEqual(['resolved', 'failed']);
    const failedAt = clock;
    expect(index.resolutions.get('acme', keyOf(r))).toEqual({
      lock_sha256: A1.sha256,
      requirements_sha256: r.requirements.sha256,
      base_image_id: r.runtime.imageId,
      resolved_at: failedAt - 60_000,
      checked_at: failedAt,
      failure: { at: failedAt, message: 'resolution failed: ERROR: Could not find a version that satisfies the requirement rgtest-a (exit 1)' },
    });
    // Within the window after the failure: stale, and no retry.
    clock += 59_000;
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'stale' });
    await svc.idle();
    expect(fake.calls).toHaveLength(2);
    // A window later: still stale while the retry runs, which succeeds.
    clock += 1000;
    fake.auto = A1;
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'stale' });
    await svc.idle();
    expect(fake.calls).toHaveLength(3);
    expect(index.resolutions.get('acme', keyOf(r))).toMatchObject({ failure: null, checked_at: clock });
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    expect(outcomes).toEqual(['resolved', 'failed', 'refreshed']);
  });

  it('a refresh abandoned by the drain is neither counted nor recorded as a failure', async () => {
    const drain = new AbortController();
    const svc = service({ resolve_ttl_s: 60 }, drain.signal);
    const r = request('rgtest-a\n');
    fake.auto = A1;
    await svc.lockFor(r);
    fake.auto = undefined;
    clock += 60_000;
    await svc.lockFor(r);
    await flush();
    expect(fake.last().input.signal).toBe(drain.signal);
    fake.last().settle(new RgridError('shutting_down', 'build abandoned: the agent is shutting down'));
    await svc.idle();
    expect(outcomes).toEqual(['resolved']);
    expect(index.resolutions.get('acme', keyOf(r))).toMatchObject({ failure: null, checked_at: clock - 60_000 });
  });

  it('resolve_ttl 0 resolves every time, one resolution per concurrent burst, and falls back to stale on failure', async () => {
    const svc = service({ resolve_ttl_s: 0 });
    const r = request('rgtest-a\n');
    fake.auto = A1;
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'resolved' });
    fake.auto = A2;
    expect(await svc.lockFor(r)).toEqual({ lock: A2, resolution: 'resolved' });
    expect(fake.calls).toHaveLength(2);
    fake.auto = undefined;
    const burst = Array.from({ length: 10 }, () => svc.lockFor(r));
    await flush();
    expect(fake.calls).toHaveLength(3);
    fake.last().settle(A2);
    for (const answer of await Promise.all(burst)) expect(answer).toEqual({ lock: A2, resolution: 'resolved' });
    fake.auto = new RgridError('build_failed', 'resolution failed: ERROR: index unreachable (exit 1)');
    expect(await svc.lockFor(r)).toEqual({ lock: A2, resolution: 'stale' });
    expect(outcomes).toEqual(['resolved', 'changed', 'refreshed', 'failed']);
    expect(index.resolutions.get('acme', keyOf(r))?.failure?.message).toMatch(/index unreachable/);
  });

  it('resolve_ttl never answers null: the key stays on the text; nothing is resolved or stored', async () => {
    const svc = service({ resolve_ttl_s: 'never' });
    fake.auto = A1;
    expect(await svc.lockFor(request('rgtest-a\n'))).toBeNull();
    expect(await svc.lockFor(request(`rgtest-a==1.0 --hash=sha256:${'1'.repeat(64)}\n`))).toBeNull();
    await svc.idle();
    expect(fake.calls).toHaveLength(0);
    expect(writes).toBe(0);
    expect(answers).toEqual([]);
  });

  it('after a restart the stored resolution answers without resolving, and its age still counts', async () => {
    fake.auto = A1;
    const r = request('rgtest-a\n');
    await service().lockFor(r);
    await index.close();
    index = openIndex();
    const svc = service();
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    expect(svc.lockBySha(A1.sha256)).toEqual(A1);
    expect(fake.calls).toHaveLength(1);
    clock += 3_600_000;
    fake.auto = A2;
    expect(await svc.lockFor(r)).toEqual({ lock: A1, resolution: 'cached' });
    await svc.idle();
    expect(await svc.lockFor(r)).toEqual({ lock: A2, resolution: 'cached' });
  });

  it('a failure recorded before a restart is still answered as stale after it', async () => {
    fake.auto = A1;
    const r = request('rgtest-a\n');
    const before = service({ resolve_ttl_s: 60 });
    await before.lockFor(r);
    clock += 60_000;
    fake.auto = new RgridError('build_failed', 'resolution failed: ERROR: nope (exit 1)');
    await before.lockFor(r);
    await before.idle();
    await index.close();
    index = openIndex();
    expect(await service({ resolve_ttl_s: 60 }).lockFor(r)).toEqual({ lock: A1, resolution: 'stale' });
  });

  it('resolutions are per account: the same file resolves again for another account', async () => {
    const svc = service();
    fake.auto = A1;
    await svc.lockFor(request('rgtest-a\n', 'acme'));
    fake.auto = A2;
    expect(await svc.lockFor(request('rgtest-a\n', 'globex'))).toEqual({ lock: A2, resolution: 'resolved' });
    expect(await svc.lockFor(request('rgtest-a\n', 'acme'))).toEqual({ lock: A1, resolution: 'cached' });
    expect(fake.calls).toHaveLength(2);
  });

  it('the key covers the base image and the pip settings', async () => {
    const svc = service();
    fake.auto = A1;
    const r = request('rgtest-a\n');
    await svc.lockFor(r);
    await svc.lockFor({ ...r, runtime: { ...r.runtime, imageId: `sha256:${'c'.repeat(64)}` } });
    await svc.lockFor({ ...r, pipFingerprint: pipSettingsFingerprint(['--pre'], ['--no-index']) });
    expect(fake.calls).toHaveLength(3);
  });

  it('a caller whose signal aborts stops waiting; the shared resolution still completes and is stored', async () => {
    const svc = service();
    const r = request('rgtest-a\n');
    const abort = new AbortController();
    const leaving = svc.lockFor(r, abort.signal);
    const staying = svc.lockFor(r);
    await flush();
    abort.abort();
    await expect(leaving).rejects.toMatchObject({ code: 'shutting_down' });
    fake.last().settle(A1);
    expect(await staying).toEqual({ lock: A1, resolution: 'resolved' });
    expect(index.resolutions.get('acme', keyOf(r))?.lock_sha256).toBe(A1.sha256);
  });

  it('lockBySha: unknown or malformed digests are undefined', () => {
    const svc = service();
    expect(svc.lockBySha('0'.repeat(64))).toBeUndefined();
    expect(svc.lockBySha('../../etc/passwd')).toBeUndefined();
    expect(svc.lockBySha('')).toBeUndefined();
  });
});

describe('resolve_ttl config and flag', () => {
  const base = { socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid' };

  it('defaults to an hour; takes seconds, 0 and never', () => {
    expect(resolveConfig(base, {}).resolve_ttl_s).toBe(3600);
    expect(resolveTtlMs(resolveConfig(base, {}))).toBe(3_600_000);
    expect(resolveTtlMs(resolveConfig({ ...base, resolve_ttl_s: 0 }, {}))).toBe(0);
    expect(resolveTtlMs(resolveConfig({ ...base, resolve_ttl_s: 1.5 }, {}))).toBe(1500);
    expect(resolveTtlMs(resolveConfig({ ...base, resolve_ttl_s: 'never' }, {}))).toBeNull();
  });

  it.each([[-1], ['forever'], ['3600'], [null]])('refuses %j', (value) => {
    expect(() => resolveConfig({ ...base, resolve_ttl_s: value }, {})).toThrow(/invalid agent config: \/resolve_ttl_s/);
  });

  it('--resolve-ttl takes a duration or never, and names itself when refused', () => {
    expect(resolveTtlFlag(undefined)).toBeUndefined();
    expect(resolveTtlFlag('never')).toBe('never');
    expect(resolveTtlFlag('15m')).toBe(900);
    expect(resolveTtlFlag('0')).toBe(0);
    expect(() => resolveTtlFlag('soon')).toThrow(/^--resolve-ttl must be a duration \(90s, 1h, 0 = every time\) or never, got "soon"$/);
    expect(() => resolveTtlFlag('-5')).toThrow(/^--resolve-ttl must be/);
  });
});
