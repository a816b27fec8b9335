import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { isNotFound } from './builder/engine-build.js';
import { removeBuildLeftovers } from './builder/image-builds.js';
import type { AgentIndex } from './index/index.js';
import { removePoolLeftovers } from './runner/holder-pool.js';

/**
 * Start-up repair after a crash or an operator's `docker rmi`: every index entry must point at an image
 * the engine has (entries whose image is gone are dropped; the next ensure rebuilds), and what this
 * agent's previous life left half-done is removed — only what carries this data dir's agent ID label
 * (install-stage build containers and images, run containers, outputs holders and their volumes), never
 * anything of another agent.
 */
export interface RepairReport {
  dropped_entries: number;
  removed_leftovers: number;
}

export async function repairOnStart(docker: Docker, index: AgentIndex, dataDir: string, logger: Logger): Promise<RepairReport> {
  let dropped = 0;
  for (const entry of index.list()) {
    try {
      await docker.getImage(entry.image_id).inspect();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (await index.remove(entry, { ifImageId: entry.image_id })) dropped++;
      logger.warn({ kind: entry.kind, key: entry.key, account: entry.account, image_id: entry.image_id }, 'dropped an entry whose image is gone');
    }
  }
  const removed = await removeBuildLeftovers(docker, { 'io.rgrid.agent': index.agentId }, logger);
  // Outputs holders made ahead by the previous life (a kill -9 left them idle, holding empty tmpfs).
  const holders = await removePoolLeftovers(docker, index.agentId, logger);
  // Per-run scratch directories of runs that cannot finish any more.
  await rm(join(dataDir, 'runs'), { recursive: true, force: true });
  return { dropped_entries: dropped, removed_leftovers: removed + holders };
}
