import type { Lock, Resolution } from '../../common/lock.js';
import type { ResolvedRuntime } from './runtimes.js';

/** The shapes of an ensure, shared by the cache, the builds, the runner and the API. */
export interface EnsureRequest {
  account?: string | undefined;
  runtime?: string | undefined;
  script: Buffer;
  /** Raw bytes of requirements.txt; null or absent: no requirements. */
  requirements?: Buffer | null | undefined;
}

/** Validated request with every key computed; errors here are the caller's (4xx), before any streaming. */
export interface PreparedEnsure {
  account: string;
  runtime: ResolvedRuntime;
  script: Buffer;
  scriptSha256: string;
  requirements: PreparedRequirements | null;
  depsKey: string | null;
  imageKey: string;
  startedAt: number;
}

export interface PreparedRequirements {
  sha256: string;
  /** What pip installs: the lock as a requirements file (or the file as written under `resolve_ttl: never`). */
  fileText: string;
  /** The exact set the dependency layer installs; null under `resolve_ttl: never` (keyed on the text). */
  lock: Lock | null;
  resolution: Resolution | null;
}

export interface EnsureResult {
  image_id: string;
  image_key: string;
  deps_key: string | null;
  script_sha256: string;
  requirements_sha256: string | null;
  /** The dependency lock (common/lock.ts): null without requirements or under `resolve_ttl: never`. */
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: Resolution | null;
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  built: boolean;
  /** `local`: a hit; `pulled`: from the registry (another worker built it); `built`: built here now. */
  image_origin: 'local' | 'pulled' | 'built';
  duration_ms: number;
  runtime: string;
  account: string;
}

export interface BuildLogEvent {
  type: 'log';
  stage: 'deps' | 'image';
  line: string;
}

