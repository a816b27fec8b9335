/**
 * `rgrid run` against a control plane that answers what the real one must not: output names that climb
 * out of the output directory, absolute names, names with terminal escapes, links planted in the output
 * directory, bytes that do not match their digest or size, blobs asked for that were never offered.
 * Nothing may be written outside the output directory, and nothing unverified may stay inside it.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlApi } from '../../client/api.js';
import { runRemote } from '../../client/run.js';
import { startFakeControl, type FakeControl, type FakeRunOptions } from './fake-control.js';

let fake: FakeControl | undefined;
let api: ControlApi | undefined;
const roots: string[] = [];
afterEach(async () => {
  await api?.close();
  await fake?.close();
  api = fake = undefined;
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

/** A fresh tree: `root/work/out` is the output directory, `root` is what must stay untouched. */
function tree(): { root: string; out: string; script: string } {
  const root = mkdtempSync(join(tmpdir(), 'rgrid-client-hostile-'));
  roots.push(root);
  const work = join(root, 'work');
  mkdirSync(work);
  const script = join(work, 'job.py');
  writeFileSync(script, 'print("hi")\n');
  return { root, out: join(work, 'out'), script };
}

async function run(options: FakeRunOptions, t: ReturnType<typeof tree>) {
  fake = await startFakeControl(options);
  api = new ControlApi(fake.url, 'rgrid_test_token');
  return runRemote(api, { script: t.script, inputs: [], runtime: 'python3.11', outputDir: t.out, progress: false });
}

/** Every file under `dir`, as relative paths. */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }))
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('rgrid run refuses output names from the control plane that leave the output directory', () => {
  const hostile = ['../../x.sh', '../../../../tmp/rgrid-client-escape-x', '/etc/rgrid-client-x', 'a\u001b[2J', 'ok/../../x.sh', 'a\\..\\x', '.', ''];
  for (const name of hostile) {
    it(`writes nothing for an output named ${JSON.stringify(name)}, and keeps the logs`, async () => {
      const t = tree();
      const result = await run({ stdout: 'script said hi\n', outputs: [{ name: 'good.txt', content: Buffer.from('good') }, { name, content: Buffer.from('#!/bin/sh\necho pwned\n') }] }, t);
      expect(result.outputsError?.code).toBe('bad_response');
      expect(result.outputsError?.message).not.toMatch(/[\u0000-\u001f]/);
      // Nothing at all written: the list is refused before the first file.
      expect(files(t.root)).toEqual(['work/job.py']);
      expect(existsSync('/tmp/rgrid-client-escape-x')).toBe(false);
      expect(existsSync('/etc/rgrid-client-x')).toBe(false);
      expect(result.stdout).toBe('script said hi\n');
      expect(result.outputDir).toBeNull();
    });
  }

  it('refuses a name listed twice, and a name that is both a file and a directory', async () => {
    for (const outputs of [[{ name: 'a.txt', content: Buffer.from('1') }, { name: 'a.txt', content: Buffer.from('2') }], [{ name: 'a', content: Buffer.from('1') }, { name: 'a/b', content: Buffer.from('2') }]]) {
      const t = tree();
      const result = await run({ outputs }, t);
      expect(result.outputsError?.code).toBe('bad_response');
      expect(files(t.out)).toEqual([]);
      await api?.close();
      await fake?.close();
    }
  });
});

describe('rgrid run writes outputs without following links planted in the output directory', () => {
  it('leaves the target of a planted file link and of a planted directory link untouched', async () => {
    const t = tree();
    const elsewhere = join(t.root, 'elsewhere');
    mkdirSync(elsewhere);
    writeFileSync(join(elsewhere, 'target.txt'), 'original');
    mkdirSync(t.out);
    symlinkSync(join(elsewhere, 'target.txt'), join(t.out, 'out.txt'));
    symlinkSync(elsewhere, join(t.out, 'sub'));
    const result = await run({ outputs: [{ name: 'out.txt', content: Buffer.from('overwritten') }, { name: 'sub/inner.txt', content: Buffer.from('planted') }] }, t);
    expect(result.outputsError?.code).toBe('bad_file_name');
    expect(readFileSync(join(elsewhere, 'target.txt'), 'utf8')).toBe('original');
    expect(readdirSync(elsewhere)).toEqual(['target.txt']);
  });

  it('writes valid outputs, subdirectories kept, with their exact bytes', async () => {
    const t = tree();
    const result = await run({ outputs: [{ name: 'a.txt', content: Buffer.from('alpha') }, { name: 'plots/deep/b.bin', content: Buffer.alloc(300_000, 7) }] }, t);
    expect(result.outputsError).toBeUndefined();
    expect(files(t.out)).toEqual(['a.txt', 'plots/deep/b.bin']);
    expect(readFileSync(join(t.out, 'plots/deep/b.bin')).equals(Buffer.alloc(300_000, 7))).toBe(true);
  });
});

describe('rgrid run verifies downloaded outputs against their sha256 and size', () => {
  it('removes a file whose bytes do not match its sha256', async () => {
    const t = tree();
    const result = await run({ outputs: [{ name: 'r.txt', content: Buffer.from('tampered'), sha256: 'c'.repeat(64) }] }, t);
    expect(result.outputsError?.code).toBe('digest_mismatch');
    expect(files(t.out)).toEqual([]);
  });

  it('stops and removes a file longer than its announced size, and one shorter', async () => {
    for (const size of [3, 100]) {
      const t = tree();
      const result = await run({ outputs: [{ name: 'r.txt', content: Buffer.from('0123456789'), size }] }, t);
      expect(result.outputsError?.code).toBe('digest_mismatch');
      expect(result.outputsError?.message).toContain('announced');
      expect(files(t.out)).toEqual([]);
      await api?.close();
      await fake?.close();
    }
  });
});

describe('rgrid run refuses other answers that break the wire contract', () => {
  it('refuses a manifest answer asking for a blob it was never offered (no file of the user is read for it)', async () => {
    const t = tree();
    fake = await startFakeControl();
    fake.intercept((req, res) => {
      if (req.url !== '/v1/manifests') return false;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ input_sha256: 'b'.repeat(64), files: [], total_size: 0, missing: ['d'.repeat(64)], created: true }));
      return true;
    });
    api = new ControlApi(fake.url, 'rgrid_test_token');
    await expect(runRemote(api, { script: t.script, inputs: [], runtime: 'python3.11', outputDir: t.out, progress: false })).rejects.toMatchObject({ code: 'bad_response' });
    expect(fake.requests.filter((r) => r.method === 'PUT')).toEqual([]);
  });

  it('refuses an execution whose id is not a UUID, before waiting on it', async () => {
    const t = tree();
    fake = await startFakeControl();
    fake.intercept((req, res) => {
      if (req.url !== '/v1/executions/submit') return false;
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: '../../admin', status: 'queued', outputs: [] }));
      return true;
    });
    api = new ControlApi(fake.url, 'rgrid_test_token');
    await expect(runRemote(api, { script: t.script, inputs: [], runtime: 'python3.11', outputDir: t.out, progress: false })).rejects.toMatchObject({ code: 'bad_response' });
    expect(fake.requests.some((r) => r.path.includes('admin'))).toBe(false);
  });
});
