import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { recordLine, writeWheel } from '../../bench/wheel-zip.js';

const dir = mkdtempSync(join(tmpdir(), 'rgrid-wheel-zip-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Python's own zipfile reads the wheel back: names, bytes, CRCs (testzip) and Unix modes. */
function readBack(path: string): { bad: string | null; entries: Array<{ name: string; mode: number; sha256: string; size: number }> } {
  const script = [
    'import sys, json, zipfile, hashlib',
    'z = zipfile.ZipFile(sys.argv[1])',
    'print(json.dumps({"bad": z.testzip(), "entries": [{"name": i.filename, "mode": (i.external_attr >> 16) & 0o777, "sha256": hashlib.sha256(z.read(i)).hexdigest(), "size": i.file_size} for i in z.infolist()]}))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', script, path], { encoding: 'utf8' })) as ReturnType<typeof readBack>;
}

describe('writeWheel', () => {
  it('writes a zip that an independent reader reads back byte for byte, with modes and a RECORD', () => {
    const big = Buffer.alloc(300_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251; // compressible, but not trivially
    const entries = [
      { name: 'pkg/__init__.py', data: Buffer.from('VALUE = 1\n'), mode: 0o644 },
      { name: 'pkg/ext.cpython-311-x86_64-linux-gnu.so', data: big, mode: 0o755 },
      { name: 'pkg/empty.txt', data: Buffer.alloc(0), mode: 0o644 },
      { name: 'pkg-1.0.dist-info/METADATA', data: Buffer.from('Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n'), mode: 0o644 },
    ];
    const path = join(dir, 'pkg-1.0-py3-none-any.whl');
    writeWheel(path, 'pkg-1.0.dist-info', entries);
    const read = readBack(path);
    expect(read.bad).toBeNull();
    expect(read.entries.map((e) => e.name)).toEqual([...entries.map((e) => e.name), 'pkg-1.0.dist-info/RECORD']);
    for (const e of entries) {
      const got = read.entries.find((r) => r.name === e.name)!;
      expect(got).toMatchObject({ mode: e.mode, size: e.data.length, sha256: createHash('sha256').update(e.data).digest('hex') });
    }
  });

  it('lists every file in RECORD with its urlsafe sha256 and size, and RECORD itself without', () => {
    const path = join(dir, 'rec-1.0-py3-none-any.whl');
    const data = Buffer.from('x = "\u00e9"\n');
    writeWheel(path, 'rec-1.0.dist-info', [{ name: 'rec.py', data, mode: 0o644 }]);
    const record = execFileSync('python3', ['-c', 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read("rec-1.0.dist-info/RECORD").decode(), end="")', path], { encoding: 'utf8' });
    const digest = createHash('sha256').update(data).digest('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    expect(record).toBe(`rec.py,sha256=${digest},${data.length}\nrec-1.0.dist-info/RECORD,,\n`);
    expect(recordLine({ name: 'rec.py', data, mode: 0o644 })).toBe(`rec.py,sha256=${digest},${data.length}`);
  });
});
