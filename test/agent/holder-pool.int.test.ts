/**
 * Outputs holders made ahead of runs (agent/runner/holder-pool.ts), against a real engine and the real
 * agent from dist/: runs use them and their outputs stay bounded; a used holder is never reused; none
 * outlives the agent — a stop removes them all, and after a kill -9 the next start removes what the
 * killed agent left (start-up repair by the pool's label).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { AgentEvent } from '../../agent/client/agent-client.js';
import { POOL_LABEL } from '../../agent/runner/holder-pool.js';
import { type AgentProcess, docker, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, until } from './helpers.js';

const account = uniqueAccount('pool');
const dir = tempDir('holder-pool');
const configFile = join(dir, 'agent.json');
// No hot containers here (each holds a slot of the pool: test/agent/hot-containers.int.test.ts): the
// pool's holders are then exactly the ones it keeps ready.
writeFileSync(configFile, JSON.stringify({ run_holder_pool_size: 2, run_hot_containers: 0, run_max_output_mb: 1, run_max_output_file_mb: 1 }));
let agent: AgentProcess | undefined;
let agentId = '';

const start = async (): Promise<AgentProcess> => {
  const started = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), args: ['--config', configFile], logLevel: 'warn' });
  agentId = String((await started.client.health()).agent_id);
  return started;
};
const poolContainers = async (): Promise<Array<{ Id: string; State: string; Labels: Record<string, string> }>> =>
  docker.listContainers({ all: true, filters: { label: [`${POOL_LABEL}=${agentId}`] } });
const poolVolumes = async (): Promise<string[]> => ((await docker.listVolumes({ filters: { label: [`${POOL_LABEL}=${agentId}`] } })).Volumes ?? []).map((v) => v.Name);

const poolIsFull = async (): Promise<boolean> => {
  const held = await poolContainers();
  return held.length === 2 && held.every((c) => c.State === 'running');
};

afterAll(async () => {
  await agent?.stop();
  await removeAccountImages(account);
});

describe('outputs holders made ahead of runs', () => {
  it('runs take a ready holder; outputs are copied and still bounded; a used holder is never reused', async () => {
    agent = await start();
    await until(poolIsFull, 'two holders made ahead');
    const before = new Set((await poolContainers()).map((c) => c.Id));
    expect((await poolContainers()).every((c) => c.Labels['io.rgrid.role'] === 'run-holder')).toBe(true);

    const outputs = new Map<string, number>();
    const onEvent = (e: AgentEvent): void => {
      if (e.type === 'output') outputs.set(String(e.name), (outputs.get(String(e.name)) ?? 0) + Buffer.from(String(e.data), 'base64').length);
    };
    const small = await agent.client.run({
      script: Buffer.from(nonceScript('open("/work/outputs/a.txt", "w").write("x" * 1000)')), account, collect_outputs: true,
    }, onEvent);
    expect(small).toMatchObject({ exit_code: 0, outputs: ['a.txt'], output_limit: null });
    expect(outputs.get('a.txt')).toBe(1000);

    // Writes until the tmpfs is full: it ends at the output limit plus the slack, never on the host's disk.
    const big = await agent.client.run({
      script: Buffer.from(nonceScript([
        'n = 0',
        'try:',
        '    with open("/work/outputs/big.bin", "wb") as f:',
        '        while n < 64 * 1024 * 1024:',
        '            f.write(b"y" * 65536); f.flush(); n += 65536',
        'except OSError:',
        '    pass',
        'print(n)',
      ].join('\n'))), account, collect_outputs: true,
    }, () => undefined);
    expect(big.exit_code).toBe(0);
    expect(big.output_limit).not.toBeNull();
    expect(big.outputs).toEqual([]);

    // The two holders that served these runs are gone; the ones there now are new.
    await until(poolIsFull, 'the pool refilled');
    await until(async () => (await poolVolumes()).length === 2, 'used volumes removed');
    const now = (await poolContainers()).map((c) => c.Id);
    expect(now.filter((id) => before.has(id))).toEqual([]);
  });

  it('the outputs archive is read only when the outputs directory changed', async () => {
    const script = Buffer.from(nonceScript([
      'import os',
      'mode = open("/work/inputs/mode").read()',
      'if mode == "hidden":',
      '    # A file written, and the directory\'s time set back: its size still counts the file.',
      '    st = os.stat("/work/outputs")',
      '    open("/work/outputs/h.txt", "w").write("h")',
      '    os.utime("/work/outputs", ns=(st.st_atime_ns, st.st_mtime_ns))',
      'elif mode == "gone":',
      '    open("/work/outputs/g.txt", "w").write("g")',
      '    os.remove("/work/outputs/g.txt")',
      'print(mode)',
    ].join('\n')));
    const run = async (mode: string): Promise<Record<string, unknown>> => {
      const got = new Map<string, string>();
      const result = await agent!.client.run({ script, account, collect_outputs: true, inputs: [{ name: 'mode', data: Buffer.from(mode) }] }, (e) => {
        if (e.type === 'output') got.set(String(e.name), (got.get(String(e.name)) ?? '') + Buffer.from(String(e.data), 'base64').toString());
      });
      return { ...result, got: Object.fromEntries(got) };
    };
    // Nothing written: the stat says so, and the archive is not read.
    expect(await run('quiet')).toMatchObject({ exit_code: 0, outputs: [], got: {}, phases: { outputs_read: false } });
    expect(await run('hidden')).toMatchObject({ exit_code: 0, outputs: ['h.txt'], got: { 'h.txt': 'h' }, phases: { outputs_read: true } });
    expect(await run('gone')).toMatchObject({ exit_code: 0, outputs: [], got: {}, phases: { outputs_read: true } });
  });

  it('a stop removes every holder and its volume', async () => {
    await agent!.stop();
    agent = undefined;
    expect(await poolContainers()).toEqual([]);
    expect(await poolVolumes()).toEqual([]);
  });

  it('after a kill -9, the next start removes what the killed agent left', async () => {
    agent = await start();
    await until(poolIsFull, 'two holders made ahead');
    const left = (await poolContainers()).map((c) => c.Id);
    const leftVolumes = await poolVolumes();
    await agent.kill();
    agent = undefined;
    // Nothing removed them: the killed agent could not.
    expect((await poolContainers()).map((c) => c.Id).sort()).toEqual([...left].sort());

    agent = await start();
    const after = (await poolContainers()).map((c) => c.Id);
    expect(after.filter((id) => left.includes(id))).toEqual([]);
    const volumesAfter = await poolVolumes();
    expect(volumesAfter.filter((v) => leftVolumes.includes(v))).toEqual([]);
    await agent.stop();
    agent = undefined;
    expect(await poolContainers()).toEqual([]);
    expect(await poolVolumes()).toEqual([]);
  });
});
