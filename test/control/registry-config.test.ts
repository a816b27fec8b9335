// The control plane's registry settings: the build lease and failure window (durations, range-checked
// against the config schema and refused naming the flag), the registry cleanup deletes from and its
// credentials file (flag, else environment; both listed in the help of serve and cleanup).
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../../control/cli/main.js';
import { configFromFlags } from '../../control/cli/options.js';
import { loadControlConfig } from '../../control/config.js';

describe('registry settings', () => {
  it('defaults: 30 s lease, 10 min failure window, no registry', () => {
    expect(configFromFlags({}, {})).toMatchObject({ buildLeaseMs: 30_000, buildFailureTtlMs: 600_000, registry: null, registryAuthFile: null });
  });

  it('takes the flags, else the environment', () => {
    expect(configFromFlags({ buildLease: '2m', buildFailureTtl: '0', registry: 'registry.internal:5443/team', registryAuthFile: '/etc/rgrid/registry.json' }, {}))
      .toMatchObject({ buildLeaseMs: 120_000, buildFailureTtlMs: 0, registry: 'registry.internal:5443/team', registryAuthFile: '/etc/rgrid/registry.json' });
    expect(configFromFlags({}, { RGRID_CONTROL_REGISTRY: '127.0.0.1:5000', RGRID_CONTROL_REGISTRY_AUTH_FILE: '/run/auth.json' }))
      .toMatchObject({ registry: '127.0.0.1:5000', registryAuthFile: '/run/auth.json' });
    expect(configFromFlags({ registry: '10.0.0.1:5000' }, { RGRID_CONTROL_REGISTRY: '127.0.0.1:5000' }).registry).toBe('10.0.0.1:5000');
  });

  it('refuses a value outside its range or form, naming the flag', () => {
    expect(() => configFromFlags({ buildLease: '500ms' }, {})).toThrow(/--build-lease must be/);
    expect(() => configFromFlags({ buildLease: '1h' }, {})).toThrow(/--build-lease must be/);
    expect(() => configFromFlags({ buildFailureTtl: 'later' }, {})).toThrow(/--build-failure-ttl/);
    expect(() => configFromFlags({ buildFailureTtl: '30d' }, {})).toThrow(/--build-failure-ttl must be/);
    for (const bad of ['http://127.0.0.1:5000', '127.0.0.1', '127.0.0.1:99999', '127.0.0.1:5000/UPPER', '127.0.0.1:5000/../x', 'host:5000 --x']) {
      expect(() => configFromFlags({ registry: bad }, {}), bad).toThrow(/--registry/);
    }
    expect(() => configFromFlags({}, { RGRID_CONTROL_REGISTRY: 'no-port' })).toThrow(/--registry/);
    // The schema holds the same rule for a config made without the CLI.
    expect(() => loadControlConfig({ registry: '127.0.0.1:70000' })).toThrow(/\/registry/);
  });

  it('lists the flags with their environment variables in the help of serve and cleanup', () => {
    const program = buildProgram({});
    for (const name of ['serve', 'cleanup']) {
      const help = program.commands.find((c) => c.name() === name)?.helpInformation() ?? '';
      expect(help, name).toContain('--registry <host:port[/prefix]>');
      expect(help, name).toContain('RGRID_CONTROL_REGISTRY');
      expect(help, name).toContain('--registry-auth-file');
      expect(help, name).toContain('RGRID_CONTROL_REGISTRY_AUTH_FILE');
    }
    const serve = program.commands.find((c) => c.name() === 'serve')?.helpInformation() ?? '';
    for (const flag of ['--build-lease', '--build-failure-ttl']) expect(serve).toContain(flag);
  });
});
