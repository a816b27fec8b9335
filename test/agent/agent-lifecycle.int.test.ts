import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cliJson, imageExists, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';

// The socket's mode, and graceful shutdown — in-flight builds finish within the drain
// deadline, or are abandoned cleanly (nothing stored) when it passes.
describe('rgrid-agent serve lifecycle', () => {
  const account = uniqueAccount('life');
  const dir = tempDir('life');
  const dataDir = join(dir, 'data');
  const socket = join(dir, 'agent.sock');
  let wheelhouse: string;
  let files: Record<string, string>;
  let agent: AgentProcess | undefined;

  beforeAll(() => {
    wheelhouse = createWheelhouse([{ name: 'rgtest-slow', version: '1.0', payloadMb: 60, payloadFiles: 4 }], tempDir('wheels-life'));
    files = writeFiles(dir, {
      'quick.py': nonceScript('print("quick")'),
      'slow.py': nonceScript('import rgtest_slow'),
      'slow.txt': 'rgtest-slow==1.0\n',
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  it('listens on a socket with mode 0660', async () => {
    agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage'), wheelhouse });
    expect(statSync(socket).mode & 0o777).toBe(0o660);
  });

  it('SIGTERM lets an in-flight build finish, then exits 0; the entry survives the restart', async () => {
    const a = agent!;
    let building!: () => void;
    const started = new Promise<void>((r) => (building = r));
    const pending = a.client.ensure({ script: readFileSync(files['quick.py']!), account }, (e) => {
      if (e.type === 'log') building();
    });
    await started;
    a.proc.kill('SIGTERM');
    const result = await pending;
    expect(result.built).toBe(true);
    expect(await a.stop()).toBe(0);
    expect(a.log()).toMatch(/"clean":true/);

    agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage'), wheelhouse });
    const entries = await cliJson<Array<{ key: string; image_id: string }>>(['ls', '--account', account], socket);
    expect(entries.map((e) => e.key)).toContain(result.image_key);
    expect(await cliJson(['ensure', '--script', files['quick.py']!, '--account', account], socket)).toMatchObject({ script_cache_hit: true, image_id: result.image_id });
  });

  it('past the drain deadline a build is abandoned: the caller gets an error, nothing is stored, exit 1', async () => {
    await agent!.stop();
    const a = (agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage'), wheelhouse, args: ['--drain-timeout', '1'] }));
    let pipRunning!: () => void;
    const started = new Promise<void>((r) => (pipRunning = r));
    const pending = a.client
      .ensure({ script: readFileSync(files['slow.py']!), requirements: readFileSync(files['slow.txt']!), account }, (e) => {
        if (e.type === 'log' && /venv/.test(String(e.line))) pipRunning();
      })
      .then(
        () => undefined,
        (err: unknown) => err as Error,
      );
    await started;
    a.proc.kill('SIGTERM');
    const err = await pending;
    expect(err).toBeInstanceOf(Error);
    expect(await a.stop()).toBe(1);
    expect(a.log()).toMatch(/drain deadline passed/);

    agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage'), wheelhouse });
    const entries = await cliJson<Array<{ kind: string; image_id: string }>>(['ls', '--account', account], socket);
    expect(entries.filter((e) => e.kind === 'deps')).toEqual([]);
    for (const entry of entries) expect(await imageExists(entry.image_id)).toBe(true);
  });
});
