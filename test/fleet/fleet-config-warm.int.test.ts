// The config file changed at runtime (new TTL applies without a restart;
// a broken file leaves the running config), and cache warming from warm.d (the layer exists shortly
// after a file is dropped in; the first ensure with those requirements is a dependency hit). Real engine.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cliJson, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { eventually } from './helpers.js';

const account = uniqueAccount('live');
let agent: AgentProcess;
let dir: string;
let configFile: string;

type Status = {
  config_file: string;
  build_concurrency: number;
  prune: { ttl_s: number };
  warm: { total: number; done: number; failed: number; items: Array<{ file: string; account: string; state: string; deps_key: string | null; error: string | null }> };
};
type PruneItem = { key: string; reason: string };

function writeConfig(values: Record<string, unknown>): void {
  writeFileSync(configFile, JSON.stringify({ prune_min_age_s: 0, prune_interval_s: 0, warm_account: account, ...values }));
}

beforeAll(async () => {
  dir = tempDir('fleet-live');
  configFile = join(dir, 'agent.json');
  writeConfig({ prune_ttl_s: 3600 });
  const wheelhouse = createWheelhouse([{ name: 'rgwarm', version: '1.0' }]);
  agent = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse, args: ['--config', configFile] });
});

afterAll(async () => {
  await agent?.stop();
  await removeAccountImages(account);
});

describe('live configuration', () => {
  it('applies a new TTL without a restart and keeps the running config when the file is broken', async () => {
    const client = new AgentClient(agent.socket);
    const built = await client.ensure({ script: Buffer.from(nonceScript('print("ttl")')), account });
    await client.close();
    const status = await cliJson<Status>(['status'], agent.socket);
    expect(status.config_file).toBe(configFile);
    expect(status.prune.ttl_s).toBe(3600);
    expect(await cliJson<PruneItem[]>(['prune', '--dry-run'], agent.socket)).toEqual([]);

    writeConfig({ prune_ttl_s: 1, build_concurrency: 2 });
    await eventually('the new TTL', async () => ((await cliJson<Status>(['status'], agent.socket)).prune.ttl_s === 1 ? true : undefined));
    expect((await cliJson<Status>(['status'], agent.socket)).build_concurrency).toBe(2);
    await new Promise((r) => setTimeout(r, 1200)); // past the 1 s TTL
    const pruned = await cliJson<PruneItem[]>(['prune'], agent.socket);
    expect(pruned.map((p) => [p.key, p.reason])).toEqual([[built.image_key, 'ttl']]);

    // Not JSON, then JSON that fails the schema: both rejected with a logged reason; the TTL stays 1 s.
    const rejections = (): number => agent.log().split('config file rejected').length - 1;
    writeFileSync(configFile, '{"prune_ttl_s": 5,');
    await eventually('the broken file to be rejected', () => Promise.resolve(rejections() >= 1 ? true : undefined));
    writeConfig({ prune_ttl_s: -5 });
    await eventually('the invalid file to be rejected', () => Promise.resolve(rejections() >= 2 ? true : undefined));
    expect(agent.log()).toMatch(/"reason":"invalid agent config: \/prune_ttl_s must be >= 0","msg":"config file rejected/);
    const after = await cliJson<Status>(['status'], agent.socket);
    expect(after.prune.ttl_s).toBe(1);
    expect(after.build_concurrency).toBe(2);
  });
});

describe('cache warming', () => {
  it('pre-builds the dependency layer of a file dropped into warm.d; the first ensure is a dependency hit', async () => {
    const warmDir = join(dir, 'data', 'warm.d');
    mkdirSync(warmDir, { recursive: true });
    const requirements = 'rgwarm==1.0\n';
    writeFileSync(join(warmDir, 'team.txt'), requirements);
    const status = await eventually(
      'the warm layer',
      async () => {
        const s = await cliJson<Status>(['status'], agent.socket);
        const item = s.warm.items.find((i) => i.file === 'team.txt');
        if (item?.state === 'failed') throw new Error(`warming failed: ${item.error}`);
        return item?.state === 'done' ? s : undefined;
      },
      180_000,
      500,
    );
    const item = status.warm.items.find((i) => i.file === 'team.txt')!;
    expect(item.account).toBe(account);
    const layers = await cliJson<Array<{ key: string }>>(['ls', '--kind', 'deps', '--account', account], agent.socket);
    expect(layers.map((l) => l.key)).toEqual([item.deps_key]);

    const client = new AgentClient(agent.socket);
    const first = await client.ensure({ script: Buffer.from(nonceScript('import rgwarm')), requirements: Buffer.from(requirements), account });
    await client.close();
    expect(first).toMatchObject({ script_cache_hit: false, dependency_cache_hit: true, deps_key: item.deps_key });
  });
});
