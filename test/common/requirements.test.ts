import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { canonicalizeRequirements, pipLogicalLines, renderLine, splitLinesLikePython, type CanonicalRequirements } from '../../common/requirements.js';

// pip splits a requirements file with Python's str.splitlines(); these are the breaks beyond \n and \r.
const PYTHON_ONLY_BREAKS: Array<[string, string]> = [
  ['\\x0b', '\v'],
  ['\\x0c', '\f'],
  ['\\x1c', '\x1c'],
  ['\\x1d', '\x1d'],
  ['\\x1e', '\x1e'],
  ['\\x85', '\x85'],
  ['\\u2028', '\u2028'],
  ['\\u2029', '\u2029'],
];

function refusal(text: string): RgridError {
  try {
    canonicalizeRequirements(text);
  } catch (err) {
    expect(err).toBeInstanceOf(RgridError);
    return err as RgridError;
  }
  throw new Error(`accepted: ${JSON.stringify(text)}`);
}

function kinds(req: CanonicalRequirements): Array<[string, number]> {
  return req.restricted.map((r) => [r.kind, r.line.lineNo]);
}

describe('line splitting is Python str.splitlines()', () => {
  it('agrees with python3 on random text over every break character', () => {
    const alphabet = fc.constantFrom('a', '-', ' ', '\\', '#', '\n', '\r', '\t', '\x1f', '\xa0', ...PYTHON_ONLY_BREAKS.map(([, c]) => c));
    const samples = fc.sample(fc.array(alphabet, { maxLength: 24 }).map((a) => a.join('')), { numRuns: 400, seed: 20240611 });
    samples.push('', '\n', 'a\r\nb', 'a\r\r\nb', 'a\n\n', '\r');
    const python = JSON.parse(
      execFileSync('python3', ['-c', 'import json,sys; print(json.dumps([s.splitlines() for s in json.load(sys.stdin)]))'], { input: JSON.stringify(samples), encoding: 'utf8' }),
    ) as string[][];
    samples.forEach((sample, i) => expect(splitLinesLikePython(sample).map((l) => l.text), JSON.stringify(sample)).toEqual(python[i]));
  });
});

describe('smuggling a forbidden line behind a break pip sees and a plain reader does not', () => {
  it.each(PYTHON_ONLY_BREAKS)('%s before -r is refused, naming pip\'s line 2 and the break', (shown, c) => {
    const err = refusal(`six==1.16${c}-r/etc/passwd\n`);
    expect(err.code).toBe('bad_requirements');
    expect(err.message).toContain('requirements line 2');
    expect(err.message).toContain(`at the ${shown} before it`);
    expect(err.message).toContain('"-r/etc/passwd"');
    expect(err.message).toContain('-r includes another requirements file');
    expect(err.message).not.toMatch(/[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/);
  });

  it.each(PYTHON_ONLY_BREAKS)('%s before -e is refused', (_shown, c) => {
    expect(refusal(`six==1.16${c}-e git+https://example.invalid/x.git#egg=x`).message).toMatch(/line 2 .*-e installs an editable project/);
  });

  it.each(PYTHON_ONLY_BREAKS)('%s before --index-url makes it an index option of line 2 (for the build policy)', (_shown, c) => {
    const req = canonicalizeRequirements(`six==1.16${c}--index-url http://127.0.0.1:9/simple\n`);
    expect(kinds(req)).toEqual([['index', 2]]);
    expect(req.lines).toEqual(['six==1.16']);
    expect(req.pipOptions).toEqual(['--index-url=http://127.0.0.1:9/simple']);
  });

  it.each(PYTHON_ONLY_BREAKS)('%s before a URL makes it a direct-URL line 2 (for the build policy)', (_shown, c) => {
    expect(kinds(canonicalizeRequirements(`six==1.16${c}https://example.invalid/evil-1.0-py3-none-any.whl`))).toEqual([['direct_url', 2]]);
    expect(kinds(canonicalizeRequirements(`six==1.16${c}evil @ https://example.invalid/evil.whl`))).toEqual([['direct_url', 2]]);
  });

  it('a control character that is no line break is refused, escaped in the message', () => {
    const err = refusal('six==1.16\x1f-r x\n');
    expect(err.message).toContain('\\x1f');
    expect(err.message).not.toContain('\x1f');
    expect(refusal('six==1.16\u202e1.0\n').message).toContain('\\u202e');
  });
});

describe("pip's continuation and comment rules", () => {
  it('joins backslash continuations, numbering by the first line, stripping every edge backslash', () => {
    expect(pipLogicalLines('six==1.0 \\\n  --hash=sha256:aa \\\\\n\\\\--hash=sha256:bb \\\n\nx')).toEqual([
      { lineNo: 1, text: 'six==1.0   --hash=sha256:aa --hash=sha256:bb' },
      { lineNo: 5, text: 'x' },
    ]);
    // Only a continued line loses its backslashes: a final line keeps a leading one.
    expect(pipLogicalLines('a \\\n\\b')).toEqual([{ lineNo: 1, text: 'a \\b' }]);
  });

  it('a comment line ends a continuation and is dropped; a # after Python whitespace starts a comment', () => {
    expect(pipLogicalLines('a==1 \\\n# note \\\nb==2\\\n')).toEqual([
      { lineNo: 1, text: 'a==1' },
      { lineNo: 3, text: 'b==2' },
    ]);
    // \x1f and \xa0 are whitespace to Python: the comment goes, exactly as pip drops it.
    expect(canonicalizeRequirements('six==1.0\x1f# -r x\nabc==1\xa0#c\n').lines).toEqual(['abc==1', 'six==1.0']);
    // A # glued to the text is no comment (URL fragments).
    expect(pipLogicalLines('pkg @ https://h/p.whl#sha256=ab')[0]!.text).toBe('pkg @ https://h/p.whl#sha256=ab');
  });

  it('a continuation cannot hide -r inside a requirement line either', () => {
    expect(refusal('six==1.0\\\v\v-r /etc/passwd\n').message).toMatch(/line 3 .*-r includes/);
    // Joined into one line pip reads `six==1.0 -r x` as a requirement with an option: refused too.
    expect(refusal('six==1.0 \\\v-r /etc/passwd\n').message).toMatch(/line 1 .*unsupported per-requirement option -r/);
    // Glued to the version it is no valid specifier.
    expect(refusal('six==1.0\\\v-r /etc/passwd\n').message).toMatch(/line 1 .*version specifier/);
  });

  it('keeps hashes on continued lines and the historical canonical text', () => {
    const req = canonicalizeRequirements('Six==1.16.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:aa\n');
    expect(req.text).toBe('six==1.16.0 --hash=sha256:aa --hash=sha256:bb');
  });
});

describe('index options (refused or allowed by the build policy, never silently)', () => {
  it.each([
    ['--index-url http://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['--index-url=http://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['-i http://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['-ihttp://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['--pypi-url http://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['--index=http://127.0.0.1:9/simple', '--index-url=http://127.0.0.1:9/simple'],
    ['--extra-index-url http://127.0.0.1:9/simple', '--extra-index-url=http://127.0.0.1:9/simple'],
    ['--extra http://127.0.0.1:9/simple', '--extra-index-url=http://127.0.0.1:9/simple'],
    ['--trusted-host 127.0.0.1', '--trusted-host=127.0.0.1'],
    ['--find-links https://127.0.0.1:9/wheels/', '--find-links=https://127.0.0.1:9/wheels/'],
    ['-f https://127.0.0.1:9/wheels/', '--find-links=https://127.0.0.1:9/wheels/'],
    ['-fhttps://127.0.0.1:9/wheels/', '--find-links=https://127.0.0.1:9/wheels/'],
  ])('%s is an index option, normalized to %s', (line, normalized) => {
    const req = canonicalizeRequirements(`six==1.16\n${line}\n`);
    expect(kinds(req)).toEqual([['index', 2]]);
    expect(req.pipOptions).toEqual([normalized]);
  });

  it.each([
    ['--find-links ./wheels', /local path/],
    ['-f/tmp/wheels', /local path/],
    ['--index-url "http://127.0.0.1:9/simple"', /quotes/],
    ['--i http://x', /ambiguous pip option --i/],
    ['--use-feature=fast-deps', /changes how pip works/],
    ['--install-option=--prefix=/x', /setup\.py/],
    ['--pre six', /unexpected word six/],
    ['--hash=sha256:aa', /belongs on a requirement line/],
    ['six==1 --index-url http://x', /unsupported per-requirement option --index-url/],
    ['six==${HOME}', /\$\{HOME\} would be expanded by pip/],
    ['pkg @ file:///tmp/pkg.whl', /local/],
    ['file:///tmp/pkg.whl', /local/],
    ['https://h/x.whl ; python_version>"3"', /bare URL followed by more words/],
  ])('%s is refused whatever the policy', (line, why) => {
    const err = refusal(`six==1.16\n${line}\n`);
    expect(err.message).toMatch(why);
    expect(err.message).toContain('requirements line 2');
  });

  it('records direct URLs and source-build switches for the policy', () => {
    const req = canonicalizeRequirements(
      ['evil @ https://h/evil.whl ; python_version > "3"', 'git+https://h/r.git#egg=r', '--no-binary :all:', '--only-binary=:none:', '--only-binary :all:'].join('\n'),
    );
    expect(kinds(req)).toEqual([
      ['direct_url', 1],
      ['direct_url', 2],
      ['source_build', 3],
      ['source_build', 4],
    ]);
    // The marker stays apart from the URL (PEP 508 ends a URL at whitespace).
    expect(req.lines).toContain('evil@https://h/evil.whl ;python_version>"3"');
  });
});

describe('messages', () => {
  it('render a line on one line, escaped and clipped', () => {
    expect(renderLine('a"b\\c\td\x00')).toBe('a\\"b\\\\c\\x09d\\x00');
    expect(renderLine('x'.repeat(200))).toHaveLength(120);
  });
});
