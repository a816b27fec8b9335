import { describe, expect, it } from 'vitest';
import { loadControlConfig, parseListen } from '../../control/config.js';
import { configFromFlags, readAdminToken } from '../../control/cli/options.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('control configuration', () => {
  it('fills documented defaults', () => {
    const c = loadControlConfig();
    expect(c).toMatchObject({
      host: '127.0.0.1', port: 8080, dataDir: '.rgrid/control', databaseUrl: null, adminToken: null,
      bodyLimitBytes: 1024 * 1024, entryTtlMs: 30 * 86_400_000, workerDeadAfterMs: 60_000, cleanupIntervalMs: 3_600_000,
      migrateOnStart: true, logLevel: 'info',
    });
  });

  it('rejects wrong values, naming each field', () => {
    expect(() => loadControlConfig({ port: 70_000 })).toThrow(/port/);
    expect(() => loadControlConfig({ adminToken: 'short' })).toThrow(/adminToken/);
    expect(() => loadControlConfig({ logLevel: 'loud' as never })).toThrow(/logLevel/);
    expect(() => loadControlConfig({ nonsense: 1 } as never)).toThrow(/invalid control configuration/);
  });

  it('parses --listen', () => {
    expect(parseListen('0.0.0.0:9000')).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(parseListen(':9000')).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(parseListen('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(() => parseListen('localhost')).toThrow(/HOST:PORT/);
    expect(() => parseListen('a:99999')).toThrow(/HOST:PORT/);
  });

  it('builds the config from flags and the environment passed in', () => {
    const c = configFromFlags({ listen: '127.0.0.1:0', entryTtl: '2h', workerDeadAfter: '10s', migrate: false }, { DATABASE_URL: 'postgres://x/y', RGRID_CONTROL_ADMIN_TOKEN: 'a-long-enough-admin-token' });
    expect(c).toMatchObject({ port: 0, entryTtlMs: 7_200_000, workerDeadAfterMs: 10_000, migrateOnStart: false, databaseUrl: 'postgres://x/y', adminToken: 'a-long-enough-admin-token' });
    expect(() => configFromFlags({ bodyLimit: '1MB' }, {})).toThrow(/--body-limit/);
  });

  it('reads the admin token from a file, the environment, or systemd credentials', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-cred-'));
    writeFileSync(join(dir, 'admin-token'), 'token-from-credentials\n');
    writeFileSync(join(dir, 'flag-file'), 'token-from-flag-file\n');
    expect(readAdminToken(undefined, { CREDENTIALS_DIRECTORY: dir })).toBe('token-from-credentials');
    expect(readAdminToken(undefined, { CREDENTIALS_DIRECTORY: dir, RGRID_CONTROL_ADMIN_TOKEN: 'from-env' })).toBe('from-env');
    expect(readAdminToken(join(dir, 'flag-file'), { RGRID_CONTROL_ADMIN_TOKEN: 'from-env' })).toBe('token-from-flag-file');
    expect(readAdminToken(undefined, {})).toBeNull();
  });
});
