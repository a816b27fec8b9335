/**
 * "Pull before build": on a local miss of a script image or a dependency layer, the agent asks the
 * control plane (common/wire/registry-api.ts) before building, and
 *   pushed   → pulls the image by the recorded digest (transfer.ts checks its labels) and indexes it as
 *              `pulled`; a refused image (digest_mismatch) or a registry that is down → builds locally;
 *   lease    → builds (renewing the lease every third of lease_ms), pushes, completes `pushed`; a failed
 *              build completes `failed` with its tail, a failed push completes `released`;
 *   building → waits (acquire-loop.ts) up to build_wait_s, then builds locally;
 *   failed   → fails with the recorded message and tail, without building;
 * and when the control plane is away, builds locally (degraded, logged once per outage). Every local
 * build is written together with a push job (index.putBuilt queuePush, agent/index/push-outbox.ts), so a
 * push that could not happen now — or was cut by a kill -9 — is made later by push-runner.ts.
 *
 * Sharing is on only with both a registry and a control plane configured; a local hit never gets here.
 */
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { isRgridError, RgridError } from '../../common/errors.js';
import { shown, storableLog } from '../../common/names.js';
import type { BuildAcquireRequest, BuildCompleteRequest } from '../../common/wire/registry-api.js';
import type { PreparedEnsure } from '../builder/ensure-types.js';
import { depsImageTag, execImageTag } from '../builder/recipe.js';
import { durationsOf, type AgentConfig } from '../config.js';
import type { ControlPlaneClient } from '../control/client.js';
import type { AgentIndex } from '../index/index.js';
import type { EntryKind, EntryRef, IndexEntry } from '../index/types.js';
import { acquireLoop } from './acquire-loop.js';
import { readRegistryAuth } from './auth.js';
import { pullVerified, pushImage, registryLocation, type PushResult } from './transfer.js';

export type SharedOrigin = 'built' | 'pulled';
export type PullResult = 'ok' | 'mismatch' | 'failed';
export type LeaseWaitOutcome = 'pushed' | 'lease' | 'failed' | 'timeout' | 'unreachable';

/** Where sharing reports (metrics); every method optional so tests can leave it out. */
export interface SharingObserver {
  registryPull(kind: EntryKind, result: PullResult): void;
  registryPush(kind: EntryKind, ok: boolean): void;
  leaseWait(kind: EntryKind, outcome: LeaseWaitOutcome, seconds: number): void;
}

export interface SharingDeps {
  docker: Docker;
  index: AgentIndex;
  settings: () => AgentConfig;
  /** The control-plane client; undefined when none is configured. */
  control: () => ControlPlaneClient | undefined;
  logger: Logger;
  observer?: SharingObserver;
  now?: () => number;
  /** Called when a push job was left for the background (push-runner.ts wakes up). */
  onQueued?: () => void;
}

export interface ImageSharing {
  /** Whether a miss asks the grid first (a registry and a control plane are configured). */
  active(): boolean;
  /** The image for (p, kind): pulled from the registry, or `build()` under the grid's lease. */
  obtain(p: PreparedEnsure, kind: EntryKind, build: () => Promise<IndexEntry>, signal?: AbortSignal): Promise<{ entry: IndexEntry; origin: SharedOrigin }>;
  /** Pushes an entry's image now; the digest. */
  push(entry: Pick<IndexEntry, 'kind' | 'account' | 'key' | 'image_id'>): Promise<PushResult>;
  /** Refs whose push obtain() is making right now (the background pusher leaves them alone). */
  readonly pushing: ReadonlySet<string>;
}

/** How long one acquire request is held by the control plane (the wire allows 30 s). */
const ACQUIRE_POLL_MS = 20_000;
const refKey = (r: EntryRef): string => `${r.kind}/${r.account}/${r.key}`;

/** The local tag a pulled image gets: the same as a local build's, so prune, ls and inspect treat both alike. */
function localTag(kind: EntryKind, key: string, account: string): string {
  return kind === 'image' ? execImageTag(key, account) : depsImageTag(key, account);
}

/** The index entry (minus engine facts) for (p, kind). */
function describe(p: PreparedEnsure, kind: EntryKind): Omit<IndexEntry, 'image_id' | 'image_tag' | 'size_bytes' | 'created_at' | 'last_used_at' | 'use_count'> {
  const key = kind === 'image' ? p.imageKey : p.depsKey!;
  return {
    kind, account: p.account, key, runtime: p.runtime.name, base_image_id: p.runtime.imageId,
    script_sha256: kind === 'image' ? p.scriptSha256 : null,
    requirements_sha256: p.requirements?.sha256 ?? null,
    deps_key: p.depsKey,
    lock_sha256: p.requirements?.lock?.sha256 ?? null,
  };
}

/** Text for the wire's Text(n): storable, and the END of it when too long (the tail is what tells). */
const tail = (text: string, max: number): string => {
  const s = storableLog(text);
  return s.length > max ? s.slice(s.length - max) : s;
};

/**
 * The build output a failed build carries, as the text recorded for the grid (`log_tail`): the builders
 * give it as lines (`output_tail: string[]`), a failure answered by the control plane as one string.
 * Without this, every recorded failure had an empty tail and the other workers' runs lost pip's error.
 */
export function failureOutputTail(detail: Record<string, unknown> | undefined, max: number): string {
  const raw = detail?.output_tail;
  const text = typeof raw === 'string' ? raw : Array.isArray(raw) ? raw.filter((l): l is string => typeof l === 'string').join('\n') : '';
  return tail(text, max);
}

export function createImageSharing(deps: SharingDeps): ImageSharing {
  const { docker, index, settings, logger } = deps;
  const log = logger.child({ component: 'registry' });
  const now = deps.now ?? Date.now;
  const pushing = new Set<string>();
  let outage = false;

  const timeoutMs = (): number => durationsOf(settings()).registry_timeout_ms;
  const controlTimeoutMs = (): number => durationsOf(settings()).sync_timeout_ms;

  /** One line per outage, not per miss: the first failure logs, the next success closes it. */
  function degraded(reason: string): void {
    if (!outage) log.warn({ reason: shown(reason, 300) }, 'image sharing degraded: building locally and queueing pushes');
    outage = true;
  }
  function healthy(): void {
    if (outage) log.info('image sharing back');
    outage = false;
  }

  async function push(entry: Pick<IndexEntry, 'kind' | 'account' | 'key' | 'image_id'>): Promise<PushResult> {
    const registry = settings().registry!;
    const auth = await readRegistryAuth(settings().registry_auth_file);
    try {
      const pushed = await pushImage(docker, registry, entry.image_id, registryLocation(registry, entry.account, entry.kind, entry.key), { ...(auth ? { auth } : {}), timeoutMs: timeoutMs() });
      deps.observer?.registryPush(entry.kind, true);
      return pushed;
    } catch (err) {
      deps.observer?.registryPush(entry.kind, false);
      throw err;
    }
  }

  async function pull(p: PreparedEnsure, kind: EntryKind, digest: string): Promise<IndexEntry> {
    const registry = settings().registry!;
    const fields = describe(p, kind);
    const auth = await readRegistryAuth(settings().registry_auth_file);
    const location = registryLocation(registry, p.account, kind, fields.key);
    const imageId = await pullVerified(docker, registry, location, digest, { account: p.account, kind, key: fields.key }, { ...(auth ? { auth } : {}), timeoutMs: timeoutMs() });
    const tag = localTag(kind, fields.key, p.account);
    const colon = tag.lastIndexOf(':');
    await docker.getImage(imageId).tag({ repo: tag.slice(0, colon), tag: tag.slice(colon + 1) });
    // The local tag alone names it from now on: an image referenced in two repositories would make the
    // engine refuse the pruner's plain remove by ID. The digest stays in the entry (registry_digest).
    await docker.getImage(`${location.repository}@${digest}`).remove({ noprune: true }).catch(() => undefined);
    const info = await docker.getImage(imageId).inspect();
    const at = now();
    const entry: IndexEntry = {
      ...fields, image_id: info.Id, image_tag: tag, size_bytes: info.Size, created_at: at, last_used_at: at, use_count: 1,
      origin: 'pulled', registry_digest: digest,
    };
    await index.putBuilt(entry);
    return entry;
  }

  /** A local build outside any lease (degraded, waited too long, or a refused pull): its push is queued. */
  async function buildUnleased(build: () => Promise<IndexEntry>): Promise<{ entry: IndexEntry; origin: SharedOrigin }> {
    const entry = await build();
    deps.onQueued?.();
    return { entry, origin: 'built' };
  }

  async function buildLeased(
    kind: EntryKind, control: ControlPlaneClient, lease: { lease_id: string; lease_ms: number }, build: () => Promise<IndexEntry>,
  ): Promise<{ entry: IndexEntry; origin: SharedOrigin }> {
    let lost = false;
    const renew = setInterval(() => {
      control.renewBuild(lease.lease_id, { timeoutMs: controlTimeoutMs() }).catch((err: unknown) => {
        if (isRgridError(err) && err.code === 'conflict') {
          // Another worker took the lease over: our build goes on (a run waits for it), but its push is
          // not recorded under a lease we no longer hold.
          lost = true;
          clearInterval(renew);
          log.warn({ kind, lease_id: lease.lease_id }, 'build lease lost; the build goes on, its push will not be recorded');
        } else {
          log.warn({ kind, lease_id: lease.lease_id, reason: (err as Error).message }, 'build lease renewal failed');
        }
      });
    }, Math.max(100, Math.floor(lease.lease_ms / 3)));
    renew.unref();
    const complete = (body: BuildCompleteRequest): Promise<void> =>
      control.completeBuild(lease.lease_id, body, { timeoutMs: controlTimeoutMs() }).catch((err: unknown) => {
        log.warn({ kind, lease_id: lease.lease_id, outcome: body.outcome, reason: (err as Error).message }, 'completing the build lease failed');
        throw err;
      });
    let entry: IndexEntry;
    try {
      entry = await build();
    } catch (err) {
      clearInterval(renew);
      if (!lost) {
        const failed = isRgridError(err) && err.code === 'build_failed';
        const body: BuildCompleteRequest = failed
          ? { outcome: 'failed', error: 'build_failed', message: tail(err.message, 4000), log_tail: failureOutputTail(err.detail, 16_000) }
          // Not the submission's fault (shutting down, the engine away): someone else may build it.
          : { outcome: 'released' };
        await complete(body).catch(() => undefined);
      }
      throw err;
    }
    clearInterval(renew);
    const ref: EntryRef = { kind: entry.kind, account: entry.account, key: entry.key };
    if (lost) {
      // The new holder pushes and records its own build; ours stays local.
      await index.pushes.remove(ref, entry.image_id);
      return { entry, origin: 'built' };
    }
    pushing.add(refKey(ref));
    try {
      let pushed: PushResult;
      try {
        pushed = await push(entry);
      } catch (err) {
        degraded(`push: ${(err as Error).message}`);
        // The job stays in the outbox; the lease goes to whoever asks next.
        await complete({ outcome: 'released' }).catch(() => undefined);
        deps.onQueued?.();
        return { entry, origin: 'built' };
      }
      await index.pushes.markPushed(ref, entry.image_id, pushed.digest, pushed.size);
      try {
        await complete({ outcome: 'pushed', manifest_digest: pushed.digest, size_bytes: pushed.size });
        await index.pushes.remove(ref, entry.image_id);
        healthy();
      } catch {
        // Pushed but not recorded: the outbox records it (PUT registry-images) when the control plane is back.
        deps.onQueued?.();
      }
      return { entry, origin: 'built' };
    } finally {
      pushing.delete(refKey(ref));
    }
  }

  return {
    pushing,
    push,
    active: () => {
      const s = settings();
      return s.registry !== undefined && s.control_url !== undefined && deps.control() !== undefined;
    },

    async obtain(p, kind, build, signal) {
      const control = deps.control()!;
      const registry = settings().registry!;
      const fields = describe(p, kind);
      const body: BuildAcquireRequest = {
        account: p.account, kind, key: fields.key, runtime: p.runtime.name, base_image_id: p.runtime.imageId,
        requirements_sha256: fields.requirements_sha256, script_sha256: fields.script_sha256,
        deps_key: kind === 'image' ? p.depsKey : null, registry,
      };
      const started = now();
      const decision = await acquireLoop({
        // An abandoned drain cuts the wait; the build that follows is then refused as shutting_down.
        acquire: (waitMs) => control.acquireBuild({ ...body, wait_ms: waitMs }, { timeoutMs: waitMs + controlTimeoutMs(), signal }),
        buildWaitMs: durationsOf(settings()).build_wait_ms,
        pollMs: ACQUIRE_POLL_MS,
        minIntervalMs: 1000,
        now,
        sleep: (ms) => new Promise((r) => {
          const timer = setTimeout(r, ms);
          signal?.addEventListener('abort', () => {
            clearTimeout(timer);
            r(undefined);
          }, { once: true });
        }),
        onWaiting: (holder) => log.info({ kind, key: fields.key, holder }, 'another worker is building this image; waiting for its push'),
      });
      deps.observer?.leaseWait(kind, decision.type, (now() - started) / 1000);
      switch (decision.type) {
        case 'unreachable':
          degraded(`control plane: ${(decision.error as Error).message}`);
          return buildUnleased(build);
        case 'timeout':
          log.warn({ kind, key: fields.key, waited_ms: decision.waitedMs }, 'waited build_wait_s for another worker\'s build; building locally');
          return buildUnleased(build);
        case 'failed': {
          const a = decision.answer;
          log.info({ kind, key: fields.key, failed_by: a.failed_by }, 'this image failed to build recently on another worker; not building it again');
          throw new RgridError('build_failed', a.message, { output_tail: a.log_tail, failed_by: a.failed_by, failed_at: a.failed_at });
        }
        case 'pushed': {
          healthy();
          try {
            const entry = await pull(p, kind, decision.answer.manifest_digest);
            deps.observer?.registryPull(kind, 'ok');
            log.info({ kind, key: fields.key, digest: decision.answer.manifest_digest, pushed_by: decision.answer.pushed_by }, 'pulled the image another worker built');
            return { entry, origin: 'pulled' };
          } catch (err) {
            const mismatch = isRgridError(err) && err.code === 'digest_mismatch';
            deps.observer?.registryPull(kind, mismatch ? 'mismatch' : 'failed');
            if (mismatch) log.error({ kind, key: fields.key, reason: (err as Error).message }, 'refused the image in the registry: it is not the one asked for; building locally');
            else degraded(`pull: ${(err as Error).message}`);
            return buildUnleased(build);
          }
        }
        case 'lease':
          healthy();
          return buildLeased(kind, control, decision.answer, build);
      }
    },
  };
}
