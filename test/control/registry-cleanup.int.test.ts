// Cleanup of registry images against a REAL registry (Debian's docker-registry, deletes enabled) holding
// a REAL pushed manifest: an image nobody used for longer than the entry TTL has its manifest deleted
// (the registry then answers 404 for it) and its row removed; an image under a live build lease, pulled
// recently or used recently on a worker is kept; a registry that is down leaves the row for the next
// cleanup and the report says why. Expired leases and failures go too.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { pushImage } from '../../agent/registry/transfer.js';
import { manifestUrl, registryLocation } from '../../common/registry-names.js';
import { runCleanup, type CleanupReport } from '../../control/cleanup.js';
import { createFsBlobStorage } from '../../control/storage/fs-storage.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { build, createToken, entry, registerWorker, sha, snapshot, testConfig, useTestDatabase } from './support.js';

const db = useTestDatabase();
const main = new Docker();
let registry: TestRegistry;
let imageId: string;
const MANIFEST_TYPES = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json';

beforeAll(async () => {
  registry = await startRegistry();
  // One small image, pushed under a different account (repository) for each case.
  const label = `registry-cleanup-${Date.now()}`;
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, `FROM ${inject('baseImageId')}\n`);
  pack.finalize();
  // Tagged: a push removes its own tag afterwards, and an image left without any name would go with it.
  const stream = await main.buildImage(pack as unknown as NodeJS.ReadableStream, { t: `rgrid-test/registry-cleanup:${label}`, labels: { 'io.rgrid.test': label } } as Docker.ImageBuildOptions);
  await new Promise<void>((resolve, reject) => main.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
  imageId = (await main.listImages({ filters: { label: [`io.rgrid.test=${label}`] } }))[0]!.Id;
});

afterAll(async () => {
  await registry?.destroy();
  if (imageId) await main.getImage(imageId).remove({ force: true }).catch(() => undefined);
});

/** Pushes the image as (account, image, key) and records it as pushed `daysAgo` days ago; returns the digest. */
async function pushed(account: string, key: string, daysAgo: number, extra: { lastPulledDaysAgo?: number } = {}): Promise<string> {
  const { digest } = await pushImage(main, registry.address, imageId, registryLocation(registry.address, account, 'image', key), { timeoutMs: 60_000 });
  await recorded(account, key, digest, daysAgo, extra);
  return digest;
}

async function recorded(account: string, key: string, digest: string, daysAgo: number, extra: { lastPulledDaysAgo?: number } = {}): Promise<void> {
  await db.pool.query(
    `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id, requirements_sha256, script_sha256, deps_key, pushed_by, pushed_at, last_pulled_at)
     VALUES ($1, 'image', $2, $3, $4, NULL, 'python3.11', $5, NULL, $6, NULL, 'rc-builder', now() - make_interval(days => $7), $8::timestamptz)`,
    [account, key, registry.address, digest, `sha256:${sha('base')}`, sha(`script:${key}`), daysAgo,
      extra.lastPulledDaysAgo === undefined ? null : new Date(Date.now() - extra.lastPulledDaysAgo * 86_400_000).toISOString()],
  );
}

async function manifestStatus(account: string, digest: string): Promise<number> {
  const res = await fetch(manifestUrl(registry.address, account, digest), { headers: { accept: MANIFEST_TYPES } });
  await res.arrayBuffer();
  return res.status;
}

async function rows(): Promise<string[]> {
  return (await db.pool.query<{ account_id: string }>('SELECT account_id FROM registry_images ORDER BY account_id')).rows.map((r) => r.account_id);
}

const storage = () => createFsBlobStorage(join(db.dataDir, 'blobs'));
const keysOf = (section: CleanupReport['registry_images']['deleted']): string[] => section.items.map((i) => i.account).sort();

describe('registry images in cleanup', () => {
  it('deletes the manifest and row of an image unused past the TTL, keeps leased, pulled and used ones; dry run first changes nothing', async () => {
    const app = await build(db);
    const unused = await pushed('rc-unused', sha('unused'), 40);
    const leased = await pushed('rc-leased', sha('leased'), 40);
    const pulled = await pushed('rc-pulled', sha('pulled'), 40, { lastPulledDaysAgo: 1 });
    const used = await pushed('rc-used', sha('used'), 40);
    // Recorded, but its manifest is not (or no longer) in the registry: the registry's 404 counts as deleted.
    await recorded('rc-gone', sha('gone'), `sha256:${sha('never-pushed')}`, 40);
    // Someone is building rc-leased's key again right now (a live lease); an expired lease and an expired
    // failure of other keys are left-overs.
    await db.pool.query(
      `INSERT INTO build_leases (account_id, kind, key, lease_id, holder, registry, runtime, base_image_id, attempt, expires_at) VALUES
         ('rc-leased', 'image', $1, gen_random_uuid(), 'rc-w', $2, 'python3.11', $3, 1, now() + interval '1 minute'),
         ('rc-leased', 'image', $4, gen_random_uuid(), 'rc-w', $2, 'python3.11', $3, 1, now() - interval '1 minute')`,
      [sha('leased'), registry.address, `sha256:${sha('base')}`, sha('stale-lease')],
    );
    await db.pool.query(
      `INSERT INTO build_failures (account_id, kind, key, error, message, log_tail, failed_by, expires_at) VALUES
         ('rc-leased', 'image', $1, 'build_failed', 'old', '', 'rc-w', now() - interval '1 second'),
         ('rc-leased', 'image', $2, 'build_failed', 'fresh', '', 'rc-w', now() + interval '1 hour')`,
      [sha('old-failure'), sha('fresh-failure')],
    );
    // A worker used rc-used's key yesterday (its cache entry says so), though nobody pulled it.
    const token = await createToken(app, 'rc-used', 'worker', 'rc-used-w');
    await registerWorker(app, token, 'rc-used-w');
    const onWorker = entry({ account: 'rc-used', key: sha('used'), lastUsed: new Date(Date.now() - 86_400_000).toISOString() });
    expect((await snapshot(app, token, 'rc-used-w', [onWorker])).statusCode).toBe(200);

    const settings = testConfig(db, { registry: registry.address });
    const dry = await runCleanup(db.pool, storage(), settings, { dryRun: true, wait: true });
    expect(dry.registry_images).toMatchObject({ registry: registry.address, expired_leases: 1, expired_failures: 1, failed: { count: 0 } });
    expect(keysOf(dry.registry_images.deleted)).toEqual(['rc-gone', 'rc-unused']);
    expect(await manifestStatus('rc-unused', unused)).toBe(200);
    expect(await rows()).toEqual(['rc-gone', 'rc-leased', 'rc-pulled', 'rc-unused', 'rc-used']);

    const real = await runCleanup(db.pool, storage(), settings, { dryRun: false, wait: true });
    expect(real.registry_images).toMatchObject({ expired_leases: 1, expired_failures: 1, failed: { count: 0 } });
    expect(keysOf(real.registry_images.deleted)).toEqual(['rc-gone', 'rc-unused']);
    expect(real.registry_images.deleted.items.find((i) => i.account === 'rc-unused')).toMatchObject({ kind: 'image', key: sha('unused'), manifest_digest: unused });
    expect(await manifestStatus('rc-unused', unused)).toBe(404);
    for (const [account, digest] of [['rc-leased', leased], ['rc-pulled', pulled], ['rc-used', used]] as const) {
      expect(await manifestStatus(account, digest), account).toBe(200);
    }
    expect(await rows()).toEqual(['rc-leased', 'rc-pulled', 'rc-used']);
    expect((await db.pool.query('SELECT key FROM build_leases')).rows).toEqual([{ key: sha('leased') }]);
    expect((await db.pool.query('SELECT message FROM build_failures')).rows).toEqual([{ message: 'fresh' }]);

    // Without a configured registry, registry images are left alone.
    await db.pool.query("UPDATE registry_images SET last_pulled_at = NULL WHERE account_id = 'rc-pulled'");
    const none = await runCleanup(db.pool, storage(), testConfig(db), { dryRun: false, wait: true });
    expect(none.registry_images).toMatchObject({ registry: null, deleted: { count: 0 }, failed: { count: 0 } });
    expect(await rows()).toEqual(['rc-leased', 'rc-pulled', 'rc-used']);
    await db.pool.query('DELETE FROM registry_images');
    await db.pool.query('DELETE FROM build_leases');
    await db.pool.query('DELETE FROM build_failures');
  });

  it('a registry that is down, or credentials that cannot be read, leave the row for the next cleanup, which then deletes it', async () => {
    const digest = await pushed('rc-down', sha('down'), 40);
    const settings = testConfig(db, { registry: registry.address });

    await registry.stop();
    let report: CleanupReport;
    try {
      report = await runCleanup(db.pool, storage(), settings, { dryRun: false, wait: true });
    } finally {
      await registry.start();
    }
    expect(report.registry_images.deleted.count).toBe(0);
    expect(report.registry_images.failed).toMatchObject({ count: 1, items: [{ account: 'rc-down', manifest_digest: digest }] });
    expect(report.registry_images.failed.items[0]?.error).toMatch(/did not answer/);
    expect(await rows()).toEqual(['rc-down']);

    const missing = join(db.dataDir, 'no-such-auth.json');
    const unreadable = await runCleanup(db.pool, storage(), { ...settings, registryAuthFile: missing }, { dryRun: false, wait: true });
    expect(unreadable.registry_images.failed.items[0]?.error).toContain('cannot read the registry auth file');
    expect(await manifestStatus('rc-down', digest)).toBe(200);
    expect(await rows()).toEqual(['rc-down']);

    // With readable credentials (this registry asks for none and ignores them) and the registry back, it goes.
    const authFile = join(db.dataDir, 'registry-auth.json');
    writeFileSync(authFile, JSON.stringify({ username: 'cleaner', password: 'not-in-any-log' }), { mode: 0o600 });
    const again = await runCleanup(db.pool, storage(), { ...settings, registryAuthFile: authFile }, { dryRun: false, wait: true });
    expect(keysOf(again.registry_images.deleted)).toEqual(['rc-down']);
    expect(JSON.stringify(again)).not.toContain('not-in-any-log');
    expect(await manifestStatus('rc-down', digest)).toBe(404);
    expect(await rows()).toEqual([]);
  });
});
