import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The agent id is the identity of a data dir: it labels this agent's images (`io.rgrid.owner`) and build
 * leftovers. It lives in the index's meta database and, as a copy, in `<data_dir>/agent-id`, so that an
 * index lost or deleted while the agent was stopped comes back with the same id and `reindex` finds the
 * images it labelled.
 */
export const AGENT_ID_FILE = 'agent-id';

export async function readAgentIdFile(dataDir: string): Promise<string | undefined> {
  try {
    const text = (await readFile(join(dataDir, AGENT_ID_FILE), 'utf8')).trim();
    return /^[A-Za-z0-9-]{8,64}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

export async function writeAgentIdFile(dataDir: string, agentId: string): Promise<void> {
  if ((await readAgentIdFile(dataDir)) === agentId) return;
  await writeFile(join(dataDir, AGENT_ID_FILE), `${agentId}\n`, { mode: 0o600 });
}
