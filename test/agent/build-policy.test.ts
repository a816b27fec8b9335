import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compileBuildPolicy, enforceBuildPolicy } from '../../agent/builder/build-policy.js';
import { redactUserinfo } from '../../agent/builder/install-container.js';
import { installCommand, workerPipArgs } from '../../agent/builder/recipe.js';
import { resolveConfig, type AgentConfigInput } from '../../agent/config.js';
import { depsKey, pipSettingsFingerprint, requirementsDigest } from '../../common/cache-keys.js';
import { RgridError } from '../../common/errors.js';

const base = { socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid', pip_find_links: '/srv/wheels' };
const policyOf = (extra: AgentConfigInput = {}): ReturnType<typeof compileBuildPolicy> => compileBuildPolicy(resolveConfig({ ...base, ...extra }, {}));

function refusalOf(policy: ReturnType<typeof compileBuildPolicy>, text: string): RgridError | undefined {
  try {
    enforceBuildPolicy(policy, requirementsDigest(text));
    return undefined;
  } catch (err) {
    return err as RgridError;
  }
}

describe('build policy config', () => {
  it('is closed and bounded by default', () => {
    const config = resolveConfig(base, {});
    expect(config).toMatchObject({
      build_network: 'none',
      build_allow_index_options: false,
      build_allow_direct_urls: false,
      build_wheels_only: false,
      build_memory_mb: 2048,
      build_cpus: 1,
      build_pids_limit: 512,
      build_timeout_s: 900,
    });
    expect(compileBuildPolicy(config).limits).toEqual({
      memoryBytes: 2048 * 1024 * 1024,
      cpuPeriodUs: 100_000,
      cpuQuotaUs: 100_000,
      nanoCpus: 1e9,
      pidsLimit: 512,
      timeoutMs: 900_000,
    });
  });

  it.each([
    [{ build_network: 'host' }, /build_network host gives builds a network nothing in the build policy uses/],
    [{ build_network: 'default' }, /build_network default/],
    [{ pip_index_url: 'http://127.0.0.1:3141/simple' }, /pip_index_url needs build_network host/],
    [{ pip_index_url: 'file:///srv/index' }, /pip_index_url/],
    [{ build_memory_mb: 16 }, /build_memory_mb/],
    [{ build_pids_limit: 4 }, /build_pids_limit/],
    [{ build_timeout_s: 0 }, /build_timeout_s/],
    [{ build_allow_index_options: 'yes' }, /build_allow_index_options/],
  ])('refuses %j', (bad, message) => {
    expect(() => resolveConfig({ ...base, ...bad }, {})).toThrow(message);
  });

  it('allows the host network only as an explicit choice next to the operator index', () => {
    const config = resolveConfig({ ...base, build_network: 'host', pip_index_url: 'http://127.0.0.1:3141/simple' }, {});
    expect(compileBuildPolicy(config).network).toBe('host');
    expect(resolveConfig({ ...base, build_network: 'host', build_allow_index_options: true }, {}).build_network).toBe('host');
  });
});

describe('build policy on requirements files', () => {
  const closed = policyOf();
  const open = policyOf({ build_allow_index_options: true, build_allow_direct_urls: true });

  it.each([
    '--index-url http://127.0.0.1:9/simple',
    '-i http://127.0.0.1:9/simple',
    '--extra-index-url http://127.0.0.1:9/simple',
    '--trusted-host 127.0.0.1',
    '--find-links https://127.0.0.1:9/wheels/',
    '-f https://127.0.0.1:9/wheels/',
  ])('refuses %s by default, naming the line; accepts it when the operator allows index options', (option) => {
    const text = `rgtest-alpha==1.0\n# a comment\n${option}\n`;
    const err = refusalOf(closed, text);
    expect(err).toBeInstanceOf(RgridError);
    expect(err!.code).toBe('bad_requirements');
    expect(err!.message).toMatch(new RegExp(`^requirements line 3 "${option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}" is refused by this worker's build policy: .*build_allow_index_options`));
    expect(err!.message.split('\n')).toHaveLength(1);
    expect(refusalOf(open, text)).toBeUndefined();
  });

  it('refuses a smuggled index line, naming the break pip splits at', () => {
    const err = refusalOf(closed, 'rgtest-alpha==1.0\x1c--index-url http://127.0.0.1:9/simple');
    expect(err!.message).toBe(
      'requirements line 2 (pip starts a line at the \\x1c before it) "--index-url http://127.0.0.1:9/simple" is refused by this worker\'s build policy: --index-url names a package source other than the operator\'s (allowed only with build_allow_index_options)',
    );
  });

  it.each(['evil @ https://h.invalid/evil.whl', 'https://h.invalid/evil-1.0-py3-none-any.whl', 'git+https://h.invalid/evil.git#egg=evil', 'evil @ git+https://h.invalid/e.git'])(
    'refuses the direct URL %s by default; accepts it when allowed',
    (line) => {
      expect(refusalOf(closed, `six==1.16\n${line}`)!.message).toMatch(/^requirements line 2 .*direct URL \(allowed only with build_allow_direct_urls\)$/);
      expect(refusalOf(policyOf({ build_allow_direct_urls: true }), `six==1.16\n${line}`)).toBeUndefined();
      // Index options alone do not open direct URLs.
      expect(refusalOf(policyOf({ build_allow_index_options: true }), `six==1.16\n${line}`)).toBeDefined();
    },
  );

  it('refuses switches back to source builds only when the worker installs wheels only', () => {
    const wheelsOnly = policyOf({ build_wheels_only: true });
    for (const line of ['--no-binary :all:', '--no-binary=six', '--only-binary :none:']) {
      expect(refusalOf(wheelsOnly, `six==1.16\n${line}`)!.message).toMatch(/line 2 .*wheels only \(build_wheels_only\)/);
      expect(refusalOf(closed, `six==1.16\n${line}`)).toBeUndefined();
    }
    expect(refusalOf(wheelsOnly, 'six==1.16\n--only-binary :all:\n--prefer-binary')).toBeUndefined();
  });
});

describe('build policy in the dependency key', () => {
  const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
  const BASE = `sha256:${sha('a base image')}`;
  const key = (policy: ReturnType<typeof compileBuildPolicy>, text = 'alpha==1.0\n'): string => {
    const req = requirementsDigest(text);
    return depsKey({ baseImageId: BASE, requirementsSha256: req.sha256, pipFingerprint: pipSettingsFingerprint(req.pipOptions, policy.fingerprintOptions) });
  };

  it('the default policy keeps the historical fingerprint (existing keys stay valid)', () => {
    expect(policyOf().fingerprintOptions).toEqual(['--find-links=/srv/wheels', '--no-index']);
    expect(key(policyOf())).toBe(key(policyOf({ build_memory_mb: 4096, build_timeout_s: 60, build_cpus: 2, build_pids_limit: 64 })));
  });

  it('wheels-only changes what gets installed, so it changes the key; allowing options does not', () => {
    expect(key(policyOf({ build_wheels_only: true }))).not.toBe(key(policyOf()));
    expect(key(policyOf({ build_allow_index_options: true, build_allow_direct_urls: true }))).toBe(key(policyOf()));
    // A file's own index option is part of the key through the file's options.
    expect(key(policyOf({ build_allow_index_options: true }), 'alpha==1.0\n--extra-index-url http://127.0.0.1:9/simple\n')).not.toBe(key(policyOf()));
  });

  it('the install command shown in build logs hides an index URL\'s credentials', () => {
    const pip = policyOf({ build_network: 'host', pip_index_url: 'https://ci:s3cret@10.0.0.5/simple' }).pip;
    expect(installCommand(pip)).toContain('s3cret');
    expect(redactUserinfo(installCommand(pip))).toContain('--index-url https://***@10.0.0.5/simple');
    expect(redactUserinfo(installCommand(pip))).not.toContain('s3cret');
  });

  it('wheels-only reaches pip', () => {
    expect(workerPipArgs(policyOf({ build_wheels_only: true }).pip)).toEqual(['--no-index', '--find-links', '/tmp/rgrid-wheelhouse', '--only-binary', ':all:']);
    expect(installCommand(policyOf().pip)).not.toContain('--only-binary');
  });
});
