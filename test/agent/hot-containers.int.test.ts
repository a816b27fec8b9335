/**
 * Hot containers (agent/runner/hot-containers.ts) against a real engine and the real agent from dist/:
 * after a run, the next run container of its image is created ahead; the next run of that image uses it
 * and is the run it would have been (its own inputs, its outputs, its limits, uid 65534); hot containers
 * go when their image is deleted behind the agent's back and when the pruner removes the image (which the
 * engine would refuse while any container refers to it); none are kept while the disk is over the high
 * mark; none outlive the agent's stop, and a killed agent's go at its next start (with their outputs
 * holders and directories).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { AgentEvent } from '../../agent/client/agent-client.js';
import { HOT_LABEL } from '../../agent/runner/hot-containers.js';
import { type AgentProcess, docker, imageExists, nonceScript, removeAccountImages, runsCleanedUp, startAgent, tempDir, uniqueAccount, until } from './helpers.js';

const MiB = 1024 * 1024;
const account = uniqueAccount('hot');
const dir = tempDir('hot');
const configFile = join(dir, 'agent.json');
const diskFile = join(dir, 'disk.json');
const setDisk = (percent: number): void => writeFileSync(diskFile, JSON.stringify({ used_bytes: percent, total_bytes: 100 }));
setDisk(10);
writeFileSync(configFile, JSON.stringify({
  // No holders kept ready: each is made when it is needed, so the hot containers' own are made here too.
  run_hot_containers: 2, run_holder_pool_size: 0, run_memory_mb: 256, run_max_memory_mb: 512, run_max_cpus: 1,
  // Pruning on demand only, of anything not used for a second: the prune test asks for it.
  prune_interval_s: 0, prune_ttl_s: 1, prune_min_age_s: 0, disk_usage_file: diskFile,
}));
let agent: AgentProcess | undefined;
let agentId = '';

const start = async (): Promise<AgentProcess> => {
  const started = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), args: ['--config', configFile], logLevel: 'info' });
  agentId = String((await started.client.health()).agent_id);
  return started;
};

interface Container { Id: string; State: string; ImageID: string; Labels: Record<string, string> }
const hotContainers = async (): Promise<Container[]> =>
  (await docker.listContainers({ all: true, filters: { label: [`${HOT_LABEL}=${agentId}`] } })).filter((c) => c.State === 'created');


// Reports what the run sees: its inputs, uid and gid, and the limits of its cgroup (v1 or v2).
const PROBE = [
  'import json, os',
  'def read(*paths):',
  '    for p in paths:',
  '        if os.path.exists(p):',
  '            return open(p).read().strip()',
  'names = sorted(os.listdir("/work/inputs"))',
  'seen = {"uid": os.getuid(), "gid": os.getgid(), "inputs": {n: open("/work/inputs/" + n).read() for n in names},',
  '        "memory": read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),',
  '        "cpu": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),',
  '        "pids": read("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")}',
  'if names:',
  '    open("/work/outputs/seen.json", "w").write(json.dumps(seen))',
  'print(json.dumps(seen))',
].join('\n');

async function run(script: string, inputs: Record<string, string> = {}): Promise<{ result: Record<string, unknown>; stdout: string; outputs: Map<string, string> }> {
  let stdout = '';
  const outputs = new Map<string, string>();
  const onEvent = (e: AgentEvent): void => {
    if (e.type === 'stdout') stdout += String(e.data);
    if (e.type === 'output') outputs.set(String(e.name), (outputs.get(String(e.name)) ?? '') + Buffer.from(String(e.data), 'base64').toString('utf8'));
  };
  const result = await agent!.client.run({
    script: Buffer.from(script), account, collect_outputs: true, memory_mb: 300, cpus: 0.5,
    inputs: Object.entries(inputs).map(([name, data]) => ({ name, data: Buffer.from(data) })),
  }, onEvent);
  return { result, stdout, outputs };
}

afterAll(async () => {
  await agent?.stop();
  await removeAccountImages(account);
});

describe('hot containers', () => {
  const script = nonceScript(PROBE);

  it('the next run of an image uses the container made ahead for it, with its own inputs, outputs and limits', async () => {
    agent = await start();
    const first = await run(script);
    expect(first.result).toMatchObject({ exit_code: 0, outputs: [], script_cache_hit: false });
    expect((first.result.phases as Record<string, unknown>).hot).toBe(false);
    // Nothing was written to /work/outputs: the archive was not read.
    expect((first.result.phases as Record<string, unknown>).outputs_read).toBe(false);

    await until(async () => (await hotContainers()).length === 1, 'a hot container made after the run');
    const [made] = await hotContainers();
    expect(made!.ImageID).toBe(first.result.image_id);
    expect(made!.Labels['io.rgrid.account']).toBe(account);
    expect(made!.Labels['io.rgrid.role']).toBe('run');
    expect(made!.Labels['io.rgrid.agent']).toBe(agentId);
    // Its outputs holder runs the runtime's base image, never the run's: the engine refuses to delete an
    // image a running container uses, even forced, so that would keep the image from every removal.
    const volume = (await docker.getContainer(made!.Id).inspect()).Mounts.find((m) => m.Destination === '/work/outputs')!.Name!;
    const holders = (await docker.listContainers({ all: true, filters: { volume: [volume] } })).filter((c) => c.Labels['io.rgrid.role'] === 'run-holder');
    expect(holders.map((h) => [h.State, h.ImageID])).toEqual([['running', (await docker.getImage(inject('baseImage')).inspect()).Id]]);

    const second = await run(script, { 'a.txt': 'alpha', 'b.txt': 'beta' });
    expect(second.result).toMatchObject({ exit_code: 0, outputs: ['seen.json'], script_cache_hit: true, image_id: first.result.image_id, timed_out: false, oom_killed: false });
    expect(second.result.phases).toMatchObject({ hot: true, outputs_read: true });
    const seen = JSON.parse(second.stdout) as Record<string, unknown>;
    expect(seen).toEqual({
      uid: 65534, gid: 65534, inputs: { 'a.txt': 'alpha', 'b.txt': 'beta' },
      memory: String(300 * MiB),
      cpu: expect.stringMatching(/^50000( 100000)?$/) as unknown, // half a CPU: cgroup v1 quota, or v2 "quota period"
      pids: '256',
    });
    expect(JSON.parse(second.outputs.get('seen.json')!)).toEqual(seen);

    // The container that ran is gone once the clean-up settles; a new one waits for the next run.
    await runsCleanedUp(agent.client);
    await until(async () => (await hotContainers()).length >= 1, 'a new hot container');
    expect((await hotContainers()).map((c) => c.Id)).not.toContain(made!.Id);
    expect((await docker.listContainers({ all: true, filters: { id: [made!.Id] } }))).toEqual([]);
  });

  it('a run with other limits does not take it, and hot containers stay within run_hot_containers', async () => {
    const other = await agent!.client.run({ script: Buffer.from(script), account, memory_mb: 200 });
    expect(other).toMatchObject({ exit_code: 0 });
    expect((other.phases as Record<string, unknown>).hot).toBe(false);
    await runsCleanedUp(agent!.client);
    // One for each of the two settings at most; never more than the bound in all.
    await until(async () => (await hotContainers()).length === 2, 'hot containers for both settings');
    for (let i = 0; i < 3; i++) await run(script);
    await runsCleanedUp(agent!.client);
    expect((await hotContainers()).length).toBeLessThanOrEqual(2);
  });

  it('none are kept while the disk is over its high mark', async () => {
    await until(async () => (await hotContainers()).length > 0, 'a hot container');
    setDisk(99);
    await run(script);
    await runsCleanedUp(agent!.client);
    await until(async () => (await hotContainers()).length === 0, 'hot containers dropped under disk pressure');
    setDisk(10);
    await run(script);
    await until(async () => (await hotContainers()).length === 1, 'hot containers made again');
  });

  it('go when their image is deleted behind the agent\'s back', async () => {
    const script2 = nonceScript(`${PROBE}\n# deleted`);
    const ran = await run(script2);
    await until(async () => (await hotContainers()).some((c) => c.ImageID === ran.result.image_id), 'a hot container of the image');
    // A forced delete succeeds while only created containers refer to the image; its event drops them.
    await docker.getImage(String(ran.result.image_id)).remove({ force: true });
    await until(async () => !(await hotContainers()).some((c) => c.ImageID === ran.result.image_id), 'its hot containers removed');
  });

  it('go when the pruner removes their image (the engine refuses to delete an image a container refers to)', async () => {
    const ran = await run(script);
    const imageId = String(ran.result.image_id);
    await until(async () => (await hotContainers()).some((c) => c.ImageID === imageId), 'a hot container of the image');
    await runsCleanedUp(agent!.client);
    await new Promise((r) => setTimeout(r, 1500)); // past prune_ttl_s since the run
    const pruned = (await agent!.client.call('POST', '/v1/prune', {})) as Array<{ image_id: string }>;
    expect(pruned.map((p) => p.image_id)).toContain(imageId);
    expect(await imageExists(imageId)).toBe(false);
    expect((await hotContainers()).some((c) => c.ImageID === imageId)).toBe(false);
  });

  it('none outlive the agent\'s stop; a killed agent\'s are removed at its next start', async () => {
    const script3 = nonceScript(`${PROBE}\n# stop`);
    await run(script3);
    await until(async () => (await hotContainers()).length === 1, 'a hot container');
    const stopped = await partsOf((await hotContainers())[0]!.Id);
    await agent!.stop();
    agent = undefined;
    // Gone in any state (a removal that failed would leave it "dead", not "created"), with what it held.
    expect(await docker.listContainers({ all: true, filters: { label: [`${HOT_LABEL}=${agentId}`] } })).toEqual([]);
    expect(await stillThere(stopped)).toEqual({ containers: [], dir: false });

    agent = await start();
    await run(script3);
    await until(async () => (await hotContainers()).length === 1, 'a hot container');
    const left = (await hotContainers()).map((c) => c.Id);
    const killed = await partsOf(left[0]!);
    // SIGKILL of the real agent process: nothing of it cleans up.
    await agent.kill();
    agent = undefined;
    expect((await hotContainers()).map((c) => c.Id)).toEqual(left);
    expect(await stillThere(killed)).toEqual({ containers: [killed.container, killed.holder].sort(), dir: true });
    agent = await start();
    expect((await docker.listContainers({ all: true, filters: { id: left } }))).toEqual([]);
    expect(await stillThere(killed)).toEqual({ containers: [], dir: false });
    await agent.stop();
    agent = undefined;
    expect(await docker.listContainers({ all: true, filters: { label: [`${HOT_LABEL}=${agentId}`] } })).toEqual([]);
  });
});

/** A hot container with what it holds: its outputs holder (running, mounting its volume) and its directory. */
async function partsOf(containerId: string): Promise<{ container: string; holder: string; dir: string }> {
  const mounts = (await docker.getContainer(containerId).inspect()).Mounts;
  const volume = mounts.find((m) => m.Destination === '/work/outputs')!.Name!;
  const inputs = mounts.find((m) => m.Destination === '/work/inputs')!.Source;
  const holders = (await docker.listContainers({ all: true, filters: { volume: [volume] } })).filter((c) => c.Labels['io.rgrid.role'] === 'run-holder');
  expect(holders).toHaveLength(1);
  expect(inputs.startsWith(join(dir, 'data', 'runs'))).toBe(true);
  return { container: containerId, holder: holders[0]!.Id, dir: dirname(inputs) };
}

async function stillThere(parts: { container: string; holder: string; dir: string }): Promise<{ containers: string[]; dir: boolean }> {
  const containers = (await docker.listContainers({ all: true, filters: { id: [parts.container, parts.holder] } })).map((c) => c.Id).sort();
  return { containers, dir: existsSync(parts.dir) };
}
