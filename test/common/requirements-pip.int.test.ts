import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, inject, it } from 'vitest';
import { canonicalizeRequirements, pipLogicalLines } from '../../common/requirements.js';
import { requirementsFileText } from '../../agent/builder/recipe.js';

/**
 * Our reading of a requirements file against pip's own, run inside the base image the builds use
 * (the pip that will read the file): the lines must be the same lines, and the file we hand pip must
 * mean to pip exactly the requirements we checked.
 */
function inBaseImage<T>(python: string, input: unknown): T {
  const out = execFileSync('docker', ['run', '--rm', '-i', '--network', 'none', inject('baseImage'), 'python3', '-c', python], {
    input: JSON.stringify(input),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out) as T;
}

const PREPROCESS = `
import json, sys
from pip._internal.req.req_file import preprocess
print(json.dumps([[[n, line] for n, line in preprocess(text)] for text in json.load(sys.stdin)]))
`;

const PARSE_FILES = `
import json, os, sys, tempfile
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
session = PipSession()
out = []
for data in json.load(sys.stdin):
    with tempfile.NamedTemporaryFile('wb', suffix='.txt', delete=False) as f:
        f.write(data.encode('utf-8'))
    reqs = [[r.requirement, sorted((r.options or {}).get('hashes', {}).get('sha256', []))] for r in parse_requirements(f.name, session=session)]
    os.unlink(f.name)
    out.append(reqs)
print(json.dumps(out))
`;

describe("requirements read as pip 23 reads them (pip in the runtime's base image)", () => {
  it('splits, joins and strips comments exactly like pip, over random text and every break character', () => {
    const alphabet = fc.constantFrom('a', 'b', '=', '1', '-', 'r', ' ', '\\', '#', '\n', '\r', '\t', '\x1f', '\xa0', '\v', '\f', '\x1c', '\x1d', '\x1e', '\x85', '\u2028', '\u2029');
    const samples = fc.sample(fc.array(alphabet, { maxLength: 30 }).map((a) => a.join('')), { numRuns: 500, seed: 7 });
    samples.push(
      'six==1.16\x1c-r/etc/passwd\n',
      'six==1.16\u2028--index-url http://127.0.0.1:9/simple',
      'a==1 \\\n# c \\\nb==2\\\n',
      'six==1.0 \\\n  --hash=sha256:aa \\\\\n\\\\--hash=sha256:bb \\\n\nx',
      'a \\\n\\b',
      '\\\\\\',
      'x\x1f#comment\n  # only\n\\\n',
    );
    const pip = inBaseImage<Array<Array<[number, string]>>>(PREPROCESS, samples);
    samples.forEach((sample, i) => {
      expect(
        pipLogicalLines(sample).map((l) => [l.lineNo, l.text]),
        JSON.stringify(sample),
      ).toEqual(pip[i]);
    });
  });

  it('the file a build gets means to pip exactly the canonical requirements, hashes included', () => {
    const files = [
      'rgtest-alpha==1.0\nRGTest_Beta >= 2.0 , < 3 ; python_version >= "3.8"\n',
      '--index-url http://127.0.0.1:9/simple\n-f https://127.0.0.1:9/w/\n--pre\nsix==1.16\x1c--only-binary :all:\n',
      'Six==1.16.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:aa\nrequests[socks,Security]~=2.31\n',
      'evil @ https://h.invalid/evil-1.0-py3-none-any.whl ; python_version > "3"\nother@https://h.invalid/o.whl\n',
      'cafe-name ; platform_release == "ŅŸ"\n',
    ];
    const canonical = files.map((f) => canonicalizeRequirements(f));
    const written = canonical.map((c) => requirementsFileText(c.pipOptions, c.text));
    const pip = inBaseImage<Array<Array<[string, string[]]>>>(PARSE_FILES, written);
    canonical.forEach((c, i) => {
      const ours = c.lines.map((line) => {
        const [requirement, ...hashes] = line.split(' --hash=');
        return [requirement, hashes.map((h) => h.replace(/^sha256:/, '')).sort()];
      });
      expect(pip[i], files[i]).toEqual(ours);
    });
  });
});
