import { RgridError } from '../../common/errors.js';
import { requirementsLineMessage, type CanonicalRequirements, type RestrictedUse } from '../../common/requirements.js';
import { durationsOf, type AgentConfig } from '../config.js';
import { workerPipFingerprintOptions, type WorkerPipSettings } from './recipe.js';

/**
 * The operator's build policy, compiled once from the config at start: what a user's requirements file
 * may ask pip for, where pip may look, and what a build may consume. The defaults are closed: network
 * `none`, only the operator's wheelhouse or index, no index options or direct URLs from files.
 */
export interface BuildLimits {
  memoryBytes: number;
  /** CPU quota per 100 ms period (the classic builder takes quota/period, containers take NanoCpus). */
  cpuPeriodUs: number;
  cpuQuotaUs: number;
  nanoCpus: number;
  pidsLimit: number;
  timeoutMs: number;
}

export interface BuildPolicy {
  network: AgentConfig['build_network'];
  pip: WorkerPipSettings;
  /** The worker half of the pip settings fingerprint (only what changes what gets installed). */
  fingerprintOptions: string[];
  allowIndexOptions: boolean;
  allowDirectUrls: boolean;
  limits: BuildLimits;
}

const CPU_PERIOD_US = 100_000;

export function compileBuildPolicy(config: AgentConfig): BuildPolicy {
  const pip: WorkerPipSettings = { findLinksDir: config.pip_find_links, indexUrl: config.pip_index_url, wheelsOnly: config.build_wheels_only };
  return {
    network: config.build_network,
    pip,
    fingerprintOptions: workerPipFingerprintOptions(pip),
    allowIndexOptions: config.build_allow_index_options,
    allowDirectUrls: config.build_allow_direct_urls,
    limits: {
      memoryBytes: config.build_memory_mb * 1024 * 1024,
      cpuPeriodUs: CPU_PERIOD_US,
      cpuQuotaUs: Math.max(1000, Math.round(config.build_cpus * CPU_PERIOD_US)),
      nanoCpus: Math.round(config.build_cpus * 1e9),
      pidsLimit: config.build_pids_limit,
      timeoutMs: durationsOf(config).build_timeout_ms,
    },
  };
}

function refusal(policy: BuildPolicy, use: RestrictedUse): string | null {
  switch (use.kind) {
    case 'index':
      return policy.allowIndexOptions ? null : `${use.what} names a package source other than the operator's (allowed only with build_allow_index_options)`;
    case 'direct_url':
      return policy.allowDirectUrls ? null : 'it installs from a direct URL (allowed only with build_allow_direct_urls)';
    case 'source_build':
      return policy.pip.wheelsOnly ? `${use.what} would build packages from source, but this worker installs wheels only (build_wheels_only)` : null;
  }
}

/** Refuses the file at its first line the policy does not allow: one line naming it, nothing built. */
export function enforceBuildPolicy(policy: BuildPolicy, requirements: CanonicalRequirements): void {
  for (const use of requirements.restricted) {
    const why = refusal(policy, use);
    if (why === null) continue;
    throw new RgridError('bad_requirements', requirementsLineMessage(use.line, `is refused by this worker's build policy: ${why}`), {
      line: use.line.lineNo,
    });
  }
}

/** A build stopped at build_timeout_s. */
export function timeLimitError(policy: BuildPolicy, what: string, outputTail: string[] = []): RgridError {
  return new RgridError('build_failed', `${what} stopped: it exceeded the build time limit of ${policy.limits.timeoutMs / 1000} s (build_timeout_s)`, {
    limit: 'build_timeout_s',
    output_tail: outputTail,
  });
}

/** A build whose container the kernel killed for memory (build_memory_mb). */
export function memoryLimitError(policy: BuildPolicy, what: string, outputTail: string[]): RgridError {
  return new RgridError(
    'build_failed',
    `${what} failed: it exceeded the build memory limit of ${policy.limits.memoryBytes / 1024 / 1024} MB (build_memory_mb)`,
    { limit: 'build_memory_mb', output_tail: outputTail },
  );
}
