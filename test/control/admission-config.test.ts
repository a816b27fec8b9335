// Admission settings and the control CLI's secrets: defaults and their relations, the failed-auth
// throttle's bookkeeping, token and database-URL files, and parse errors that never quote a file.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromFlags, readAdminToken, readDatabaseUrl, urlHasPassword } from '../../control/cli/options.js';
import { loadControlConfig } from '../../control/config.js';
import { parseJsonFile } from '../../common/json-file.js';
import { createFailureThrottle } from '../../control/plugins/auth-throttle.js';

const MiB = 1024 * 1024;

describe('admission configuration', () => {
  it('has bounded defaults: snapshot in the low MiB, a blob quota, per-token limits, timeouts past the longest long poll', () => {
    const c = loadControlConfig();
    expect(c).toMatchObject({
      snapshotBodyLimitBytes: 8 * MiB, accountBlobQuotaBytes: 10 * 1024 * MiB, accountBlobQuotaCount: 1_000_000,
      tokenRateLimitPerMinute: 6000, tokenConcurrencyLimit: 128, authFailuresPerMinute: 30,
      requestTimeoutMs: 3_600_000, headersTimeoutMs: 20_000, connectionTimeoutMs: 90_000, keepAliveTimeoutMs: 10_000, bodyIdleTimeoutMs: 30_000,
    });
    // The longest long poll the schema allows still fits under the default idle timeout.
    expect(() => loadControlConfig({ claimWaitMaxMs: 60_000 })).not.toThrow();
  });

  it('refuses a connection timeout that would cut long polls, and headers allowed longer than the whole request', () => {
    expect(() => loadControlConfig({ claimWaitMaxMs: 25_000, connectionTimeoutMs: 20_000 })).toThrow(/connectionTimeoutMs.*claimWaitMaxMs/);
    expect(() => loadControlConfig({ claimWaitMaxMs: 0, connectionTimeoutMs: 5000 })).not.toThrow();
    expect(() => loadControlConfig({ headersTimeoutMs: 60_000, requestTimeoutMs: 30_000 })).toThrow(/headersTimeoutMs/);
    expect(() => loadControlConfig({ snapshotBodyLimitBytes: 10 })).toThrow(/snapshotBodyLimitBytes/);
  });

  it('takes every limit from serve flags', () => {
    const c = configFromFlags({
      snapshotBodyLimit: '4194304', accountBlobQuota: '1000', accountBlobCount: '10', tokenRateLimit: '0', tokenConcurrency: '4',
      authFailuresPerMinute: '5', requestTimeout: '10m', headersTimeout: '5s', connectionTimeout: '2m', keepAliveTimeout: '3s', bodyIdleTimeout: '7s',
    }, {});
    expect(c).toMatchObject({
      snapshotBodyLimitBytes: 4 * MiB, accountBlobQuotaBytes: 1000, accountBlobQuotaCount: 10, tokenRateLimitPerMinute: 0, tokenConcurrencyLimit: 4,
      authFailuresPerMinute: 5, requestTimeoutMs: 600_000, headersTimeoutMs: 5000, connectionTimeoutMs: 120_000, keepAliveTimeoutMs: 3000, bodyIdleTimeoutMs: 7000,
    });
    expect(() => configFromFlags({ tokenConcurrency: 'lots' }, {})).toThrow(/--token-concurrency/);
  });
});

describe('failed-authentication throttle', () => {
  it('blocks an address after N failures in its window, until the window ends; other addresses are free', () => {
    let now = 1_000_000;
    const t = createFailureThrottle({ maxPerWindow: 3, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 3; i++) {
      expect(t.blockedForMs('10.0.0.1')).toBe(0);
      t.fail('10.0.0.1');
    }
    expect(t.blockedForMs('10.0.0.1')).toBe(60_000);
    expect(t.blockedForMs('10.0.0.2')).toBe(0);
    now += 59_000;
    expect(t.blockedForMs('10.0.0.1')).toBe(1000);
    now += 1000;
    expect(t.blockedForMs('10.0.0.1')).toBe(0);
    t.fail('10.0.0.1');
    expect(t.blockedForMs('10.0.0.1')).toBe(0);
  });

  it('counts an IPv6 /64 as one address, keeps a bounded table, and can be turned off', () => {
    const t = createFailureThrottle({ maxPerWindow: 2, windowMs: 60_000, maxAddresses: 100 });
    t.fail('2001:db8:1:2::1');
    t.fail('2001:db8:1:2::ffff');
    expect(t.blockedForMs('2001:db8:1:2:abcd::9')).toBeGreaterThan(0);
    expect(t.blockedForMs('2001:db8:1:3::1')).toBe(0);
    for (let i = 0; i < 1000; i++) t.fail(`10.9.${i >> 8}.${i & 255}`);
    expect(t.size).toBeLessThanOrEqual(100);
    const off = createFailureThrottle({ maxPerWindow: 0, windowMs: 60_000 });
    for (let i = 0; i < 100; i++) off.fail('10.0.0.1');
    expect(off.blockedForMs('10.0.0.1')).toBe(0);
  });
});

describe('secrets of the control CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-secrets-'));
  const file = (name: string, content: string): string => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };

  it('reads the admin token from a flag file, the environment, a _FILE variable, or a systemd credential, in that order', () => {
    const creds = mkdtempSync(join(tmpdir(), 'rgrid-creds-'));
    writeFileSync(join(creds, 'admin-token'), 'token-from-credential\n');
    const viaFile = file('env-file-token', 'token-from-env-file\n');
    expect(readAdminToken(file('flag-token', 'token-from-flag\n'), { RGRID_CONTROL_ADMIN_TOKEN: 'env' })).toBe('token-from-flag');
    expect(readAdminToken(undefined, { RGRID_CONTROL_ADMIN_TOKEN: 'token-from-env', RGRID_CONTROL_ADMIN_TOKEN_FILE: viaFile })).toBe('token-from-env');
    expect(readAdminToken(undefined, { RGRID_CONTROL_ADMIN_TOKEN_FILE: viaFile, CREDENTIALS_DIRECTORY: creds })).toBe('token-from-env-file');
    expect(readAdminToken(undefined, { CREDENTIALS_DIRECTORY: creds })).toBe('token-from-credential');
  });

  it('refuses empty or multi-line token files without quoting them', () => {
    expect(() => readAdminToken(file('empty', '\n'), {})).toThrow(/is empty/);
    const twoLines = file('two-lines', 'first-line-secret\nsecond-line-secret\n');
    let message = '';
    try {
      readAdminToken(twoLines, {});
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/one line/);
    expect(message).not.toMatch(/first-line|second-line/);
    expect(() => readAdminToken(join(dir, 'missing'), {})).toThrow(/ENOENT/);
  });

  it('reads the database URL from a file or a credential and says when one on the command line has a password', () => {
    const creds = mkdtempSync(join(tmpdir(), 'rgrid-creds-'));
    writeFileSync(join(creds, 'database-url'), 'postgres://app:pw@db/rgrid\n');
    expect(readDatabaseUrl({ databaseUrlFile: file('db-url', 'postgres://app:from-file@db/rgrid\n') }, {})?.value).toBe('postgres://app:from-file@db/rgrid');
    expect(readDatabaseUrl({}, { DATABASE_URL_FILE: file('db-url-2', 'postgres://x@y/z') })?.value).toBe('postgres://x@y/z');
    expect(readDatabaseUrl({}, { CREDENTIALS_DIRECTORY: creds })).toMatchObject({ value: 'postgres://app:pw@db/rgrid', source: 'credential' });
    expect(readDatabaseUrl({ databaseUrl: 'postgres://a:b@c/d' }, {})).toMatchObject({ source: 'command-line' });
    expect(readDatabaseUrl({}, {})).toBeNull();
    expect(urlHasPassword('postgres://app:pw@db/rgrid')).toBe(true);
    expect(urlHasPassword('postgres://app@db/rgrid')).toBe(false);
    expect(configFromFlags({ databaseUrlFile: join(dir, 'db-url') }, {}).databaseUrl).toBe('postgres://app:from-file@db/rgrid');
  });

  it('reports a malformed JSON file by name, line and column, never by its content', () => {
    const secret = 'postgres://rgrid_app:TOPSECRETPASSWORD@127.0.0.1:5432/rgrid';
    const cases = [
      `{"pid": 12, "url": ${secret}}`, // unquoted: JSON.parse would quote the text around it
      `{\n  "pid": 12,\n  "url": "${secret}"\n  "extra": 1\n}`,
      `{"pid": 12, "url": "${secret}"`,
      '',
    ];
    for (const text of cases) {
      let message = '';
      try {
        parseJsonFile('/var/lib/rgrid-control/postgres-run.json', text);
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/^\/var\/lib\/rgrid-control\/postgres-run\.json is not valid JSON/);
      expect(message).not.toMatch(/TOPSECRET|postgres:\/\/|rgrid_app/);
    }
    const where = (text: string): string => {
      try {
        parseJsonFile('f.json', text);
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(where(cases[0]!)).toContain('line 1, column 20');
    expect(where(cases[1]!)).toContain('line 4, column 3');
    expect(parseJsonFile('ok.json', '{"pid": 1}')).toEqual({ pid: 1 });
  });
});
