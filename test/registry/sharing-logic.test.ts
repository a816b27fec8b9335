// The pure parts of image sharing: the acquire loop (wait while another worker builds, up to
// build_wait_s; degrade on any failure of the conversation), the durable push outbox in the index's LMDB
// environment (written with the entry, surviving a reopen, dropped with the entry), and the config keys.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../agent/config.js';
import { dockerFor } from '../../agent/engine.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import type { IndexEntry } from '../../agent/index/types.js';
import { acquireLoop } from '../../agent/registry/acquire-loop.js';
import { failureOutputTail } from '../../agent/registry/sharing.js';
import { RgridError } from '../../common/errors.js';
import type { BuildAcquireResponse } from '../../common/wire/registry-api.js';

const hex = (c: string): string => c.repeat(64);
const building = (holder = 'w2'): BuildAcquireResponse => ({ state: 'building', holder, lease_expires_at: new Date(0).toISOString() });
const pushed: BuildAcquireResponse = { state: 'pushed', registry: '127.0.0.1:5000', manifest_digest: `sha256:${hex('e')}`, size_bytes: 10, pushed_by: 'w2' };

/** A fake clock: `acquire` and `sleep` move it, so the loop's waiting is exact and instant. */
function harness(answers: Array<BuildAcquireResponse | Error>, holdMs: number) {
  let clock = 1_000_000;
  const waits: number[] = [];
  const sleeps: number[] = [];
  return {
    waits,
    sleeps,
    run: (buildWaitMs: number, minIntervalMs = 1000) =>
      acquireLoop({
        acquire: (waitMs) => {
          waits.push(waitMs);
          const next = answers.shift() ?? building();
          clock += Math.min(holdMs, waitMs);
          return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
        },
        buildWaitMs, pollMs: 20_000, minIntervalMs, now: () => clock,
        sleep: (ms) => {
          sleeps.push(ms);
          clock += ms;
          return Promise.resolve();
        },
      }),
  };
}

describe('acquire loop', () => {
  it('waits through building answers and returns the push once it is there', async () => {
    const h = harness([building(), building(), pushed], 20_000);
    const decision = await h.run(900_000);
    expect(decision).toEqual({ type: 'pushed', answer: pushed });
    expect(h.waits).toEqual([20_000, 20_000, 20_000]);
  });

  it('gives up after build_wait_s, never asking to be held past it', async () => {
    const h = harness([], 20_000);
    const decision = await h.run(50_000);
    expect(decision).toEqual({ type: 'timeout', waitedMs: 50_000 });
    expect(h.waits).toEqual([20_000, 20_000, 10_000]);
  });

  it('does not hammer a control plane that answers building without holding the request', async () => {
    const h = harness([building(), building(), pushed], 0);
    await h.run(900_000, 1000);
    expect(h.sleeps).toEqual([1000, 1000]);
  });

  it('build_wait_s 0: one question, then build', async () => {
    const h = harness([building()], 0);
    expect(await h.run(0)).toMatchObject({ type: 'timeout' });
    expect(h.waits).toEqual([0]);
  });

  it('ends as unreachable on any failure, so the caller builds locally', async () => {
    const error = new RgridError('unavailable', 'down');
    const h = harness([building(), error], 0);
    expect(await h.run(900_000)).toEqual({ type: 'unreachable', error });
  });

  it('returns a lease or a recorded failure at once', async () => {
    const lease: BuildAcquireResponse = { state: 'lease', lease_id: '6f1c7a4e-8a3b-4c1d-9e2f-0a1b2c3d4e5f', lease_ms: 30_000, lease_expires_at: new Date(0).toISOString(), attempt: 1 };
    expect(await harness([lease], 0).run(900_000)).toEqual({ type: 'lease', answer: lease });
    const failed: BuildAcquireResponse = { state: 'failed', error: 'build_failed', message: 'pip failed', log_tail: 'tail', failed_by: 'w2', failed_at: new Date(0).toISOString() };
    expect(await harness([failed], 0).run(900_000)).toEqual({ type: 'failed', answer: failed });
  });
});

function entry(over: Partial<IndexEntry> = {}): IndexEntry {
  return {
    kind: 'image', account: 'acme', key: hex('a'), image_id: `sha256:${hex('1')}`, image_tag: 'rgrid-exec:x', runtime: 'python3.11',
    base_image_id: `sha256:${hex('0')}`, script_sha256: hex('5'), requirements_sha256: null, deps_key: null, size_bytes: 100,
    created_at: 1000, last_used_at: 1000, use_count: 1, ...over,
  };
}

describe('push outbox', () => {
  let dir: string;
  let index: AgentIndex;
  const open = (): AgentIndex => createIndex({ path: join(dir, 'index'), now: () => 5000 });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-pushes-'));
    index = open();
  });
  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is written with the entry only when asked, and survives a reopen', async () => {
    await index.putBuilt(entry({ key: hex('b') }));
    await index.putBuilt(entry(), [], { queuePush: true });
    expect(index.pushes.list()).toEqual([expect.objectContaining({ kind: 'image', account: 'acme', key: hex('a'), state: 'push', image_id: `sha256:${hex('1')}`, script_sha256: hex('5') })]);
    await index.close();
    index = open();
    expect(index.pushes.depth()).toBe(1);
  });

  it('moves push → record → gone, ignoring answers about another image of the same key', async () => {
    await index.putBuilt(entry(), [], { queuePush: true });
    await index.pushes.markPushed(entry(), `sha256:${hex('9')}`, `sha256:${hex('e')}`, 10);
    expect(index.pushes.get(entry())?.state).toBe('push');
    await index.pushes.markPushed(entry(), entry().image_id, `sha256:${hex('e')}`, 10);
    expect(index.pushes.get(entry())).toMatchObject({ state: 'record', manifest_digest: `sha256:${hex('e')}`, size_bytes: 10 });
    await index.pushes.remove(entry(), `sha256:${hex('9')}`);
    expect(index.pushes.depth()).toBe(1);
    await index.pushes.remove(entry(), entry().image_id);
    expect(index.pushes.depth()).toBe(0);
  });

  it('drops the job when the entry is removed (a pruned image is not pushed)', async () => {
    await index.putBuilt(entry(), [], { queuePush: true });
    expect(await index.remove(entry())).toBe(true);
    expect(index.pushes.depth()).toBe(0);
  });

  it('old entries read as built, with no digest', async () => {
    const { renderEntry } = await import('../../agent/api/app.js');
    await index.putBuilt(entry());
    expect(renderEntry(index.get(entry())!)).toMatchObject({ origin: 'built', registry_digest: null });
    await index.putBuilt(entry({ origin: 'pulled', registry_digest: `sha256:${hex('e')}` }));
    expect(renderEntry(index.get(entry())!)).toMatchObject({ origin: 'pulled', registry_digest: `sha256:${hex('e')}` });
  });
});

describe('sharing config', () => {
  const base = { socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid' };
  it('is off by default, with documented defaults for its bounds', () => {
    const c = resolveConfig(base, {});
    expect(c.registry).toBeUndefined();
    expect(c).toMatchObject({ registry_timeout_s: 300, build_wait_s: 900 });
  });
  it('refuses registry addresses outside the naming contract and relative auth files', () => {
    expect(() => resolveConfig(base, { registry: 'http://127.0.0.1:5000' })).toThrow(/registry/);
    expect(() => resolveConfig(base, { registry: '127.0.0.1:99999' })).toThrow(/port/);
    expect(() => resolveConfig(base, { registry: '127.0.0.1:5000', registry_auth_file: 'auth.json' })).toThrow(/absolute/);
    expect(resolveConfig(base, { registry: '127.0.0.1:5000/team' }).registry).toBe('127.0.0.1:5000/team');
  });
  it('talks to the engine named by docker_host', () => {
    expect((dockerFor('unix:///tmp/x/docker.sock').modem as { socketPath?: string }).socketPath).toBe('/tmp/x/docker.sock');
    expect((dockerFor('tcp://127.0.0.1:2375').modem as { port?: number }).port).toBe(2375);
    expect(() => resolveConfig(base, { docker_host: 'ssh://host' })).toThrow(/docker_host/);
  });
});

describe('the tail of a failed build recorded for the grid', () => {
  it('takes the builders\' lines and a recorded string alike, keeping the end when too long', () => {
    // What the install container throws: pip's last lines as an array.
    const pip = ['Looking in links: /wheels', 'ERROR: Could not find a version that satisfies the requirement nope==9.9', 'ERROR: No matching distribution found for nope==9.9'];
    expect(failureOutputTail({ output_tail: pip, exit_code: 1 }, 16_000)).toBe(pip.join('\n'));
    expect(failureOutputTail({ output_tail: 'one string' }, 16_000)).toBe('one string');
    expect(failureOutputTail({ output_tail: ['a'.repeat(50), 'the end'] }, 10)).toBe(`${'a'.repeat(50)}\nthe end`.slice(-10));
    expect(failureOutputTail(undefined, 100)).toBe('');
    expect(failureOutputTail({ output_tail: [1, { x: 2 }] }, 100)).toBe('');
  });
});
