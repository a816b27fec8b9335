import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { cli, cliJson, docker, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';

// `rgrid-agent inspect`: one entry with what the operator needs to know before pruning or debugging.
describe('rgrid-agent inspect', () => {
  const account = uniqueAccount('inspect');
  const dir = tempDir('inspect');
  let agent: AgentProcess;
  let files: Record<string, string>;

  beforeAll(async () => {
    const wheelhouse = createWheelhouse([{ name: 'rgtest-inspect', version: '1.0' }], tempDir('wheels'));
    files = writeFiles(dir, { 's.py': nonceScript('import rgtest_inspect'), 'r.txt': 'rgtest-inspect==1.0\n' });
    agent = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows an entry by key prefix, its image in the engine, and the script images built on a layer', async () => {
    const built = await cliJson<{ image_id: string; image_key: string; deps_key: string }>(
      ['ensure', '--script', files['s.py']!, '--requirements', files['r.txt']!, '--account', account], agent.socket,
    );
    const image = await cliJson<Record<string, unknown>>(['inspect', built.image_key.slice(0, 16), '--account', account], agent.socket);
    expect(image).toMatchObject({ kind: 'image', key: built.image_key, image_id: built.image_id, image_present: true, leased: false, dependents: null });
    expect((image.image_labels as Record<string, string>)['io.rgrid.image-key']).toBe(built.image_key);

    const layer = await cliJson<Record<string, unknown>>(['inspect', built.deps_key, '--kind', 'deps', '--account', account], agent.socket);
    expect(layer).toMatchObject({ kind: 'deps', key: built.deps_key, image_present: true, dependents: [built.image_key] });

    // Deleted behind the agent's back: inspect reports it, it does not hide it.
    await docker.getImage(built.image_id).remove({ force: true });
    const gone = await cliJson<Record<string, unknown>>(['inspect', built.image_key, '--account', account], agent.socket);
    expect(gone).toMatchObject({ key: built.image_key, image_present: false });
  });

  it('refuses an unknown key, a malformed one, and names the problem in one line', async () => {
    const unknown = await cli(['inspect', '0123456789abcdef', '--account', account], agent.socket);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/not_found/);
    const malformed = await cli(['inspect', '../etc', '--account', account], agent.socket);
    expect(malformed.code).not.toBe(0);
    expect(malformed.stderr).toMatch(/bad_request|must match/);
  });
});
