// TTL pruning (image, index entry and central row gone; images used by
// containers and layers with live children kept) and disk watermarks with a fake disk-usage source
// (LRU order until below the low mark). Real engine, real control plane and PostgreSQL.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { useTestDatabase } from '../control/support.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cli, cliJson, docker, imageExists, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { centralEntries, eventually, startControl, workerToken, type ControlProcess } from './helpers.js';

const db = useTestDatabase();
const account = uniqueAccount('prune');
const workerId = `w-${account}`;
const agents: AgentProcess[] = [];
const containers: string[] = [];
let control: ControlProcess | undefined;

type PruneItem = { key: string; kind: string; image_id: string; reason: string; account: string; size_bytes: number };
type Entry = { key: string; kind: string; image_id: string; size_bytes: number; last_used_at: string };

afterAll(async () => {
  for (const id of containers) await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
  for (const a of agents) await a.stop();
  await control?.stop();
  await removeAccountImages(account);
});

async function containerOn(image: string, start: boolean): Promise<string> {
  const c = await docker.createContainer({ Image: image, Cmd: ['python3', '-c', 'import time; time.sleep(600)'], HostConfig: { NetworkMode: 'none' }, Labels: { 'io.rgrid.test': account } });
  containers.push(c.id);
  if (start) await c.start();
  return c.id;
}

describe('TTL pruning', () => {
  let agent: AgentProcess;
  let token: string;
  beforeAll(async () => {
    control = await startControl(db.url);
    token = await workerToken(control.url, account, workerId);
    const dir = tempDir('fleet-prune');
    const wheelhouse = createWheelhouse([{ name: 'rgprune', version: '1.0' }]);
    agent = await startAgent({
      dataDir: join(dir, 'data'),
      socket: join(dir, 'agent.sock'),
      baseImage: inject('baseImage'),
      wheelhouse,
      control: { url: control.url, workerToken: token, workerId },
      args: ['--ttl', '2s', '--min-age', '0s', '--prune-interval', '0'],
    });
    agents.push(agent);
  });

  it('removes an unused entry (image, index entry, central row); keeps images of containers and layers with a live child', async () => {
    const client = new AgentClient(agent.socket);
    const reqs = Buffer.from('rgprune==1.0\n');
    const unused = await client.ensure({ script: Buffer.from(nonceScript('print("unused")')), account });
    const running = await client.ensure({ script: Buffer.from(nonceScript('print("running")')), account });
    const child = await client.ensure({ script: Buffer.from(nonceScript('print("child")')), requirements: reqs, account });
    await client.close();
    await containerOn(String(running.image_id), true);
    // A created (never started) container pins its image just the same: containers in every state count.
    await containerOn(String(child.image_id), false);
    expect((await cli(['sync', '--now', '--json'], agent.socket)).code).toBe(0);
    expect((await centralEntries(control!.url, token, workerId)).map((e) => e.key)).toContain(unused.image_key);

    await new Promise((r) => setTimeout(r, 2500)); // past the 2 s TTL for every entry
    const dry = await cliJson<PruneItem[]>(['prune', '--dry-run'], agent.socket);
    expect(dry.map((i) => [i.kind, i.key, i.reason])).toEqual([['image', unused.image_key, 'ttl']]);
    expect(await imageExists(String(unused.image_id))).toBe(true);

    const removed = await cliJson<PruneItem[]>(['prune'], agent.socket);
    expect(removed).toEqual([expect.objectContaining({ key: unused.image_key, kind: 'image', image_id: unused.image_id, reason: 'ttl' })]);
    expect(await imageExists(String(unused.image_id))).toBe(false);
    const left = await cliJson<Entry[]>(['ls'], agent.socket);
    expect(left.map((e) => e.key).sort()).toEqual([running.image_key, child.image_key, child.deps_key].sort());
    expect((await cli(['sync', '--now', '--json'], agent.socket)).code).toBe(0);
    const central = await centralEntries(control!.url, token, workerId);
    expect(central.map((e) => e.key).sort()).toEqual(left.map((e) => e.key).sort());

    // Containers gone: the script images go, then the layer (after its last child) in the same pass.
    for (const id of containers.splice(0)) await docker.getContainer(id).remove({ force: true });
    const second = await cliJson<PruneItem[]>(['prune'], agent.socket);
    expect(second.map((i) => i.key).sort()).toEqual([running.image_key, child.image_key, child.deps_key].sort());
    const depsAt = second.findIndex((i) => i.kind === 'deps');
    expect(depsAt).toBeGreaterThan(second.findIndex((i) => i.key === child.image_key));
    for (const i of second) expect(await imageExists(i.image_id)).toBe(false);
    expect(await cliJson<Entry[]>(['ls'], agent.socket)).toEqual([]);
    await eventually('central rows gone', async () => {
      await cli(['sync', '--now', '--json'], agent.socket);
      return (await centralEntries(control!.url, token, workerId)).length === 0 ? true : undefined;
    });
  });
});

describe('disk watermarks', () => {
  it('prunes least recently used entries first, until the planned usage is below the low mark', async () => {
    const dir = tempDir('fleet-disk');
    const diskFile = join(dir, 'disk.json');
    writeFileSync(diskFile, JSON.stringify({ used_bytes: 1, total_bytes: 100 }));
    const agent = await startAgent({
      dataDir: join(dir, 'data'),
      socket: join(dir, 'agent.sock'),
      baseImage: inject('baseImage'),
      args: ['--min-age', '0s', '--prune-interval', '0', '--disk-usage-file', diskFile],
    });
    agents.push(agent);
    const client = new AgentClient(agent.socket);
    const scripts = [0, 1, 2, 3].map((i) => Buffer.from(nonceScript(`print(${i})`)));
    const keys: string[] = [];
    for (const script of scripts) keys.push(String((await client.ensure({ script, account })).image_key));
    // Use them in the order 2, 0, 3, 1: least recently used first is then 2, 0, 3, 1.
    for (const i of [2, 0, 3, 1]) {
      await new Promise((r) => setTimeout(r, 20));
      expect((await client.ensure({ script: scripts[i]!, account })).script_cache_hit).toBe(true);
    }
    await client.close();
    const entries = await cliJson<Entry[]>(['ls'], agent.socket);
    const size = (key: string): number => entries.find((e) => e.key === key)!.size_bytes;
    // Below the high mark: nothing goes.
    expect(await cliJson<PruneItem[]>(['prune', '--dry-run'], agent.socket)).toEqual([]);

    // Usage 90 % of a disk sized so that freeing the two least recently used entries reaches 80 %.
    const need = size(keys[2]!) + size(keys[0]!) - 1;
    const total = need * 10;
    writeFileSync(diskFile, JSON.stringify({ used_bytes: need * 9, total_bytes: total }));
    const dry = await cliJson<PruneItem[]>(['prune', '--dry-run'], agent.socket);
    expect(dry.map((i) => [i.key, i.reason])).toEqual([[keys[2], 'disk'], [keys[0], 'disk']]);
    const removed = await cliJson<PruneItem[]>(['prune'], agent.socket);
    expect(removed.map((i) => [i.key, i.reason])).toEqual([[keys[2], 'disk'], [keys[0], 'disk']]);
    expect((await cliJson<Entry[]>(['ls'], agent.socket)).map((e) => e.key).sort()).toEqual([keys[1], keys[3]].sort());
    for (const i of removed) expect(await imageExists(i.image_id)).toBe(false);
  });
});
