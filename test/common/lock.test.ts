import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { depsKey, pipSettingsFingerprint, requirementsDigest } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';
import { lockFromPipReport, lockOfLockedFile, pylockToml, resolutionKey } from '../../common/lock.js';

const sha = (data: string): string => createHash('sha256').update(data).digest('hex');
const H1 = sha('artifact one');
const H2 = sha('artifact two');

/** A pip installation report as pip 23 writes it (only the fields a lock reads, plus some it ignores). */
function report(items: Array<{ name: string; version: string; url?: string; hash?: string | null; hashes?: Record<string, string>; direct?: boolean; extra?: Record<string, unknown> }>): unknown {
  return {
    version: '1',
    pip_version: '23.0.1',
    install: items.map((i) => ({
      download_info: {
        url: i.url ?? `file:///tmp/rgrid-wheelhouse/${i.name.replace(/-/g, '_')}-${i.version}-py3-none-any.whl`,
        archive_info: { ...(i.hash === null ? {} : { hash: `sha256=${i.hash ?? H1}` }), ...(i.hashes ? { hashes: i.hashes } : {}) },
        ...i.extra,
      },
      is_direct: i.direct ?? false,
      requested: true,
      metadata: { metadata_version: '2.1', name: i.name, version: i.version },
    })),
    environment: { python_version: '3.11' },
  };
}

const reason = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RgridError);
    return `${(err as RgridError).code}: ${(err as Error).message}`;
  }
  throw new Error('expected an error');
};

describe('lockOfLockedFile', () => {
  it('takes a file where every line is name==version with hashes as its own lock: lock_sha256 is its requirements_sha256', () => {
    const digest = requirementsDigest(`Requests==2.31.0 --hash=sha256:${H1} \\\n    --hash=sha256:${H2}\nidna==3.6 --hash=sha256:${H2}\n`);
    const lock = lockOfLockedFile(digest);
    expect(lock).not.toBeNull();
    expect(lock!.sha256).toBe(digest.sha256);
    expect(lock!.fromFile).toBe(true);
    expect(lock!.resolved).toEqual(['idna==3.6', 'requests==2.31.0']);
    expect(lock!.distributions.find((d) => d.name === 'requests')!.hashes).toEqual([`sha256:${H1}`, `sha256:${H2}`].sort());
  });

  it.each([
    ['an unpinned line', `requests --hash=sha256:${H1}\n`],
    ['a range', `requests>=2 --hash=sha256:${H1}\n`],
    ['a wildcard pin', `requests==2.* --hash=sha256:${H1}\n`],
    ['a pin without a hash', `requests==2.31.0\n`],
    ['one line of two without a hash', `requests==2.31.0 --hash=sha256:${H1}\nidna==3.6\n`],
    ['no requirement at all', '# nothing\n'],
  ])('is null for %s (the file is resolved instead)', (_what, text) => {
    expect(lockOfLockedFile(requirementsDigest(text))).toBeNull();
  });

  it('accepts markers and extras on a pinned, hashed line', () => {
    const lock = lockOfLockedFile(requirementsDigest(`pydantic[email]==2.5.0 ; python_version >= "3.8" --hash=sha256:${H1}\n`));
    expect(lock?.resolved).toEqual(['pydantic==2.5.0']);
  });
});

describe('lockFromPipReport', () => {
  it('pins every distribution by version and hash, sorted, with the artifact pip chose', () => {
    const lock = lockFromPipReport(report([{ name: 'Rgtest_A', version: '1.0.0', hash: H1 }, { name: 'rgtest-b', version: '2.0', hash: H2 }]));
    expect(lock.text).toBe(`rgtest-a==1.0.0 --hash=sha256:${H1}\nrgtest-b==2.0 --hash=sha256:${H2}`);
    expect(lock.sha256).toBe(sha(lock.text));
    expect(lock.resolved).toEqual(['rgtest-a==1.0.0', 'rgtest-b==2.0']);
    expect(lock.fromFile).toBe(false);
    expect(lock.distributions[0]!.artifact).toEqual({ filename: 'Rgtest_A-1.0.0-py3-none-any.whl', url: 'file:///tmp/rgrid-wheelhouse/Rgtest_A-1.0.0-py3-none-any.whl' });
  });

  it('does not depend on the order pip listed the distributions in', () => {
    const a = lockFromPipReport(report([{ name: 'x', version: '1', hash: H1 }, { name: 'y', version: '2', hash: H2 }]));
    const b = lockFromPipReport(report([{ name: 'y', version: '2', hash: H2 }, { name: 'x', version: '1', hash: H1 }]));
    expect(b.sha256).toBe(a.sha256);
  });

  it('reads the hashes dict of newer pips as well as the hash string', () => {
    const lock = lockFromPipReport(report([{ name: 'x', version: '1', hash: null, hashes: { sha256: H2, md5: 'abc' } }]));
    expect(lock.distributions[0]!.hashes).toEqual([`sha256:${H2}`]);
  });

  it.each([
    ['not an object', () => 'text', /is not a JSON object/],
    ['another format version', () => ({ ...(report([{ name: 'x', version: '1' }]) as object), version: '2' }), /format version "2"/],
    ['an empty install list', () => report([]), /installs nothing/],
    ['a name that is not a project name', () => report([{ name: '../../etc', version: '1' }]), /resolved project name/],
    ['a version with a space', () => report([{ name: 'x', version: '1 ; rm -rf' }]), /version of x/],
    ['a version with a newline', () => report([{ name: 'x', version: '1\n--index-url=http://evil' }]), /version of x/],
    ['the same name twice', () => report([{ name: 'x', version: '1' }, { name: 'X', version: '2' }]), /names x twice/],
    ['no sha256', () => report([{ name: 'x', version: '1', hash: null }]), /gives no sha256 for x/],
    ['a malformed sha256', () => report([{ name: 'x', version: '1', hash: 'abc' }]), /gives no sha256 for x/],
    ['a VCS checkout', () => report([{ name: 'x', version: '1', direct: true, extra: { vcs_info: { vcs: 'git' } } }]), /VCS checkout/],
    ['a local directory', () => report([{ name: 'x', version: '1', direct: true, extra: { dir_info: {} } }]), /local directory/],
    ['a URL with a control character', () => report([{ name: 'x', version: '1', url: 'http://a/\u001b[2Jx.whl' }]), /unusable URL for x/],
  ])('refuses a report with %s as build_failed, naming the problem', (_what, make, message) => {
    const text = reason(() => lockFromPipReport(make()));
    expect(text).toMatch(/^build_failed: resolution failed: pip's report /);
    expect(text).toMatch(message);
  });

  it('refuses more distributions than a lock may hold', () => {
    const many = Array.from({ length: 2001 }, (_, i) => ({ name: `p${i}`, version: '1' }));
    expect(reason(() => lockFromPipReport(report(many)))).toMatch(/installs 2001 distributions/);
  });

  it('keeps a direct reference as one, with its hash', () => {
    const lock = lockFromPipReport(report([{ name: 'x', version: '1', url: 'https://files.example/x-1.tar.gz', direct: true }]));
    expect(lock.text).toBe(`x@https://files.example/x-1.tar.gz --hash=sha256:${H1}`);
    expect(lock.resolved).toEqual(['x==1']);
  });

  it('a resolved lock written back as a requirements file is a locked file with the same digest (property)', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4})?$/);
    const version = fc.stringMatching(/^[0-9]{1,3}(\.[0-9]{1,3}){0,2}(rc[0-9])?$/);
    const hex = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
    fc.assert(
      fc.property(fc.uniqueArray(fc.record({ name, version, hash: hex }), { minLength: 1, maxLength: 12, selector: (d) => d.name }), (items) => {
        const lock = lockFromPipReport(report(items));
        const again = lockOfLockedFile(requirementsDigest(lock.text));
        expect(again?.sha256).toBe(lock.sha256);
        expect(again?.resolved).toEqual(lock.resolved);
      }),
      { numRuns: 200 },
    );
  });
});

describe('keys built on a lock', () => {
  const base = `sha256:${sha('base')}`;
  const fingerprint = pipSettingsFingerprint([], ['--no-index']);
  const requirements = requirementsDigest('rgtest-a\n').sha256;

  it('two locks of the same requirements give two dependency keys; the same lock the same key', () => {
    const one = lockFromPipReport(report([{ name: 'rgtest-a', version: '1.0.0', hash: H1 }]));
    const two = lockFromPipReport(report([{ name: 'rgtest-a', version: '1.1.0', hash: H2 }]));
    const key = (lockSha256: string | null): string => depsKey({ baseImageId: base, requirementsSha256: requirements, pipFingerprint: fingerprint, lockSha256 });
    expect(key(one.sha256)).not.toBe(key(two.sha256));
    expect(key(one.sha256)).toBe(key(lockFromPipReport(report([{ name: 'rgtest-a', version: '1.0.0', hash: H1 }])).sha256));
    // Without a lock the key is the text's, as before locks: never equal to a locked one.
    expect(key(null)).not.toBe(key(one.sha256));
    expect(key(null)).toBe(depsKey({ baseImageId: base, requirementsSha256: requirements, pipFingerprint: fingerprint }));
  });

  it('the resolution key changes with the base image, the requirements and the pip settings', () => {
    const k = resolutionKey({ baseImageId: base, requirementsSha256: requirements, pipFingerprint: fingerprint });
    expect(resolutionKey({ baseImageId: `sha256:${sha('other')}`, requirementsSha256: requirements, pipFingerprint: fingerprint })).not.toBe(k);
    expect(resolutionKey({ baseImageId: base, requirementsSha256: sha('x'), pipFingerprint: fingerprint })).not.toBe(k);
    expect(resolutionKey({ baseImageId: base, requirementsSha256: requirements, pipFingerprint: pipSettingsFingerprint([], []) })).not.toBe(k);
  });
});

describe('pylockToml', () => {
  it('writes PEP 751 packages with the wheel, its location and hashes', () => {
    const lock = lockFromPipReport(report([{ name: 'rgtest-a', version: '1.0.0', hash: H1, url: 'https://index.example/packages/rgtest_a-1.0.0-py3-none-any.whl#sha256=' + H1 }, { name: 'b', version: '2', hash: H2, url: 'https://index.example/b-2.tar.gz' }]));
    const toml = pylockToml(lock);
    expect(toml).toContain('lock-version = "1.0"');
    expect(toml).toContain('[[packages]]\nname = "rgtest-a"\nversion = "1.0.0"');
    expect(toml).toContain(`wheels = [{ name = "rgtest_a-1.0.0-py3-none-any.whl", url = "https://index.example/packages/rgtest_a-1.0.0-py3-none-any.whl", hashes = { sha256 = "${H1}" } }]`);
    expect(toml).toContain(`sdist = { name = "b-2.tar.gz", url = "https://index.example/b-2.tar.gz", hashes = { sha256 = "${H2}" } }`);
  });

  it('writes a wheelhouse artifact as a path when told where the wheelhouse is', () => {
    const lock = lockFromPipReport(report([{ name: 'x', version: '1', hash: H1 }]));
    const toml = pylockToml(lock, { artifactLocation: (a) => ({ path: `/srv/wheels/${a.filename}` }) });
    expect(toml).toContain('path = "/srv/wheels/x-1-py3-none-any.whl"');
  });
});
