import { readFile, statfs } from 'node:fs/promises';
import type Docker from 'dockerode';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';

/**
 * How full the disk holding the engine's images is, behind an interface: the real source is statfs of
 * the engine's data root (`docker info` DockerRootDir) or of `disk_usage_path`; `disk_usage_file` names a
 * JSON file `{"used_bytes": N, "total_bytes": N}` instead — what the tests use to put a spawned daemon
 * "above the high mark", and what a host can use when the engine's storage is not visible to the agent
 * (remote engine, agent in a container): an external job writes the file.
 */
export interface DiskUsage {
  used_bytes: number;
  total_bytes: number;
  /** Where the numbers came from (`statfs:/var/lib/docker`, `file:/etc/…`). */
  source: string;
}

export interface DiskUsageSource {
  read(): Promise<DiskUsage>;
}

export function fileDiskUsage(path: string): DiskUsageSource {
  return {
    async read() {
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(path, 'utf8'));
      } catch (err) {
        throw new RgridError('unavailable', `disk_usage_file ${path}: ${(err as Error).message}`);
      }
      const p = parsed as { used_bytes?: unknown; total_bytes?: unknown };
      if (typeof p.used_bytes !== 'number' || typeof p.total_bytes !== 'number' || p.total_bytes <= 0 || p.used_bytes < 0) {
        throw new RgridError('unavailable', `disk_usage_file ${path}: expected {"used_bytes": N, "total_bytes": N > 0}`);
      }
      return { used_bytes: p.used_bytes, total_bytes: p.total_bytes, source: `file:${path}` };
    },
  };
}

export function statfsDiskUsage(path: string): DiskUsageSource {
  return {
    async read() {
      try {
        const s = await statfs(path);
        return { used_bytes: (s.blocks - s.bfree) * s.bsize, total_bytes: s.blocks * s.bsize, source: `statfs:${path}` };
      } catch (err) {
        throw new RgridError('unavailable', `statfs ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    },
  };
}

/** Follows the live config: the source is chosen again on every read. */
export function configuredDiskUsage(settings: () => AgentConfig, docker: Docker): DiskUsageSource {
  let rootDir: string | undefined;
  return {
    async read() {
      const c = settings();
      if (c.disk_usage_file) return fileDiskUsage(c.disk_usage_file).read();
      if (c.disk_usage_path) return statfsDiskUsage(c.disk_usage_path).read();
      rootDir ??= ((await docker.info()) as { DockerRootDir?: string }).DockerRootDir ?? '/var/lib/docker';
      return statfsDiskUsage(rootDir).read();
    },
  };
}
