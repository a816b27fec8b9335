import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  depsKey,
  imageKey,
  inputSha256,
  pipSettingsFingerprint,
  requirementsDigest,
  scriptSha256,
} from '../../common/cache-keys.js';
import { sha256File } from '../../common/digest.js';
import { RgridError } from '../../common/errors.js';

// Vectors are computed here (node:crypto independently of the module), never copied.
const sha = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const BASE = `sha256:${sha('a base image')}`;
const pip = pipSettingsFingerprint([], ['--find-links=/wheels', '--no-index']);

function keysFor(script: string, requirements: string | null): { deps: string | null; image: string } {
  const deps = requirements === null ? null : depsKey({ baseImageId: BASE, requirementsSha256: requirementsDigest(requirements).sha256, pipFingerprint: pip });
  return { deps, image: imageKey({ depsKey: deps, baseImageId: BASE, scriptSha256: scriptSha256(script) }) };
}

describe('script_sha256', () => {
  it("is sha256 of the exact bytes (print('hello') → 96f43d52…)", () => {
    const digest = scriptSha256("print('hello')");
    expect(digest).toBe(sha("print('hello')"));
    expect(digest.startsWith('96f43d52')).toBe(true);
    // No newline or encoding rewriting.
    expect(scriptSha256("print('hello')\n")).not.toBe(digest);
    expect(scriptSha256("print('hello')\r\n")).not.toBe(scriptSha256("print('hello')\n"));
  });

  it('streams files to the same digest as in-memory hashing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-digest-'));
    try {
      const data = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
      writeFileSync(join(dir, 'f'), data);
      expect(await sha256File(join(dir, 'f'))).toEqual({ sha256: sha(data), size: data.length });
      // Edge sizes of the double-buffered reader: empty, exactly one chunk, an exact multiple of it.
      for (const size of [0, 1 << 20, 2 << 20]) {
        const bytes = Buffer.alloc(size, size % 251);
        writeFileSync(join(dir, `e${size}`), bytes);
        expect(await sha256File(join(dir, `e${size}`))).toEqual({ sha256: sha(bytes), size });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('image_key', () => {
  it('changes when the requirements change, for the same script', () => {
    const script = 'import alpha\n';
    const a = keysFor(script, 'alpha==1.0\n');
    const b = keysFor(script, 'alpha==1.1\n');
    const none = keysFor(script, null);
    expect(a.image).not.toBe(b.image);
    expect(a.deps).not.toBe(b.deps);
    expect(none.image).not.toBe(a.image);
    expect(keysFor(script, 'alpha==1.0\n').image).toBe(a.image); // revert = same key
  });

  it('changes with the base image and the pip settings', () => {
    const req = requirementsDigest('alpha==1.0').sha256;
    const k1 = depsKey({ baseImageId: BASE, requirementsSha256: req, pipFingerprint: pip });
    expect(depsKey({ baseImageId: `sha256:${sha('other base')}`, requirementsSha256: req, pipFingerprint: pip })).not.toBe(k1);
    expect(depsKey({ baseImageId: BASE, requirementsSha256: req, pipFingerprint: pipSettingsFingerprint(['--index-url=https://x/simple'], []) })).not.toBe(k1);
  });

  it('rejects malformed digests', () => {
    expect(() => imageKey({ depsKey: null, baseImageId: BASE, scriptSha256: 'ABC' })).toThrow(RgridError);
    expect(() => imageKey({ depsKey: 'z'.repeat(64), baseImageId: BASE, scriptSha256: sha('x') })).toThrow(/deps_key/);
  });
});

describe('input_sha256', () => {
  it('changes when the contents of two files are swapped', () => {
    const a = Buffer.from('1,2,3\n');
    const b = Buffer.from('4,5,6\n');
    const manifest = (x: Buffer, y: Buffer): string =>
      inputSha256([
        { name: 'a.csv', sha256: sha(x), size: x.length },
        { name: 'b.csv', sha256: sha(y), size: y.length },
      ]);
    expect(manifest(a, b)).not.toBe(manifest(b, a));
  });

  it('does not depend on the order files are listed in', () => {
    const f1 = { name: 'a.csv', sha256: sha('1'), size: 1 };
    const f2 = { name: 'b.csv', sha256: sha('2'), size: 1 };
    expect(inputSha256([f1, f2])).toBe(inputSha256([f2, f1]));
  });
});

describe('requirements_sha256', () => {
  const reference = requirementsDigest('numpy==1.26.4\nrequests[socks]>=2.31\nscikit-learn==1.4.0\n').sha256;

  it('ignores PEP 503 name spellings, comments, blank lines and order', () => {
    const variant = [
      '# analysis deps',
      '',
      'Scikit_Learn==1.4.0   # the ML bits',
      'REQUESTS[socks] >= 2.31',
      '   numpy == 1.26.4',
      'numpy==1.26.4',
      '',
    ].join('\n');
    expect(requirementsDigest(variant).sha256).toBe(reference);
    expect(requirementsDigest('scikit.learn==1.4.0\nnumpy==1.26.4\nrequests[socks]>=2.31').sha256).toBe(reference);
  });

  it('equals the sha256 of an already-canonical file (the seed spec digest)', () => {
    const canonical = 'numpy==1.26.4\nrequests[socks]>=2.31\nscikit-learn==1.4.0';
    expect(reference).toBe(sha(canonical));
  });

  it('changes when a version changes', () => {
    expect(requirementsDigest('numpy==1.26.5\nrequests[socks]>=2.31\nscikit-learn==1.4.0').sha256).not.toBe(reference);
  });

  it.each([
    ['-r other.txt', /line 2/],
    ['-c constraints.txt', /constraints/],
    ['-e ./local/pkg', /editable/],
    ['./local/pkg', /local/],
    ['pkg @ file:///tmp/pkg.whl', /local/],
  ])('rejects the unreproducible line %s, naming it', (line, why) => {
    expect(() => requirementsDigest(`numpy\n${line}\n`)).toThrow(why);
    try {
      requirementsDigest(`numpy\n${line}\n`);
    } catch (err) {
      expect((err as RgridError).code).toBe('bad_requirements');
      expect((err as Error).message).toContain(line.split(' ')[0]);
    }
  });

  it('rejects requirements that are not UTF-8', () => {
    expect(() => requirementsDigest(Buffer.from([0x6e, 0x75, 0x6d, 0x70, 0x79, 0xe9, 0x0a]))).toThrow(/UTF-8/);
  });
});
