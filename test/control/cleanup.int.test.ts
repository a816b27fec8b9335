/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-argument --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Cleanup removes exactly the rows past the TTL; dry-run removes nothing. Also the
// CLI `rgrid-control cleanup [--dry-run] --json` from dist/ on the same database.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { runCleanup } from '../../control/cleanup.js';
import { createFsBlobStorage } from '../../control/storage/fs-storage.js';
import { sha256Hex } from '../../common/digest.js';
import { build, call, createToken, entry, registerWorker, sha, snapshot, testConfig, useTestDatabase } from './support.js';

const db = useTestDatabase();
const run = promisify(execFile);
const DAY = 86_400_000;
const daysAgo = (d: number): string => new Date(Date.now() - d * DAY).toISOString();

async function state() {
  const q = async (sql: string) => (await db.pool.query(sql)).rows;
  return {
    entries: (await q('SELECT worker_id, kind, key FROM cache_entries ORDER BY 1, 2, 3')).map((r) => `${r.worker_id}/${r.kind}/${r.key.slice(0, 8)}`),
    workers: (await q('SELECT worker_id FROM workers ORDER BY 1')).map((r) => r.worker_id as string),
    blobs: (await q('SELECT sha256 FROM blobs ORDER BY 1')).map((r) => r.sha256 as string),
    manifests: (await q('SELECT input_sha256 FROM input_manifests ORDER BY 1')).map((r) => r.input_sha256 as string),
  };
}

describe('cleanup', () => {
  it('dry-run reports exactly what a real run then removes; fresh rows stay', async () => {
    const app = await build(db);
    const w1 = await createToken(app, 'cl', 'worker', 'cw1');
    const w2 = await createToken(app, 'cl', 'worker', 'cw2');
    const client = await createToken(app, 'cl', 'client');
    await registerWorker(app, w1, 'cw1');
    await registerWorker(app, w2, 'cw2');
    const old1 = entry({ account: 'cl', script: 'old1', lastUsed: daysAgo(31) });
    const old2 = entry({ account: 'cl', kind: 'deps', requirements: sha('r-old'), lastUsed: daysAgo(45) });
    const edge = entry({ account: 'cl', script: 'edge', lastUsed: daysAgo(29) });
    const fresh = entry({ account: 'cl', script: 'fresh' });
    expect((await snapshot(app, w1, 'cw1', [old1, old2, edge, fresh])).statusCode).toBe(200);
    expect((await snapshot(app, w2, 'cw2', [entry({ account: 'cl', script: 'on-silent-worker' })])).statusCode).toBe(200);
    // cw2 went silent 8 days ago: past the 7-day retention, removed with its entries.
    await db.pool.query("UPDATE workers SET last_seen_at = now() - interval '8 days' WHERE worker_id = 'cw2'");

    // Blobs: `kept` is referenced by a manifest, `orphan` by none and older than the grace, `young`
    // is unreferenced but fresh (an upload whose manifest is still to come).
    const put = async (text: string) => {
      const b = Buffer.from(text);
      const res = await app.inject({ method: 'PUT', url: `/v1/blobs/${sha256Hex(b)}`, headers: { authorization: `Bearer ${client}` }, payload: b });
      expect(res.statusCode).toBe(201);
      return sha256Hex(b);
    };
    const kept = await put('kept');
    const orphan = await put('orphan');
    const young = await put('young');
    const manifest = await call(app, 'POST', '/v1/manifests', client, { files: [{ name: 'k.txt', sha256: kept, size: 4 }] });
    expect(manifest.statusCode).toBe(201);
    await db.pool.query("UPDATE blobs SET created_at = now() - interval '2 hours', last_used_at = now() - interval '2 hours' WHERE sha256 = ANY($1)", [[kept, orphan]]);

    const before = await state();
    const storage = createFsBlobStorage(join(db.dataDir, 'blobs'));
    const settings = testConfig(db);
    const dry = await runCleanup(db.pool, storage, settings, { dryRun: true, wait: true });
    expect(dry.dry_run).toBe(true);
    expect(dry.entries.items.map((e) => e.key).sort()).toEqual([old1.key, old2.key].sort());
    expect(dry.workers.items.map((w) => w.worker_id)).toEqual(['cw2']);
    expect(dry.blobs.items.map((b) => b.sha256)).toEqual([orphan]);
    expect(dry.blob_files.items).toEqual([orphan]);
    expect(dry.manifests.count).toBe(0);
    expect(await state()).toEqual(before);
    expect(existsSync(join(db.dataDir, 'blobs', 'sha256', orphan.slice(0, 2), orphan))).toBe(true);

    const real = await runCleanup(db.pool, storage, settings, { dryRun: false, wait: true });
    expect({ ...real, at: '', dry_run: true }).toEqual({ ...dry, at: '' });
    const after = await state();
    expect(after.workers).toEqual(['cw1']);
    expect(after.entries).toHaveLength(2);
    expect(after.entries.join()).toContain(edge.key.slice(0, 8));
    expect(after.entries.join()).toContain(fresh.key.slice(0, 8));
    expect(after.blobs.sort()).toEqual([kept, young].sort());
    expect(existsSync(join(db.dataDir, 'blobs', 'sha256', orphan.slice(0, 2), orphan))).toBe(false);
    expect(existsSync(join(db.dataDir, 'blobs', 'sha256', kept.slice(0, 2), kept))).toBe(true);

    // Nothing left to do: a second run removes nothing.
    const again = await runCleanup(db.pool, storage, settings, { dryRun: false, wait: true });
    expect([again.entries.count, again.workers.count, again.blobs.count]).toEqual([0, 0, 0]);

    // A manifest unused past the TTL goes, and its blob follows once unreferenced.
    await db.pool.query("UPDATE input_manifests SET last_used_at = now() - interval '31 days'");
    const third = await runCleanup(db.pool, storage, settings, { dryRun: false, wait: true });
    expect(third.manifests.count).toBe(1);
    expect(third.blobs.items.map((b) => b.sha256)).toEqual([kept]);
  });

  it('runs from the CLI with --dry-run --json and a configurable TTL', async () => {
    const app = await build(db);
    const w = await createToken(app, 'cli', 'worker', 'cli-w');
    await registerWorker(app, w, 'cli-w');
    const stale = entry({ account: 'cli', script: 'stale', lastUsed: new Date(Date.now() - 3 * 3_600_000).toISOString() });
    const recent = entry({ account: 'cli', script: 'recent' });
    expect((await snapshot(app, w, 'cli-w', [stale, recent])).statusCode).toBe(200);
    const cli = join(process.cwd(), 'dist', 'control', 'cli', 'main.js');
    const env = { ...process.env, DATABASE_URL: db.url };
    const args = ['cleanup', '--json', '--entry-ttl', '2h', '--data-dir', db.dataDir];

    const dry = JSON.parse((await run(process.execPath, [cli, ...args, '--dry-run'], { env })).stdout);
    expect(dry).toMatchObject({ dry_run: true, skipped: false, settings: { entry_ttl_ms: 7_200_000 } });
    // Filtered to this test's worker: the first test's 29-day-old entry is past a 2h TTL too.
    const mine = (items: { worker_id: string; key: string }[]) => items.filter((e) => e.worker_id === 'cli-w').map((e) => e.key);
    expect(mine(dry.entries.items)).toEqual([stale.key]);
    const { rows: still } = await db.pool.query("SELECT count(*)::int AS n FROM cache_entries WHERE worker_id = 'cli-w'");
    expect(still[0].n).toBe(2);

    const real = JSON.parse((await run(process.execPath, [cli, ...args], { env })).stdout);
    expect(mine(real.entries.items)).toEqual([stale.key]);
    const { rows } = await db.pool.query("SELECT key FROM cache_entries WHERE worker_id = 'cli-w'");
    expect(rows.map((r) => r.key)).toEqual([recent.key]);
  });
});
