// `rgrid-control` flags: the serve flags of dispatch and the run limits (parsed into the one config
// schema, durations through parseDuration, refused with the flag's name, listed in the help), and ids.
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../control/cli/main.js';
import { configFromFlags } from '../../control/cli/options.js';
import { loadControlConfig } from '../../control/config.js';

describe('serve flags for dispatch and run limits', () => {
  it('leaves the defaults alone when no flag is given', () => {
    const c = configFromFlags({}, {});
    const d = loadControlConfig();
    expect(c).toMatchObject({
      claimLeaseMs: d.claimLeaseMs, claimWaitMaxMs: d.claimWaitMaxMs, maxAttempts: d.maxAttempts, logMaxBytes: d.logMaxBytes,
      runMaxMemoryMb: d.runMaxMemoryMb, runMaxTimeoutS: d.runMaxTimeoutS, runMaxAttempts: d.runMaxAttempts,
    });
  });

  it('takes every key from its flag; durations in any unit, the run timeout ceiling kept in seconds', () => {
    const c = configFromFlags({
      claimLease: '45s', claimWaitMax: '500ms', maxAttempts: '2', logMaxBytes: '65536',
      runMaxMemoryMb: '2048', runMaxTimeout: '90m', runMaxAttempts: '7',
    }, {});
    expect(c).toMatchObject({
      claimLeaseMs: 45_000, claimWaitMaxMs: 500, maxAttempts: 2, logMaxBytes: 65_536,
      runMaxMemoryMb: 2048, runMaxTimeoutS: 5400, runMaxAttempts: 7,
    });
    expect(configFromFlags({ runMaxTimeout: '1.5s', claimWaitMax: '0' }, {})).toMatchObject({ runMaxTimeoutS: 1.5, claimWaitMaxMs: 0 });
  });

  it('refuses a malformed value, or one outside the schema\'s range, naming the flag', () => {
    expect(() => configFromFlags({ claimLease: 'soon' }, {})).toThrow(/--claim-lease/);
    expect(() => configFromFlags({ runMaxTimeout: '1 week' }, {})).toThrow(/--run-max-timeout/);
    expect(() => configFromFlags({ maxAttempts: 'three' }, {})).toThrow(/--max-attempts/);
    expect(() => configFromFlags({ runMaxMemoryMb: '-1' }, {})).toThrow(/--run-max-memory-mb/);
    expect(() => configFromFlags({ claimWaitMax: '2m' }, {})).toThrow(/--claim-wait-max must be/);
    expect(() => configFromFlags({ claimLease: '100ms' }, {})).toThrow(/--claim-lease must be/);
    expect(() => configFromFlags({ runMaxAttempts: '21' }, {})).toThrow(/--run-max-attempts must be/);
    expect(() => configFromFlags({ logMaxBytes: '10' }, {})).toThrow(/--log-max-bytes must be/);
    // The relation to the connection timeout holds for a long poll set by flag too.
    expect(() => configFromFlags({ claimWaitMax: '60s', connectionTimeout: '30s' }, {})).toThrow(/connectionTimeoutMs/);
  });

  it('lists each flag in `serve --help`', () => {
    const serve = buildProgram({}).commands.find((c) => c.name() === 'serve');
    const help = serve?.helpInformation() ?? '';
    for (const flag of ['--claim-lease', '--claim-wait-max', '--max-attempts', '--log-max-bytes', '--run-max-memory-mb', '--run-max-timeout', '--run-max-attempts']) {
      expect(help).toContain(flag);
    }
  });
});

describe('token revoke', () => {
  it('refuses an id outside the contract before opening any database', async () => {
    for (const id of ['A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}']) {
      // The data dir does not exist: reaching the database would fail differently (and create it).
      const run = buildProgram({}).exitOverride().parseAsync(['node', 'rgrid-control', 'token', 'revoke', id, '--data-dir', '/nonexistent/rgrid-test']);
      await expect(run).rejects.toMatchObject({ code: 'bad_request' });
      await expect(run).rejects.toThrow(/token id .* is not valid: a lower-case UUID/);
    }
  });
});
