import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import type { IndexEntry } from '../../agent/index/types.js';

const hex = (c: string): string => c.repeat(64);

function entry(over: Partial<IndexEntry> = {}): IndexEntry {
  return {
    kind: 'image',
    account: 'acme',
    key: hex('a'),
    image_id: `sha256:${hex('1')}`,
    image_tag: 'rgrid-exec:x',
    runtime: 'python3.11',
    base_image_id: `sha256:${hex('0')}`,
    script_sha256: hex('5'),
    requirements_sha256: hex('6'),
    deps_key: hex('d'),
    size_bytes: 100,
    created_at: 1000,
    last_used_at: 1000,
    use_count: 1,
    ...over,
  };
}

describe('LMDB index', () => {
  let dir: string;
  let clock: number;
  let index: AgentIndex;
  const open = (): AgentIndex => createIndex({ path: join(dir, 'index'), now: () => clock });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-index-'));
    clock = 5000;
    index = open();
  });
  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('scopes entries per account: the same key in two accounts is two entries', async () => {
    await index.putBuilt(entry({ account: 'acme' }));
    await index.putBuilt(entry({ account: 'acme2', image_id: `sha256:${hex('2')}` }));
    expect(index.get({ kind: 'image', account: 'acme', key: hex('a') })?.image_id).toBe(`sha256:${hex('1')}`);
    expect(index.get({ kind: 'image', account: 'acme2', key: hex('a') })?.image_id).toBe(`sha256:${hex('2')}`);
    expect(index.get({ kind: 'image', account: 'other', key: hex('a') })).toBeUndefined();
    // The account range must not leak a prefix-sharing account ("acme" vs "acme2").
    expect(index.list({ account: 'acme' }).map((e) => e.account)).toEqual(['acme']);
    expect(index.list().length).toBe(2);
  });

  it('keeps kinds apart', async () => {
    await index.putBuilt(entry());
    await index.putBuilt(entry({ kind: 'deps', key: hex('d'), script_sha256: null }));
    expect(index.list({ kind: 'deps' }).map((e) => e.kind)).toEqual(['deps']);
    expect(index.list({ kind: 'image' }).map((e) => e.kind)).toEqual(['image']);
    expect(index.dependentsOf({ kind: 'deps', account: 'acme', key: hex('d') }).map((e) => e.key)).toEqual([hex('a')]);
  });

  it('touch updates last_used_at and use_count, durably across a reopen', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    clock = 9000;
    const [updated, missing] = await index.touch([ref, { ...ref, key: hex('b') }]);
    expect(updated).toMatchObject({ last_used_at: 9000, use_count: 2 });
    expect(missing).toBeUndefined();
    await index.close();
    index = open();
    expect(index.get(ref)).toMatchObject({ last_used_at: 9000, use_count: 2, created_at: 1000 });
  });

  it('counts every one of many concurrent touches', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    await Promise.all(Array.from({ length: 200 }, () => index.touch([ref])));
    expect(index.get(ref)?.use_count).toBe(201);
  });

  it('settled() waits for touches nobody awaited', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    for (let i = 0; i < 50; i++) void index.touch([ref]);
    await index.settled();
    expect(index.get(ref)?.use_count).toBe(51);
  });

  it('recordUse gathers the uses a hit does not wait for; settled() writes them at once, entry and outbox op together', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    const depsRef = { kind: 'deps' as const, account: 'acme', key: hex('d') };
    await index.putBuilt(entry());
    await index.putBuilt(entry({ kind: 'deps', key: hex('d') }));
    for (let i = 0; i < 50; i++) {
      clock++;
      void index.recordUse([ref, depsRef]);
    }
    // Not written yet: the batch is still gathering (nothing awaited it).
    expect(index.get(ref)?.use_count).toBe(1);
    await index.settled();
    expect(index.get(ref)).toMatchObject({ use_count: 51, last_used_at: clock });
    expect(index.get(depsRef)?.use_count).toBe(51);
    const touchOps = index.outbox.takeBatch(1000).filter((op) => op.type === 'touch');
    expect(touchOps.map((op) => [op.kind, op.count])).toEqual([['image', 50], ['deps', 50]]);
  });

  it('close() writes the uses still gathered before closing', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    for (let i = 0; i < 20; i++) void index.recordUse([ref]);
    await index.close();
    index = open();
    expect(index.get(ref)?.use_count).toBe(21);
  });

  it('recordUse skips an entry removed before its batch is written', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    const recorded = index.recordUse([ref]);
    await index.remove(ref);
    await recorded;
    expect(index.get(ref)).toBeUndefined();
    expect(index.outbox.takeBatch(10).map((op) => op.type)).toEqual(['upsert', 'delete']);
  });

  it('putBuilt writes the entry and touches the deps layer in one transaction', async () => {
    const depsRef = { kind: 'deps' as const, account: 'acme', key: hex('d') };
    await index.putBuilt(entry({ kind: 'deps', key: hex('d') }));
    clock = 7000;
    await index.putBuilt(entry({ key: hex('e') }), [depsRef]);
    expect(index.get(depsRef)).toMatchObject({ use_count: 2, last_used_at: 7000 });
  });

  it('remove with ifImageId leaves a replaced entry alone', async () => {
    const ref = { kind: 'image' as const, account: 'acme', key: hex('a') };
    await index.putBuilt(entry());
    expect(await index.remove(ref, { ifImageId: `sha256:${hex('9')}` })).toBe(false);
    expect(index.get(ref)).toBeDefined();
    expect(await index.remove(ref, { ifImageId: `sha256:${hex('1')}` })).toBe(true);
    expect(index.get(ref)).toBeUndefined();
    expect(await index.remove(ref)).toBe(false);
  });

  it('keeps its agent id across reopen', async () => {
    const id = index.agentId;
    await index.close();
    index = open();
    expect(index.agentId).toBe(id);
  });
});

describe('lease table', () => {
  it('pins refs until every holder released', () => {
    const leases = createLeaseTable(() => 1);
    const ref = { kind: 'image' as const, account: 'a', key: hex('a') };
    const one = leases.acquire([ref], 'run:1');
    const two = leases.acquire([ref], 'run:2');
    expect(leases.isLeased(ref)).toBe(true);
    expect(leases.list()[0]?.holders.sort()).toEqual(['run:1', 'run:2']);
    one.release();
    one.release(); // idempotent: must not release run:2's pin
    expect(leases.isLeased(ref)).toBe(true);
    two.release();
    expect(leases.isLeased(ref)).toBe(false);
    expect(leases.size).toBe(0);
  });
});
