import { describe, expect, it } from 'vitest';
import { planSyncOps } from '../../control/sync-plan.js';
import type { SyncOp } from '../../common/wire/control-api.js';

const key = 'a'.repeat(64);
const base = { kind: 'image' as const, account: 'acc', key };
const upsert = (id: string, use_count: number): SyncOp => ({
  id, type: 'upsert', ...base, image_id: 'sha256:x', runtime: 'py', requirements_sha256: null, script_sha256: 'b'.repeat(64),
  deps_key: null, size_bytes: 1, created_at: '2025-01-01T00:00:00Z', last_used_at: '2025-01-01T00:00:00Z', use_count,
});
const touch = (id: string, count: number, at = '2025-01-02T00:00:00Z'): SyncOp => ({ id, type: 'touch', ...base, count, last_used_at: at });
const del = (id: string): SyncOp => ({ id, type: 'delete', ...base });

describe('sync op planning', () => {
  it('coalesces touches into one update with the latest use time', () => {
    const plan = planSyncOps([touch('1', 10, '2025-01-03T00:00:00Z'), touch('2', 5, '2025-01-02T00:00:00Z')]);
    expect(plan).toEqual({ upserts: [], deletes: [], touches: [{ ...base, count: 15, last_used_at: '2025-01-03T00:00:00Z' }] });
  });

  it('adds touches after an upsert to its use count', () => {
    const plan = planSyncOps([upsert('1', 2), touch('2', 3)]);
    expect(plan.upserts).toHaveLength(1);
    expect(plan.upserts[0]).toMatchObject({ use_count: 5, last_used_at: '2025-01-02T00:00:00Z' });
  });

  it('lets the last upsert or delete win and drops touches of a deleted entry', () => {
    expect(planSyncOps([upsert('1', 1), del('2')])).toEqual({ upserts: [], deletes: [base], touches: [] });
    expect(planSyncOps([del('1'), touch('2', 4)])).toEqual({ upserts: [], deletes: [base], touches: [] });
    expect(planSyncOps([del('1'), upsert('2', 7)]).upserts[0]).toMatchObject({ use_count: 7 });
  });
});
