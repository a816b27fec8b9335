/**
 * The verify-while-writing primitive (common/content-store.ts) shared by the control plane's blob store,
 * the agent's blob cache and the client's downloads: content appears under its name only once its
 * digest and size match, nothing is left behind on failure, and no link is ever written through.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { stageContent, writeContent, type ContentWriteOptions } from '../../common/content-store.js';
import { RgridError } from '../../common/errors.js';

const sha = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const data = Buffer.from('the expected bytes\n');
const options: ContentWriteOptions = { label: 'test content', mode: 0o600, dirMode: 0o700 };
const roots: string[] = [];

function root(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-content-'));
  roots.push(dir);
  return dir;
}

/** Every entry under `dir` (files and directories), relative, sorted. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

afterEach(() => {
  for (const dir of roots.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('writeContent', () => {
  it('writes verified content under its name, with the mode asked for, creating directories on the way', async () => {
    const dir = root();
    const written = await writeContent(Readable.from([data.subarray(0, 5), data.subarray(5)]), dir, 'sub/deep/out.txt', { sha256: sha(data), size: data.length }, options);
    expect(written).toEqual({ path: join(dir, 'sub/deep/out.txt'), size: data.length });
    expect(readFileSync(written.path).equals(data)).toBe(true);
    expect(statSync(written.path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'sub')).mode & 0o777).toBe(0o700);
    expect(tree(dir)).toEqual(['sub', 'sub/deep', 'sub/deep/out.txt']);
  });

  it('replaces a regular file already at the target only with verified content', async () => {
    const dir = root();
    writeFileSync(join(dir, 'out.txt'), 'old');
    await expect(writeContent(Readable.from([Buffer.from('other')]), dir, 'out.txt', { sha256: sha(data), maxBytes: 100 }, options)).rejects.toMatchObject({ code: 'digest_mismatch' });
    expect(readFileSync(join(dir, 'out.txt'), 'utf8')).toBe('old');
    await writeContent(Readable.from([data]), dir, 'out.txt', { sha256: sha(data), size: data.length }, options);
    expect(readFileSync(join(dir, 'out.txt')).equals(data)).toBe(true);
  });

  it('refuses bytes whose digest does not match, keeping nothing', async () => {
    const dir = root();
    const err = await writeContent(Readable.from([Buffer.from('tampered bytes\n')]), dir, 'out.txt', { sha256: sha(data), maxBytes: 1000 }, options).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RgridError);
    expect(err).toMatchObject({ code: 'digest_mismatch', detail: { expected: sha(data), actual: sha('tampered bytes\n'), size: 15 } });
    expect((err as Error).message).toContain('test content arrived with digest');
    expect(tree(dir)).toEqual([]);
  });

  it('refuses content shorter or longer than announced, keeping nothing', async () => {
    const dir = root();
    await expect(writeContent(Readable.from([data]), dir, 'a.txt', { sha256: sha(data), size: data.length + 1 }, options))
      .rejects.toMatchObject({ code: 'digest_mismatch', message: `test content arrived with ${data.length} bytes instead of the announced ${data.length + 1}` });
    await expect(writeContent(Readable.from([data]), dir, 'b.txt', { sha256: sha(data), size: 4 }, options))
      .rejects.toMatchObject({ code: 'digest_mismatch', message: 'test content is longer than its announced 4 bytes' });
    expect(tree(dir)).toEqual([]);
  });

  it('cuts an endless stream at the limit instead of filling the disk, with the caller\'s error', async () => {
    const dir = root();
    let sent = 0;
    const endless = new Readable({
      read() {
        sent += 65_536;
        this.push(Buffer.alloc(65_536));
      },
    });
    const tooLong = (limit: number): RgridError => new RgridError('payload_too_large', `over ${limit}`, { limit_bytes: limit });
    await expect(writeContent(endless, dir, 'big.bin', { sha256: sha(data), maxBytes: 100_000 }, { ...options, tooLong })).rejects.toMatchObject({ code: 'payload_too_large', detail: { limit_bytes: 100_000 } });
    // Stopped within a few chunks of the limit (what the streams had buffered), not at the end of anything.
    expect(sent).toBeLessThan(4 * 1024 * 1024);
    expect(endless.destroyed).toBe(true);
    expect(tree(dir)).toEqual([]);
  });

  it('passes on the error of a stream that breaks off, keeping nothing', async () => {
    const dir = root();
    const source = new PassThrough();
    const writing = writeContent(source, dir, 'out.txt', { sha256: sha(data), size: data.length }, options);
    source.write(data.subarray(0, 5));
    setTimeout(() => source.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })), 20);
    await expect(writing).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(tree(dir)).toEqual([]);
  });

  it('refuses a stream that ends early without an error as a size mismatch', async () => {
    const dir = root();
    await expect(writeContent(Readable.from([data.subarray(0, 5)]), dir, 'out.txt', { sha256: sha(data), size: data.length }, options)).rejects.toMatchObject({ code: 'digest_mismatch' });
    expect(tree(dir)).toEqual([]);
  });
});

describe('writeContent never writes through a link', () => {
  it('refuses a symbolic link planted at the target before anything is downloaded, and leaves its target alone', async () => {
    const dir = root();
    const outside = root();
    writeFileSync(join(outside, 'victim.txt'), 'original');
    symlinkSync(join(outside, 'victim.txt'), join(dir, 'out.txt'));
    let opened = false;
    const download = (): Promise<Readable> => {
      opened = true;
      return Promise.resolve(Readable.from([data]));
    };
    await expect(writeContent(download, dir, 'out.txt', { sha256: sha(data), size: data.length }, options))
      .rejects.toMatchObject({ code: 'bad_file_name', message: expect.stringContaining('is a symbolic link; nothing written there') as string });
    expect(opened).toBe(false);
    expect(readFileSync(join(outside, 'victim.txt'), 'utf8')).toBe('original');
    expect(lstatSync(join(dir, 'out.txt')).isSymbolicLink()).toBe(true);
    expect(tree(dir)).toEqual(['out.txt']);
  });

  it('refuses a link to a directory on the way', async () => {
    const dir = root();
    const outside = root();
    symlinkSync(outside, join(dir, 'sub'));
    await expect(writeContent(Readable.from([data]), dir, 'sub/out.txt', { sha256: sha(data), size: data.length }, options)).rejects.toMatchObject({ code: 'bad_file_name' });
    expect(readdirSync(outside)).toEqual([]);
  });

  it('refuses a link planted between verification and commit, and removes the staged file', async () => {
    const dir = root();
    const staging = join(dir, 'tmp');
    const outside = root();
    writeFileSync(join(outside, 'victim.txt'), 'original');
    const staged = await stageContent(Readable.from([data]), dir, 'ab/blob', { sha256: sha(data), size: data.length }, { ...options, stagingDir: staging });
    expect(readdirSync(staging)).toHaveLength(1);
    symlinkSync(join(outside, 'victim.txt'), join(dir, 'ab', 'blob'));
    await expect(staged.commit()).rejects.toMatchObject({ code: 'bad_file_name' });
    expect(readFileSync(join(outside, 'victim.txt'), 'utf8')).toBe('original');
    expect(readdirSync(staging)).toEqual([]);
  });

  it('refuses a directory at the target and a name that leaves the directory', async () => {
    const dir = root();
    mkdirSync(join(dir, 'out.txt'));
    await expect(writeContent(Readable.from([data]), dir, 'out.txt', { sha256: sha(data), size: data.length }, options)).rejects.toMatchObject({ code: 'bad_file_name' });
    for (const name of ['../escape.txt', '/etc/escape.txt', 'a/../../escape.txt', '']) {
      await expect(writeContent(Readable.from([data]), dir, name, { sha256: sha(data), size: data.length }, options)).rejects.toBeInstanceOf(RgridError);
    }
    expect(existsSync(join(dir, '..', 'escape.txt'))).toBe(false);
  });
});

describe('stageContent', () => {
  it('keeps verified content out of sight until commit, in the staging directory, and discard removes it', async () => {
    const dir = root();
    const staging = join(dir, 'tmp');
    const staged = await stageContent(Readable.from([data]), dir, 'ab/blob', { sha256: sha(data), size: data.length }, { ...options, stagingDir: staging });
    expect(existsSync(join(dir, 'ab', 'blob'))).toBe(false);
    expect(readdirSync(staging)).toHaveLength(1);
    await staged.commit();
    expect(readFileSync(join(dir, 'ab', 'blob')).equals(data)).toBe(true);
    expect(readdirSync(staging)).toEqual([]);

    const other = Buffer.from('other');
    const dropped = await stageContent(Readable.from([other]), dir, 'cd/blob', { sha256: sha(other), size: other.length }, { ...options, stagingDir: staging });
    await dropped.discard();
    expect(readdirSync(staging)).toEqual([]);
    expect(existsSync(join(dir, 'cd', 'blob'))).toBe(false);
  });

  it('leaves the source open on failure when asked to (the control plane still answers on the request)', async () => {
    const dir = root();
    const source = new PassThrough();
    const staging = stageContent(source, dir, 'x', { sha256: sha(data), maxBytes: 4 }, { ...options, keepSource: true });
    source.write(Buffer.alloc(10));
    await expect(staging).rejects.toMatchObject({ code: 'digest_mismatch' });
    expect(source.destroyed).toBe(false);
    source.destroy();
  });
});
