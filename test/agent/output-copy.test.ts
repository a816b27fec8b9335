import { PassThrough, Readable, Writable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { chunkEventSink, copyOutputTar, type OutputSink } from '../../agent/runner/outputs.js';
import type { OutputLimits } from '../../agent/runner/sandbox.js';

const MiB = 1024 * 1024;
const limits: OutputLimits = { maxBytes: 4 * MiB, maxFileBytes: 3 * MiB, maxFiles: 3, copyTimeoutMs: 60_000 };

type Entry = { name: string; size?: number; data?: Buffer; type?: 'file' | 'symlink' | 'directory'; linkname?: string };

/** An archive as the engine sends it (entries under `outputs/`); a sized entry without data is never finished. */
function archive(entries: Entry[]): Readable {
  const pack = tar.pack();
  // The copy destroys the stream when it stops early; the packing side then fails, which is expected.
  pack.on('error', () => undefined);
  void (async () => {
    for (const e of entries) {
      const header = { name: `outputs/${e.name}`, type: e.type ?? 'file', size: e.size ?? e.data?.length ?? 0, ...(e.linkname ? { linkname: e.linkname } : {}) };
      if (e.type && e.type !== 'file') {
        pack.entry(header);
        continue;
      }
      if (!e.data && e.size) {
        // Only the header: the bytes of a 2 GiB sparse file would follow; the copy must not wait for them.
        pack.entry(header);
        return;
      }
      await new Promise<void>((resolve, reject) => pack.entry(header, e.data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())));
    }
    pack.finalize();
  })().catch(() => undefined);
  // A Node stream, like the engine's HTTP response.
  return Readable.from(pack);
}

/** Records what reached the host: which files were opened and how many bytes were written. */
function recordingSink(): { sink: OutputSink; opened: string[]; bytes: () => number } {
  const opened: string[] = [];
  let bytes = 0;
  return {
    opened,
    bytes: () => bytes,
    sink: (file) => {
      opened.push(file.name);
      return Promise.resolve(new Writable({ write(chunk: Buffer, _e, cb) { bytes += chunk.length; cb(); } }));
    },
  };
}

describe('copying outputs within the limits', () => {
  it('copies regular files with their subdirectories and skips links and unsafe names', async () => {
    const rec = recordingSink();
    const got = await copyOutputTar(archive([
      { name: '', type: 'directory' },
      { name: 'sub', type: 'directory' },
      { name: 'a.txt', data: Buffer.from('hello') },
      { name: 'sub/b.csv', data: Buffer.from('1,2\n') },
      { name: 'link', type: 'symlink', linkname: '/etc/passwd' },
    ]), limits, rec.sink);
    expect(got).toEqual({ files: [{ name: 'a.txt', size: 5 }, { name: 'sub/b.csv', size: 4 }], skipped: ['link'], exceeded: null });
    expect(rec.bytes()).toBe(9);
  });

  it('cuts a 2 GiB sparse file at its header: nothing of it is read or written', async () => {
    const rec = recordingSink();
    const got = await copyOutputTar(archive([{ name: 'small.txt', data: Buffer.from('x') }, { name: 'big', size: 2 * 1024 * MiB }]), limits, rec.sink);
    expect(got.files).toEqual([]);
    expect(got.exceeded).toMatch(/output "big" is 2048 MiB, over the 3 MiB limit per file/);
    expect(rec.opened).toEqual(['small.txt']);
    expect(rec.bytes()).toBe(1);
  });

  it('cuts when the files together pass the total, having written no more than the total', async () => {
    const rec = recordingSink();
    const part = Buffer.alloc(2 * MiB + 1, 7);
    const got = await copyOutputTar(archive([{ name: 'p1', data: part }, { name: 'p2', data: part }]), limits, rec.sink);
    expect(got.exceeded).toMatch(/outputs total more than 4 MiB/);
    expect(rec.bytes()).toBeLessThanOrEqual(limits.maxBytes);
    expect(rec.opened).toEqual(['p1']);
  });

  it('cuts at the file count', async () => {
    const files = ['1', '2', '3', '4'].map((name) => ({ name, data: Buffer.from(name) }));
    const got = await copyOutputTar(archive(files), limits, undefined);
    expect(got).toEqual({ files: [], skipped: [], exceeded: 'more than 3 output files (run_max_output_files)' });
  });

  it('cuts a copy that takes longer than its wall-clock bound', async () => {
    const stalled = new PassThrough();
    const got = await copyOutputTar(stalled, { ...limits, copyTimeoutMs: 50 }, undefined);
    expect(got.exceeded).toMatch(/took longer than 0.05 s/);
    expect(stalled.destroyed).toBe(true);
  });

  it('turns files into base64 chunk events for the socket API', async () => {
    const events: Array<{ name: string; data: string; eof: boolean }> = [];
    await copyOutputTar(archive([{ name: 'a.txt', data: Buffer.from('hello') }, { name: 'empty', data: Buffer.alloc(0) }]), limits, chunkEventSink((c) => events.push(c)));
    expect(events).toEqual([{ name: 'a.txt', data: Buffer.from('hello').toString('base64'), eof: true }, { name: 'empty', data: '', eof: true }]);
  });
});
