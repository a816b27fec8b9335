import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cliJson, docker, imageExists, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';

// SIGKILL during a build, restart on the same data dir, nothing points at a missing image.
describe('rgrid-agent killed during a build', () => {
  const account = uniqueAccount('crash');
  const dir = tempDir('crash');
  const dataDir = join(dir, 'data');
  const socket = join(dir, 'agent.sock');
  let wheelhouse: string;
  let files: Record<string, string>;
  let agent: AgentProcess | undefined;
  const start = async (): Promise<AgentProcess> => (agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage'), wheelhouse }));

  beforeAll(() => {
    // ~120 MB of wheels: pip install and the layer copy take a few seconds, long enough to kill mid-build.
    wheelhouse = createWheelhouse([{ name: 'rgtest-heavy', version: '1.0', payloadMb: 120, payloadFiles: 6 }], tempDir('wheels-heavy'));
    files = writeFiles(dir, {
      'small.py': nonceScript('print("small")'),
      'heavy.py': nonceScript('import rgtest_heavy\nprint(rgtest_heavy.VERSION)'),
      'heavy.txt': 'rgtest-heavy==1.0\n',
      'gone.py': nonceScript('print("deleted while the agent was down")'),
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  it('6: no entry points at a missing image after a restart, and the next ensure succeeds', async () => {
    let a = await start();
    const small = await cliJson<{ image_id: string }>(['ensure', '--script', files['small.py']!, '--account', account], socket);
    const gone = await cliJson<{ image_id: string; image_key: string }>(['ensure', '--script', files['gone.py']!, '--account', account], socket);

    // Start the heavy build and SIGKILL the agent once pip is running inside it.
    let pipRunning!: () => void;
    const pipStarted = new Promise<void>((r) => (pipRunning = r));
    const heavy = a.client
      .ensure({ script: readFileSync(files['heavy.py']!), requirements: Buffer.from('rgtest-heavy==1.0\n'), account }, (event) => {
        if (event.type === 'log' && /pip install/.test(String(event.line))) pipRunning();
      })
      .catch((err: unknown) => err);
    await pipStarted;
    await a.kill();
    expect(await heavy).toBeInstanceOf(Error);

    // While the agent is down, an operator deletes one cached image behind its back.
    execFileSync('docker', ['rmi', gone.image_id], { stdio: 'ignore' });

    a = await start();
    const entries = await cliJson<Array<{ kind: string; key: string; image_id: string }>>(['ls', '--account', account], socket);
    for (const entry of entries) expect(await imageExists(entry.image_id), `${entry.kind} ${entry.key}`).toBe(true);
    expect(entries.map((e) => e.image_id)).toContain(small.image_id);
    expect(entries.map((e) => e.key)).not.toContain(gone.image_key);
    expect(a.log()).toMatch(/dropped an entry whose image is gone/);

    const next = await cliJson<{ built: boolean; script_cache_hit: boolean; image_id: string }>(
      ['ensure', '--script', files['heavy.py']!, '--requirements', files['heavy.txt']!, '--account', account],
      socket,
    );
    expect(await imageExists(next.image_id)).toBe(true);
    expect(next.script_cache_hit).toBe(false);
    const again = await cliJson<{ script_cache_hit: boolean; image_id: string }>(
      ['ensure', '--script', files['heavy.py']!, '--requirements', files['heavy.txt']!, '--account', account],
      socket,
    );
    expect(again).toMatchObject({ script_cache_hit: true, image_id: next.image_id });
  });

  it('a restart removes what the killed build left behind (labelled with this agent id)', async () => {
    const agentId = String((await agent!.client.health()).agent_id);
    await agent!.stop();
    agent = await start();
    expect(await docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${agentId}`] } })).toEqual([]);
    expect(await docker.listImages({ all: true, filters: { label: [`io.rgrid.agent=${agentId}`] } })).toEqual([]);
  });
});
