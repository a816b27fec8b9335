import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../agent/config.js';
import { holderContainerSpec, OUTPUTS_SLACK_BYTES, outputsVolumeSpec, runContainerSpec, runLimits } from '../../agent/runner/sandbox.js';

const MiB = 1024 * 1024;
const config = resolveConfig({ socket: '/run/a.sock', data_dir: '/var/lib/a' }, {});

describe('run limits', () => {
  it('has documented defaults, each default within its ceiling', () => {
    expect(config).toMatchObject({
      run_max_memory_mb: 16_384, run_max_cpus: 4, run_max_timeout_s: 86_400, run_tmp_mb: 512, run_shm_mb: 64, run_max_file_mb: 4096,
      run_max_output_mb: 1024, run_max_output_file_mb: 1024, run_max_output_files: 1000, run_output_copy_timeout_s: 300,
    });
  });

  it('clamps what a submitter asks for to the ceilings, and says so', () => {
    const { limits, clamped } = runLimits(config, { memory_mb: 1_048_576, timeout_s: 7 * 86_400, cpus: 64 }, 8);
    expect(limits.memoryBytes).toBe(16_384 * MiB);
    expect(limits.timeoutMs).toBe(86_400_000);
    expect(limits.nanoCpus).toBe(4e9);
    expect(clamped).toEqual([
      { setting: 'memory_mb', requested: 1_048_576, used: 16_384, ceiling: 'run_max_memory_mb' },
      { setting: 'cpus', requested: 64, used: 4, ceiling: 'run_max_cpus' },
      { setting: 'timeout_s', requested: 604_800, used: 86_400, ceiling: 'run_max_timeout_s' },
    ]);
    // The engine refuses more CPUs than the host has.
    expect(runLimits(config, { cpus: 4 }, 2).limits.nanoCpus).toBe(2e9);
    expect(runLimits(config, { cpus: 4 }, 2).clamped[0]).toMatchObject({ ceiling: 'the host CPUs' });
  });

  it('passes requests within the ceilings unchanged and uses the defaults otherwise', () => {
    expect(runLimits(config, { memory_mb: 64, timeout_s: 2.5, cpus: 0.5 }, 8)).toEqual({
      limits: expect.objectContaining({ memoryBytes: 64 * MiB, timeoutMs: 2500, nanoCpus: 5e8 }) as unknown,
      clamped: [],
    });
    expect(runLimits(config, {}, 8).limits).toMatchObject({ memoryBytes: 1024 * MiB, timeoutMs: 3_600_000, nanoCpus: 1e9 });
  });

  it('refuses nonsense', () => {
    expect(() => runLimits(config, { memory_mb: 8 }, 8)).toThrow(/at least 16/);
    expect(() => runLimits(config, { memory_mb: 100.5 }, 8)).toThrow(/integer/);
    expect(() => runLimits(config, { timeout_s: 0 }, 8)).toThrow(/timeout/);
    expect(() => runLimits(config, { timeout_s: Number.POSITIVE_INFINITY }, 8)).toThrow(/timeout/);
    expect(() => runLimits(config, { cpus: -1 }, 8)).toThrow(/cpus/);
  });

  it('refuses a config whose defaults exceed its ceilings', () => {
    const base = { socket: '/s', data_dir: '/d' };
    expect(() => resolveConfig({ ...base, run_memory_mb: 4096, run_max_memory_mb: 2048 }, {})).toThrow(/run_memory_mb \(4096\) exceeds run_max_memory_mb \(2048\)/);
    expect(() => resolveConfig({ ...base, run_timeout_s: 10, run_max_timeout_s: 5 }, {})).toThrow(/run_timeout_s/);
    expect(() => resolveConfig({ ...base, run_max_output_file_mb: 10, run_max_output_mb: 5 }, {})).toThrow(/run_max_output_file_mb/);
    expect(() => resolveConfig({ ...base, run_max_output_files: 20_000 }, {})).toThrow(/run_max_output_files/);
  });
});

describe('the sandbox the engine is asked for', () => {
  const { limits } = runLimits({ ...config, run_tmp_mb: 8, run_shm_mb: 4, run_max_file_mb: 32, run_max_output_mb: 16, run_max_output_files: 5 }, { memory_mb: 256 }, 8);
  const labels = { 'io.rgrid.agent': 'agent-1', 'io.rgrid.account': 'acme', 'io.rgrid.image-key': 'k' };

  it('runs the script with nothing writable but bounded tmpfs, as nobody, without a log file', () => {
    const spec = runContainerSpec({ imageId: 'sha256:img', name: 'rgrid-run-1', inputsDir: '/d/runs/1/inputs', volume: 'vol-1', network: 'none', pidsLimit: 256, limits, labels });
    expect(spec).toMatchObject({ Image: 'sha256:img', User: '65534:65534', Labels: { ...labels, 'io.rgrid.role': 'run' } });
    expect(spec.HostConfig).toMatchObject({
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      Binds: ['/d/runs/1/inputs:/work/inputs:ro'],
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${8 * MiB},mode=1777` },
      ShmSize: 4 * MiB,
      Ulimits: [{ Name: 'fsize', Soft: 32 * MiB, Hard: 32 * MiB }],
      Memory: 256 * MiB,
      MemorySwap: 256 * MiB,
      NetworkMode: 'none',
      PidsLimit: 256,
      LogConfig: { Type: 'none', Config: {} },
    });
    const mount = spec.HostConfig?.Mounts?.[0];
    expect(mount).toMatchObject({ Type: 'volume', Source: 'vol-1', Target: '/work/outputs', ReadOnly: false, VolumeOptions: { NoCopy: true } });
    expect(mount?.VolumeOptions?.DriverConfig.Options.o).toBe(`size=${16 * MiB + OUTPUTS_SLACK_BYTES},nr_inodes=74,uid=65534,gid=65534,mode=0700,nosuid,nodev,noexec`);
  });

  it('keeps the outputs on a tmpfs volume held by an idle, locked-down holder', () => {
    const volume = outputsVolumeSpec('vol-1', limits.output, labels);
    expect(volume).toMatchObject({ Name: 'vol-1', Driver: 'local', DriverOpts: { type: 'tmpfs', device: 'tmpfs' }, Labels: { ...labels, 'io.rgrid.role': 'run-outputs' } });
    const holder = holderContainerSpec({ imageId: 'sha256:img', name: 'rgrid-hold-1', volume: 'vol-1', output: limits.output, labels });
    expect(holder).toMatchObject({ User: '65534:65534', Entrypoint: ['python3'], Labels: { 'io.rgrid.role': 'run-holder', 'io.rgrid.agent': 'agent-1' } });
    expect(holder.HostConfig).toMatchObject({ ReadonlyRootfs: true, CapDrop: ['ALL'], NetworkMode: 'none', PidsLimit: 8 });
    expect(holder.HostConfig?.Mounts?.[0]).toMatchObject({ Source: 'vol-1', Target: '/work/outputs', ReadOnly: true });
  });
});
