import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import type { IndexEntry } from '../../agent/index/types.js';
import { toSyncOp } from '../../agent/sync/wire-ops.js';

const hex = (c: string): string => c.repeat(64);
const entry = (over: Partial<IndexEntry> = {}): IndexEntry => ({
  kind: 'image', account: 'acme', key: hex('a'), image_id: `sha256:${hex('1')}`, image_tag: 'rgrid-exec:x', runtime: 'py',
  base_image_id: `sha256:${hex('b')}`, script_sha256: hex('5'), requirements_sha256: null, deps_key: null, size_bytes: 10,
  created_at: 1000, last_used_at: 1000, use_count: 1, ...over,
});

describe('durable outbox', () => {
  let dir: string;
  let index: AgentIndex;
  let clock = 10_000;
  const open = (): AgentIndex => createIndex({ path: join(dir, 'index'), now: () => clock });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-outbox-'));
    index = open();
  });
  afterEach(async () => {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes one op per index change in the same transaction: upsert, coalesced touches, delete', async () => {
    await index.putBuilt(entry());
    for (let i = 0; i < 1000; i++) {
      clock++;
      await index.touch([entry()]);
    }
    const ops = index.outbox.takeBatch(100);
    expect(ops.map((o) => o.type)).toEqual(['upsert', 'touch']);
    expect(ops[1]).toMatchObject({ count: 1000, last_used_at: clock });
    await index.remove(entry());
    expect(index.outbox.depth()).toBe(3);
    const wire = index.outbox.takeBatch(100).map((o) => toSyncOp(index.outbox.epoch, o));
    expect(wire.map((o) => o.type)).toEqual(['upsert', 'touch', 'delete']);
    expect(new Set(wire.map((o) => o.id)).size).toBe(3);
    expect(wire[1]).toMatchObject({ type: 'touch', count: 1000 });
  });

  it('never changes a sealed op: hits after a batch was taken open a new op; acks delete only what was sent', async () => {
    await index.putBuilt(entry());
    await index.touch([entry()]);
    const sent = index.outbox.takeBatch(10);
    await index.touch([entry()]);
    await index.touch([entry()]);
    expect(sent.at(-1)).toMatchObject({ type: 'touch', count: 1 });
    await index.outbox.ack(sent.map((o) => o.seq));
    const rest = index.outbox.takeBatch(10);
    expect(rest).toEqual([expect.objectContaining({ type: 'touch', count: 2 })]);
    // Across a restart the ops, the seal and the epoch survive.
    const epoch = index.outbox.epoch;
    await index.close();
    index = open();
    expect(index.outbox.epoch).toBe(epoch);
    expect(index.outbox.depth()).toBe(1);
    await index.touch([entry()]);
    expect(index.outbox.depth()).toBe(2);
  });

  it('a snapshot seals everything so far; acknowledging it clears those ops only', async () => {
    await index.putBuilt(entry());
    await index.putBuilt(entry({ key: hex('c') }));
    const snap = index.syncSnapshot();
    expect(snap.entries).toHaveLength(2);
    await index.touch([entry()]);
    await index.outbox.ackThrough(snap.through);
    expect(index.outbox.takeBatch(10)).toEqual([expect.objectContaining({ type: 'touch', count: 1 })]);
  });
});
