// The index deleted while the daemon is stopped; reindex brings every
// labelled image back, verify then reports no drift. Real engine.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cliJson, docker, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';

const account = uniqueAccount('reindex');
const agents: AgentProcess[] = [];

afterAll(async () => {
  for (const a of agents) await a.stop();
  await removeAccountImages(account);
});

type Entry = { kind: string; key: string; image_id: string; account: string; runtime: string; created_at: string; last_used_at: string; deps_key: string | null; script_sha256: string | null; requirements_sha256: string | null };
type Drift = { type: string; kind: string; key: string; repaired: boolean };

describe('reconcile and reindex', () => {
  it('rebuilds a deleted index from image labels; verify finds no drift; drift is reported and repaired', async () => {
    const dir = tempDir('fleet-reindex');
    const wheelhouse = createWheelhouse([{ name: 'rgreindex', version: '1.0' }]);
    const opts = { dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse, extra: ['--prune-interval', '0'] };
    let agent = await startAgent(opts);
    agents.push(agent);
    const client = new AgentClient(agent.socket);
    await client.ensure({ script: Buffer.from(nonceScript('print(1)')), requirements: Buffer.from('rgreindex==1.0\n'), account });
    await client.ensure({ script: Buffer.from(nonceScript('print(2)')), account });
    await client.close();
    const before = await cliJson<Entry[]>(['ls'], agent.socket);
    expect(before).toHaveLength(3);
    expect((await cliJson<{ drift: Drift[] }>(['verify'], agent.socket)).drift).toEqual([]);

    // Stopped, index deleted (the data dir's agent-id file survives: it names the images' owner).
    await agent.stop();
    rmSync(join(dir, 'data', 'index'), { recursive: true, force: true });
    const restartedAt = Date.now();
    agent = await startAgent(opts);
    agents.push(agent);
    const reindex = await cliJson<{ entries: number; unrepaired: unknown[] }>(['reindex'], agent.socket);
    expect(reindex.entries).toBe(3);
    expect(reindex.unrepaired).toEqual([]);
    const after = await cliJson<Entry[]>(['ls'], agent.socket);
    const identity = (e: Entry) => JSON.stringify([e.kind, e.key, e.image_id, e.account, e.runtime, e.deps_key, e.script_sha256, e.requirements_sha256]);
    expect(after.map(identity).sort()).toEqual(before.map(identity).sort());
    for (const e of after) {
      // Created when the image was; last used = adoption time, never "as old as the image" (no mass prune).
      expect(Date.parse(e.last_used_at)).toBeGreaterThanOrEqual(restartedAt - 1000);
      expect(Date.parse(e.created_at)).toBeLessThanOrEqual(Date.parse(e.last_used_at));
    }
    expect((await cliJson<{ drift: Drift[] }>(['verify'], agent.socket)).drift).toEqual([]);

    // Drift the other way: an image removed behind the agent's back is reported, then repaired.
    const gone = after.find((e) => e.kind === 'image' && e.deps_key === null)!;
    await docker.getImage(gone.image_id).remove({ force: true });
    const drift = await cliJson<{ drift: Drift[] }>(['verify'], agent.socket);
    expect(drift.drift).toEqual([expect.objectContaining({ type: 'missing_image', key: gone.key, repaired: false })]);
    const repaired = await cliJson<{ drift: Drift[] }>(['verify', '--repair'], agent.socket);
    expect(repaired.drift).toEqual([expect.objectContaining({ type: 'missing_image', key: gone.key, repaired: true })]);
    expect((await cliJson<{ drift: Drift[] }>(['verify'], agent.socket)).drift).toEqual([]);
    expect(await cliJson<Entry[]>(['ls'], agent.socket)).toHaveLength(2);
  });
});
