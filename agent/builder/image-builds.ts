import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { RgridError } from '../../common/errors.js';
import type { AgentConfig } from '../config.js';
import type { AgentIndex } from '../index/index.js';
import type { IndexEntry } from '../index/types.js';
import { timeLimitError, type BuildPolicy } from './build-policy.js';
import { engineBuild, engineError, wheelhouseFiles, type ContextFile } from './engine-build.js';
import type { BuildLogEvent, PreparedEnsure } from './ensure-types.js';
import { withInstallContainer } from './install-container.js';
import { depsDockerfile, depsImageTag, execDockerfile, execImageTag, INSTALL_ROOT, installLabels } from './recipe.js';

/**
 * The two builds. Order of effects, for crash safety: build (the engine tags the image when the build
 * succeeds) → inspect the new image → write the index entry in one transaction. A crash anywhere before
 * the write leaves at most an untracked image (or a labelled install container, which start-up repair
 * removes), never an entry pointing at a missing image. Each build has the policy's deadline.
 */
export interface BuildContextDeps {
  docker: Docker;
  index: AgentIndex;
  config: AgentConfig;
  policy: BuildPolicy;
  logger: Logger;
  signal: AbortSignal;
  now: () => number;
  /** Whether a new entry is written with a push job (image sharing on: agent/registry/sharing.ts). */
  queuePush?: () => boolean;
}

export async function buildDepsImage(deps: BuildContextDeps, p: PreparedEnsure, emit: (e: BuildLogEvent) => void): Promise<IndexEntry> {
  const { docker, config, policy } = deps;
  const depsKey = p.depsKey!;
  const requirements = p.requirements!;
  const tag = depsImageTag(depsKey, p.account);
  const buildId = randomUUID();
  let wheelhouse: ContextFile[] = [];
  if (config.pip_find_links) {
    try {
      wheelhouse = await wheelhouseFiles(config.pip_find_links);
    } catch (err) {
      throw new RgridError('unavailable', `pip_find_links directory is not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  const dockerfile = depsDockerfile({
    baseImageId: p.runtime.imageId,
    depsKey,
    requirementsSha256: requirements.sha256,
    lockSha256: requirements.lock?.sha256 ?? null,
    runtime: p.runtime.name,
    account: p.account,
    owner: deps.index.agentId,
  });
  emit({ type: 'log', stage: 'deps', line: `building dependency layer ${tag}` });
  if (requirements.lock) emit({ type: 'log', stage: 'deps', line: `lock ${requirements.lock.sha256.slice(0, 16)} (${requirements.resolution}): ${requirements.lock.resolved.join(' ')}` });
  const started = deps.now();
  const deadline = AbortSignal.timeout(policy.limits.timeoutMs);
  const onLine = (line: string): void => emit({ type: 'log', stage: 'deps', line });
  try {
    const builtId = await withInstallContainer(
      docker,
      {
        baseImageId: p.runtime.imageId,
        labels: installLabels(deps.index.agentId, buildId),
        requirementsFileText: requirements.fileText,
        lockInstall: { requireHashes: requirements.lock !== null, noDeps: requirements.lock !== null && !requirements.lock.fromFile },
        wheelhouse,
        policy,
        signal: deps.signal,
        deadline,
        onLine,
        logger: deps.logger,
      },
      async (container) => {
        let archive: NodeJS.ReadableStream;
        try {
          archive = await container.getArchive({ path: INSTALL_ROOT });
        } catch (err) {
          throw engineError('reading the installed dependencies failed', err);
        }
        let skipped = 0;
        try {
          const id = await engineBuild(docker, [{ name: 'Dockerfile', content: dockerfile }, { name: 'rgrid', archive }], {
            tag,
            networkMode: 'none',
            limits: policy.limits,
            signal: deps.signal,
            deadline,
            onDeadline: () => timeLimitError(policy, 'dependency layer build'),
            onLine,
            onSkipped: () => skipped++,
          });
          if (skipped > 0) deps.logger.warn({ tag, skipped }, 'entries of the installed dependencies that are neither files, directories nor links were left out');
          return id;
        } finally {
          // A build stopped half-way leaves the archive unread: release its connection to the engine.
          (archive as Readable).destroy();
        }
      },
    );
    const entry = await entryFor(deps, builtId, tag, {
      kind: 'deps',
      account: p.account,
      key: depsKey,
      runtime: p.runtime.name,
      base_image_id: p.runtime.imageId,
      script_sha256: null,
      requirements_sha256: requirements.sha256,
      deps_key: depsKey,
      lock_sha256: requirements.lock?.sha256 ?? null,
    });
    await deps.index.putBuilt(entry, [], { queuePush: deps.queuePush?.() === true });
    deps.logger.info({ tag, image_id: entry.image_id, ms: deps.now() - started }, 'built dependency layer');
    return entry;
  } finally {
    // Whatever a stopped or crashed step left with this build's label (the install container normally
    // goes with withInstallContainer; this also covers a remove that failed).
    await removeBuildLeftovers(docker, { 'io.rgrid.build': buildId }, deps.logger);
  }
}

export async function buildExecImage(
  deps: BuildContextDeps,
  p: PreparedEnsure,
  depsEntry: IndexEntry | null,
  depsHit: boolean,
  emit: (e: BuildLogEvent) => void,
): Promise<IndexEntry> {
  const tag = execImageTag(p.imageKey, p.account);
  const dockerfile = execDockerfile({
    baseImageId: p.runtime.imageId,
    depsImageId: depsEntry?.image_id ?? null,
    imageKey: p.imageKey,
    depsKey: p.depsKey,
    scriptSha256: p.scriptSha256,
    requirementsSha256: p.requirements?.sha256 ?? null,
    lockSha256: p.requirements?.lock?.sha256 ?? null,
    runtime: p.runtime.name,
    account: p.account,
    owner: deps.index.agentId,
  });
  emit({ type: 'log', stage: 'image', line: `building script image ${tag}` });
  // Copies the script and makes two directories: no network, and the policy's limits and deadline.
  const builtId = await engineBuild(deps.docker, [{ name: 'Dockerfile', content: dockerfile }, { name: 'script.py', content: p.script }], {
    tag,
    networkMode: 'none',
    limits: deps.policy.limits,
    signal: deps.signal,
    deadline: AbortSignal.timeout(deps.policy.limits.timeoutMs),
    onDeadline: () => timeLimitError(deps.policy, 'script image build'),
    onLine: (line) => emit({ type: 'log', stage: 'image', line }),
  });
  const entry = await entryFor(deps, builtId, tag, {
    kind: 'image',
    account: p.account,
    key: p.imageKey,
    runtime: p.runtime.name,
    base_image_id: p.runtime.imageId,
    script_sha256: p.scriptSha256,
    requirements_sha256: p.requirements?.sha256 ?? null,
    deps_key: p.depsKey,
    lock_sha256: p.requirements?.lock?.sha256 ?? null,
  });
  // A deps layer that was reused counts as used, in the same transaction as the new entry.
  await deps.index.putBuilt(entry, depsHit && depsEntry ? [{ kind: 'deps', account: p.account, key: depsEntry.key }] : [], { queuePush: deps.queuePush?.() === true });
  deps.logger.info({ tag, image_id: entry.image_id }, 'built script image');
  return entry;
}

async function entryFor(
  deps: BuildContextDeps,
  builtId: string,
  tag: string,
  fields: Omit<IndexEntry, 'image_id' | 'image_tag' | 'size_bytes' | 'created_at' | 'last_used_at' | 'use_count'>,
): Promise<IndexEntry> {
  let info: Docker.ImageInspectInfo;
  try {
    info = await deps.docker.getImage(builtId).inspect();
  } catch (err) {
    throw engineError('inspecting the new image failed', err);
  }
  const at = deps.now();
  return { ...fields, image_id: info.Id, image_tag: tag, size_bytes: info.Size, created_at: at, last_used_at: at, use_count: 1, origin: 'built', registry_digest: null };
}

/**
 * Removes containers and untagged images carrying all the given labels (build leftovers). Tagged images
 * are never touched: those are results. Failures are logged, not thrown: cleanup must not fail a build.
 */
export async function removeBuildLeftovers(docker: Docker, labels: Record<string, string>, logger: Logger): Promise<number> {
  const label = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  let removed = 0;
  try {
    const containers = await docker.listContainers({ all: true, filters: { label } });
    for (const c of containers) {
      await docker
        .getContainer(c.Id)
        .remove({ force: true })
        .then(() => removed++)
        .catch((err: unknown) => logger.debug({ err, id: c.Id }, 'leftover container not removed'));
    }
    const images = await docker.listImages({ all: true, filters: { label } });
    // Newest first: children before their parents.
    images.sort((a, b) => b.Created - a.Created);
    for (const image of images) {
      if ((image.RepoTags ?? []).some((t) => t !== '<none>:<none>')) continue;
      await docker
        .getImage(image.Id)
        .remove({ noprune: false })
        .then(() => removed++)
        .catch((err: unknown) => logger.debug({ err, id: image.Id }, 'leftover image not removed'));
    }
  } catch (err) {
    logger.warn({ err }, 'listing build leftovers failed');
  }
  return removed;
}
