import type { RequirementsDigest } from '../../common/cache-keys.js';
import type { Lock, Resolution } from '../../common/lock.js';
import type { ResolvedRuntime } from './runtimes.js';

/**
 * The contract between the image cache and the resolution service (agent/builder/resolution.ts): the
 * cache asks for the lock of a requirements file before it computes the dependency key.
 */
export interface LockRequest {
  account: string;
  runtime: ResolvedRuntime;
  /** The canonical requirements and their sha256 (common/cache-keys.ts requirementsDigest). */
  requirements: RequirementsDigest;
  /** pipSettingsFingerprint of the file's options and the worker's pip settings. */
  pipFingerprint: string;
  /** The requirements file exactly as pip reads it (recipe.ts requirementsFileText). */
  fileText: string;
}

export interface LockAnswer {
  lock: Lock;
  resolution: Resolution;
}

export interface ResolutionService {
  /**
   * The lock to key and build on. A fully locked file at once (`locked`); else the resolution cache:
   * within `resolve_ttl` (`cached`), past it served at once while a background refresh runs (`cached`,
   * or `stale` when the last refresh failed), or resolved now when there is none (`resolved`). Null when
   * `resolve_ttl` is `never`: the key stays on the text, as before locks. A failed first resolution
   * throws `build_failed` with pip's tail.
   */
  lockFor(request: LockRequest, signal?: AbortSignal): Promise<LockAnswer | null>;
  /** A lock this agent made or read, by its digest (inspect, pylock.toml); undefined when unknown. */
  lockBySha(lockSha256: string): Lock | undefined;
  /** Resolves when no background refresh is running (tests; the drain). */
  idle(): Promise<void>;
  /** Resolutions running now, foreground and background (a gauge for operators and tests). */
  running(): number;
}
