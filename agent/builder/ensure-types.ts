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
  requirements: { sha256: string; fileText: string } | null;
  depsKey: string | null;
  imageKey: string;
  startedAt: number;
}

export interface EnsureResult {
  image_id: string;
  image_key: string;
  deps_key: string | null;
  script_sha256: string;
  requirements_sha256: string | null;
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

