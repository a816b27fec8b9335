import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createBlobCache, type BlobCache } from '../../agent/worker/blob-cache.js';

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const fromBytes = (chunks: Buffer[]): Promise<Readable> => Promise.resolve(Readable.from(chunks));
const mode = (path: string): number => statSync(path).mode & 0o777;
const caches: BlobCache[] = [];
const dirs: string[] = [];

function cache(): { blobs: BlobCache; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-blobs-'));
  const blobs = createBlobCache({ dataDir: dir });
  caches.push(blobs);
  dirs.push(dir);
  return { blobs, dir };
}

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('blob cache', () => {
  const data = Buffer.from('input bytes\n');

  it('keeps files 0600 in 0700 directories', async () => {
    const { blobs, dir } = cache();
    const got = await blobs.ensure(sha(data), () => fromBytes([data]), { size: data.length, maxBytes: 100 });
    expect(got.downloaded).toBe(true);
    expect(mode(got.path)).toBe(0o600);
    expect(mode(join(dir, 'blobs'))).toBe(0o700);
    expect(mode(join(dir, 'blobs', sha(data).slice(0, 2)))).toBe(0o700);
    expect(mode(join(dir, 'blobs', 'tmp'))).toBe(0o700);
    expect(mode(join(dir, 'blob-index'))).toBe(0o700);
  });

  it('narrows a blob widened for a run back to 0600 when the last run unpins it', async () => {
    const { blobs } = cache();
    const { path } = await blobs.ensure(sha(data), () => fromBytes([data]), { maxBytes: 100 });
    const unpinA = blobs.pin([sha(data)]);
    const unpinB = blobs.pin([sha(data)]);
    chmodSync(path, 0o644); // what staging a run's input does to the shared inode
    unpinA();
    expect(mode(path)).toBe(0o644);
    unpinB();
    expect(mode(path)).toBe(0o600);
  });

  it('stops a download that runs past the expected size, and keeps nothing of it', async () => {
    const { blobs, dir } = cache();
    let sent = 0;
    const endless = new Readable({
      read() {
        sent += 65_536;
        this.push(Buffer.alloc(65_536));
      },
    });
    await expect(blobs.ensure(sha(data), () => Promise.resolve(endless), { size: data.length, maxBytes: 1 << 30 })).rejects.toMatchObject({ code: 'digest_mismatch' });
    expect(sent).toBeLessThan(1 << 20);
    await expect(blobs.ensure(sha(data), () => fromBytes([Buffer.alloc(200)]), { maxBytes: 100 })).rejects.toThrow(/longer than the 100 bytes accepted/);
    expect(readdirSync(join(dir, 'blobs', 'tmp'))).toEqual([]);
    expect(await blobs.has(sha(data))).toBe(false);
  });

  it('refuses bytes that do not hash to the digest, or are shorter than the manifest says', async () => {
    const { blobs } = cache();
    await expect(blobs.ensure(sha(data), () => fromBytes([Buffer.from('other')]), { maxBytes: 100 })).rejects.toThrow(/arrived with digest/);
    await expect(blobs.ensure(sha(data), () => fromBytes([data]), { size: data.length + 1, maxBytes: 100 })).rejects.toThrow(/instead of/);
    await blobs.ensure(sha(data), () => fromBytes([data]), { maxBytes: 100 });
    // Cached, but the claim's manifest says another size: refused, not used.
    await expect(blobs.ensure(sha(data), () => fromBytes([data]), { size: 5, maxBytes: 100 })).rejects.toThrow(/has 12 bytes, not the 5 its manifest says/);
  });

  it('never turns something that is not a sha256 into a path', async () => {
    const { blobs, dir } = cache();
    for (const bad of ['../../victim', `${'a'.repeat(62)}/x`, 'A'.repeat(64), '']) {
      expect(() => blobs.pathOf(bad)).toThrow(/is not a sha256/);
      await expect(blobs.ensure(bad, () => fromBytes([data]), { maxBytes: 100 })).rejects.toMatchObject({ code: 'bad_digest' });
    }
    expect(existsSync(join(dir, 'victim'))).toBe(false);
  });
});
