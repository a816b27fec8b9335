import { mkdtempSync, readFileSync, rmSync, symlinkSync, mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Value } from 'typebox/value';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  assertAccount, assertInputFileName, assertOutputPath, assertUuid, assertWorkerId, fileNameProblem, isStorableText, shown, storableLog,
} from '../../common/names.js';
import { openInside } from '../../common/safe-write.js';
import { AccountId, ManifestFile, OutputFile, Timestamp } from '../../common/wire/control-api.js';
import { CompleteRequest } from '../../common/wire/dispatch-api.js';

const HOSTILE_PATHS = [
  '../../x.sh', '../../../../tmp/x', '/etc/passwd', 'a/../../b', '..', '.', 'a//b', 'a/', '', 'a\\..\\b',
  'ok\u0000.txt', 'esc\u001b[31m.txt', 'bidi\u202egpj.exe', 'iso\u2066x', 'c1\u0085x', 'lone\ud800x', `${'x'.repeat(256)}`,
];

describe('file names', () => {
  it('refuses every hostile output path, in the function and in the wire schema alike', () => {
    for (const name of HOSTILE_PATHS) {
      expect(() => assertOutputPath(name), JSON.stringify(name)).toThrow(/output file name/);
      expect(Value.Check(OutputFile, { name, sha256: 'a'.repeat(64), size: 1 }), JSON.stringify(name)).toBe(false);
    }
  });

  it('keeps subdirectories in outputs but only one segment in inputs', () => {
    expect(assertOutputPath('plots/2024/a.png')).toBe('plots/2024/a.png');
    expect(() => assertInputFileName('plots/a.png')).toThrow(/path separator/);
    expect(Value.Check(ManifestFile, { name: 'plots/a.png', sha256: 'a'.repeat(64), size: 1 })).toBe(false);
    expect(Value.Check(ManifestFile, { name: 'données.csv', sha256: 'a'.repeat(64), size: 1 })).toBe(true);
  });

  it('agrees between the schema pattern and the function for arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (name) => {
        const byFunction = fileNameProblem(name, true) === undefined;
        const bySchema = Value.Check(OutputFile, { name, sha256: 'a'.repeat(64), size: 0 });
        expect(bySchema).toBe(byFunction);
      }),
      { numRuns: 2000 },
    );
  });

  it('accepts every path made of safe segments', () => {
    const segment = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_. -]{0,20}$/).filter((s) => s !== '.' && s !== '..');
    fc.assert(fc.property(fc.array(segment, { minLength: 1, maxLength: 5 }), (parts) => {
      expect(assertOutputPath(parts.join('/'))).toBe(parts.join('/'));
    }));
  });
});

describe('names and ids', () => {
  it('accepts org:team and user@org accounts everywhere, refuses separators and controls', () => {
    for (const ok of ['acme', 'org:team', 'user@org', 'a.b_c-d']) {
      expect(assertAccount(ok)).toBe(ok);
      expect(Value.Check(AccountId, ok)).toBe(true);
    }
    for (const bad of ['', '-x', 'a/b', 'a b', 'x'.repeat(65), 'a\u0000', '../x']) {
      expect(() => assertAccount(bad)).toThrow(/account/);
      expect(Value.Check(AccountId, bad)).toBe(false);
    }
  });

  it('bounds worker ids to what the router carries and execution ids to UUIDs', () => {
    expect(assertWorkerId('w'.repeat(128))).toHaveLength(128);
    expect(() => assertWorkerId('w'.repeat(129))).toThrow(/worker id/);
    expect(() => assertUuid('../../../victim', 'execution_id')).toThrow(/execution_id "..\/..\/..\/victim" is not valid/);
    expect(assertUuid('0f8fad5b-d9cb-469f-a165-70867728950e')).toBe('0f8fad5b-d9cb-469f-a165-70867728950e');
  });

  it('shows a hostile name escaped, never raw', () => {
    const text = shown('a\u001b[2Jb\u202ec');
    expect(text).not.toMatch(/[\u001b\u202e]/);
    expect(text).toContain('\\u001b');
    expect(text).toContain('\\u202e');
  });
});

describe('stored text', () => {
  it('refuses NUL and lone surrogates in stored fields but keeps logs, replacing NUL', () => {
    expect(isStorableText('plain ✓')).toBe(true);
    expect(isStorableText('a\u0000b')).toBe(false);
    expect(isStorableText('a\udc00b')).toBe(false);
    expect(storableLog('a\u0000b\ud800')).toBe('a\uFFFDb\uFFFD');
    const base = { claim_id: '0f8fad5b-d9cb-469f-a165-70867728950e', outcome: 'done' };
    expect(Value.Check(CompleteRequest, { ...base, error: 'x\u0000' })).toBe(false);
    expect(Value.Check(CompleteRequest, { ...base, stdout: 'x\u0000' })).toBe(true);
    expect(Value.Check(CompleteRequest, { ...base, exit_code: 2 ** 31 })).toBe(false);
    expect(Value.Check(CompleteRequest, { ...base, exit_code: -(2 ** 31) })).toBe(true);
  });

  it('reads timestamps one way: no leap second, no five-digit year', () => {
    expect(Value.Check(Timestamp, '2026-12-01T10:00:00Z')).toBe(true);
    expect(Value.Check(Timestamp, '2026-12-01T10:00:00.123+02:00')).toBe(true);
    expect(Value.Check(Timestamp, '2016-12-31T23:59:60Z')).toBe(false);
    expect(Value.Check(Timestamp, '+20000-01-01T00:00:00Z')).toBe(false);
  });
});

describe('openInside', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-safe-write-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes nested outputs inside the directory', async () => {
    const handle = await openInside(join(dir), 'a/b/c.txt');
    await handle.writeFile('ok');
    await handle.close();
    expect(readFileSync(join(dir, 'a', 'b', 'c.txt'), 'utf8')).toBe('ok');
  });

  it('refuses traversal and never follows a planted link, writing nothing outside', async () => {
    const outside = mkdtempSync(join(tmpdir(), 'rgrid-outside-'));
    try {
      const out = join(dir, 'out');
      mkdirSync(out);
      await expect(openInside(out, '../x.sh')).rejects.toThrow(/output file name/);
      symlinkSync(outside, join(out, 'link'));
      await expect(openInside(out, 'link/x.sh')).rejects.toThrow(/not a directory/);
      writeFileSync(join(outside, 'target'), 'original');
      symlinkSync(join(outside, 'target'), join(out, 'file'));
      await expect(openInside(out, 'file')).rejects.toThrow(/symbolic link/);
      expect(readFileSync(join(outside, 'target'), 'utf8')).toBe('original');
      expect(existsSync(join(outside, 'x.sh'))).toBe(false);
      expect(existsSync(join(dir, 'x.sh'))).toBe(false);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
