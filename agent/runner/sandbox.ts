/**
 * The run sandbox as data: the limits a run gets (what it asked for, clamped to the agent's ceilings) and
 * the engine objects that enforce them — the run container, the tmpfs volume its outputs go to, and the
 * holder container that keeps that volume mounted until the outputs are copied out. Pure functions, so
 * the exact container settings are unit-tested; agent/runner/run.ts creates and removes the objects.
 *
 * Why a holder: everything a run can write is a size-limited tmpfs (the root filesystem is read-only), so
 * no run can fill the host's disk. A tmpfs is gone once the last container using it stops, and the
 * engine's archive endpoint cannot read a container's own tmpfs mounts (HostConfig.Tmpfs) at all. So the
 * outputs live on a named `local` volume of type tmpfs, which dockerd mounts on the host (the archive
 * endpoint reads it) and unmounts when no running container uses it: the holder — an idle, locked-down
 * container of a runtime image — keeps it mounted after the run has exited. Holders are made ahead of the
 * runs and each is used by one run only (holder-pool.ts). See docs/agent.md.
 */
import type Docker from 'dockerode';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';

const MiB = 1024 * 1024;
/** The uid:gid every run (and its holder) runs as: `nobody`, owning nothing on the host. */
export const RUN_USER = '65534:65534';
export const OUTPUTS_DIR = '/work/outputs';
/**
 * The outputs tmpfs is this much larger than the output limit, so a run that writes past the limit is
 * seen doing so when its outputs are copied (and reported as `output_limit`) instead of only failing on a
 * full disk with an error of its own.
 */
export const OUTPUTS_SLACK_BYTES = 1 * MiB;

export interface OutputLimits {
  /** All output files together (their apparent sizes: a sparse file counts in full). */
  maxBytes: number;
  maxFileBytes: number;
  maxFiles: number;
  /** Wall-clock bound on copying them out. */
  copyTimeoutMs: number;
}

export interface RunLimits {
  memoryBytes: number;
  nanoCpus: number;
  timeoutMs: number;
  tmpBytes: number;
  shmBytes: number;
  /** RLIMIT_FSIZE. */
  maxFileBytes: number;
  output: OutputLimits;
}

/** A request the agent lowered to its ceiling: logged, so a submitter's "why only 16 GiB" has an answer. */
export interface Clamp {
  setting: 'memory_mb' | 'cpus' | 'timeout_s';
  requested: number;
  used: number;
  ceiling: string;
}

export interface RequestedLimits {
  timeout_s?: number | undefined;
  memory_mb?: number | undefined;
  cpus?: number | undefined;
}

type LimitConfig = Pick<
  AgentConfig,
  | 'run_memory_mb' | 'run_cpus' | 'run_timeout_s' | 'run_max_memory_mb' | 'run_max_cpus' | 'run_max_timeout_s' | 'run_tmp_mb' | 'run_shm_mb'
  | 'run_max_file_mb' | 'run_max_output_mb' | 'run_max_output_file_mb' | 'run_max_output_files' | 'run_output_copy_timeout_s'
>;

/** The limits of one run: the request (or the defaults) clamped to the ceilings. Throws on nonsense. */
export function runLimits(config: LimitConfig, request: RequestedLimits, hostCpus: number): { limits: RunLimits; clamped: Clamp[] } {
  const timeoutS = request.timeout_s ?? config.run_timeout_s;
  const memoryMb = request.memory_mb ?? config.run_memory_mb;
  const cpus = request.cpus ?? config.run_cpus;
  if (!(timeoutS > 0) || !Number.isFinite(timeoutS)) throw new RgridError('bad_request', 'timeout must be a positive number of seconds');
  if (!Number.isInteger(memoryMb) || memoryMb < 16) throw new RgridError('bad_request', 'memory must be an integer number of MB, at least 16');
  if (!(cpus > 0) || !Number.isFinite(cpus)) throw new RgridError('bad_request', 'cpus must be positive');
  const clamped: Clamp[] = [];
  const clamp = (setting: Clamp['setting'], requested: number, ceiling: number, ceilingName: string): number => {
    if (requested <= ceiling) return requested;
    clamped.push({ setting, requested, used: ceiling, ceiling: ceilingName });
    return ceiling;
  };
  const usedMemoryMb = clamp('memory_mb', memoryMb, config.run_max_memory_mb, 'run_max_memory_mb');
  const cpuCeiling = Math.min(config.run_max_cpus, Math.max(1, hostCpus));
  const usedCpus = clamp('cpus', cpus, cpuCeiling, cpuCeiling < config.run_max_cpus ? 'the host CPUs' : 'run_max_cpus');
  const usedTimeoutS = clamp('timeout_s', timeoutS, config.run_max_timeout_s, 'run_max_timeout_s');
  return {
    limits: {
      memoryBytes: usedMemoryMb * MiB,
      nanoCpus: Math.round(usedCpus * 1e9),
      timeoutMs: Math.round(usedTimeoutS * 1000),
      tmpBytes: config.run_tmp_mb * MiB,
      shmBytes: config.run_shm_mb * MiB,
      maxFileBytes: config.run_max_file_mb * MiB,
      output: {
        maxBytes: config.run_max_output_mb * MiB,
        maxFileBytes: config.run_max_output_file_mb * MiB,
        maxFiles: config.run_max_output_files,
        copyTimeoutMs: Math.round(config.run_output_copy_timeout_s * 1000),
      },
    },
    clamped,
  };
}

/** Options of the tmpfs behind /work/outputs: bounded in bytes and inodes, owned by the run's uid. */
export function outputsTmpfsOptions(output: OutputLimits): Record<string, string> {
  const uid = RUN_USER.split(':');
  return {
    type: 'tmpfs',
    device: 'tmpfs',
    // Inodes: the files plus as many directories again; the copy counts files exactly.
    o: `size=${output.maxBytes + OUTPUTS_SLACK_BYTES},nr_inodes=${2 * output.maxFiles + 64},uid=${uid[0]},gid=${uid[1]},mode=0700,nosuid,nodev,noexec`,
  };
}

export function outputsVolumeSpec(name: string, output: OutputLimits, labels: Record<string, string>): Docker.VolumeCreateOptions {
  return { Name: name, Driver: 'local', DriverOpts: outputsTmpfsOptions(output), Labels: { ...labels, 'io.rgrid.role': 'run-outputs' } };
}

/**
 * The mount of the outputs volume. It names the tmpfs driver options too, so that even if the volume were
 * gone when the container is created, the engine would create a tmpfs again, never a volume on disk.
 */
function outputsMount(volume: string, output: OutputLimits, readOnly: boolean): Docker.MountSettings {
  return {
    Type: 'volume',
    Source: volume,
    Target: OUTPUTS_DIR,
    ReadOnly: readOnly,
    // NoCopy: the image's (empty) /work/outputs must not be copied up, with its root-owned 1777 mode.
    VolumeOptions: { NoCopy: true, Labels: {}, DriverConfig: { Name: 'local', Options: outputsTmpfsOptions(output) } },
  };
}

const LOCKED_DOWN = { CapDrop: ['ALL'], SecurityOpt: ['no-new-privileges'], ReadonlyRootfs: true } as const;

export interface RunContainerInput {
  imageId: string;
  name: string;
  inputsDir: string;
  volume: string;
  network: string;
  pidsLimit: number;
  limits: RunLimits;
  labels: Record<string, string>;
}

/** The run container: the image's own command, as nobody, with nothing writable but bounded tmpfs. */
export function runContainerSpec(input: RunContainerInput): Docker.ContainerCreateOptions {
  const { limits } = input;
  return {
    Image: input.imageId,
    name: input.name,
    User: RUN_USER,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    Labels: { ...input.labels, 'io.rgrid.role': 'run' },
    HostConfig: {
      ...LOCKED_DOWN,
      CapDrop: [...LOCKED_DOWN.CapDrop],
      SecurityOpt: [...LOCKED_DOWN.SecurityOpt],
      Binds: [`${input.inputsDir}:/work/inputs:ro`],
      Mounts: [outputsMount(input.volume, limits.output, false)],
      // exec stays allowed in /tmp: libraries write and dlopen shared objects there.
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${limits.tmpBytes},mode=1777` },
      ShmSize: limits.shmBytes,
      Ulimits: [{ Name: 'fsize', Soft: limits.maxFileBytes, Hard: limits.maxFileBytes }],
      NetworkMode: input.network,
      Memory: limits.memoryBytes,
      MemorySwap: limits.memoryBytes,
      NanoCpus: limits.nanoCpus,
      PidsLimit: input.pidsLimit,
      // The agent reads stdout/stderr from the attach stream (and keeps only a tail); the engine's own log
      // file of the container would grow on the host's disk without bound.
      LogConfig: { Type: 'none', Config: {} },
    },
  };
}

export interface HolderContainerInput {
  imageId: string;
  name: string;
  volume: string;
  output: OutputLimits;
  labels: Record<string, string>;
}

/**
 * Keeps the outputs volume mounted after the run exits (module comment). Python is in every runtime
 * image. Holders are made ahead of their runs (holder-pool.ts), so nothing in one is run-specific.
 */
export function holderContainerSpec(input: HolderContainerInput): Docker.ContainerCreateOptions {
  return {
    Image: input.imageId,
    name: input.name,
    User: RUN_USER,
    Entrypoint: ['python3'],
    Cmd: ['-c', 'import signal\nwhile True: signal.pause()'],
    Labels: { ...input.labels, 'io.rgrid.role': 'run-holder' },
    HostConfig: {
      ...LOCKED_DOWN,
      CapDrop: [...LOCKED_DOWN.CapDrop],
      SecurityOpt: [...LOCKED_DOWN.SecurityOpt],
      Mounts: [outputsMount(input.volume, input.output, true)],
      NetworkMode: 'none',
      Memory: 64 * MiB,
      MemorySwap: 64 * MiB,
      NanoCpus: 1e8,
      PidsLimit: 8,
      LogConfig: { Type: 'none', Config: {} },
    },
  };
}
