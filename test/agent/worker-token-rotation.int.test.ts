/**
 * Rotating a worker's token on the real grid: the agent reads its token file for every request to the
 * control plane (agent/control/credentials.ts), so when the operator writes a new token into the file
 * and then revokes the old one, the claim loop and the sync both go on with the new token — a run
 * submitted after the revocation is claimed, run and reported, and the image it built reaches the
 * control plane through the sync.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { eventually } from './fake-control.js';
import { cliJson, nonceScript, startAgent, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';
import { ADMIN_TOKEN, call } from '../control/support.js';
import { removeAccountContainersAndImages, rgridRun, useGrid } from '../e2e/grid.js';

const grid = useGrid();
let agent: AgentProcess | undefined;
let account: string | undefined;
afterAll(async () => {
  await agent?.stop();
  if (account) await removeAccountContainersAndImages(account);
});

async function workerToken(forAccount: string, workerId: string): Promise<{ id: string; token: string }> {
  const res = await call(grid.app(), 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: forAccount, role: 'worker', worker_id: workerId });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string; token: string }>();
}

/** Written like an operator or a secrets manager does: a new 0600 file moved over the old one. */
function writeTokenFile(path: string, token: string): void {
  writeFileSync(`${path}.new`, `${token}\n`, { mode: 0o600 });
  renameSync(`${path}.new`, path);
}

async function centralImages(workerId: string, token: string): Promise<number> {
  const res = await call(grid.app(), 'GET', `/v1/workers/${workerId}/entries`, token);
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ entries: Array<{ kind: string }> }>().entries.filter((e) => e.kind === 'image').length;
}

describe('worker token rotation', () => {
  it('claims and sync go on with the new token after the old one is revoked', async () => {
    account = uniqueAccount('rotate');
    const workerId = `rotate-${process.pid}`;
    const dir = tempDir('worker-rotate');
    const tokenFile = join(dir, 'worker-token');
    const first = await workerToken(account, workerId);
    writeTokenFile(tokenFile, first.token);
    agent = await startAgent({
      dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse: grid.wheelhouse(),
      // The token file is the test's own (it rotates it), so it goes as a flag rather than through the harness.
      args: ['--control-url', grid.url(), '--worker-token-file', tokenFile, '--worker-id', workerId, '--run-capacity', '1'],
    });
    const env = { url: grid.url(), token: await grid.clientToken(account) };

    writeFileSync(join(dir, 'one.py'), nonceScript('print("before the rotation")'));
    const before = await rgridRun([join(dir, 'one.py'), '--output-dir', join(dir, 'out1')], env, dir);
    expect(before.code, before.stderr).toBe(0);
    expect(before.worker_id).toBe(workerId);
    expect(await centralImages(workerId, first.token)).toBe(1);

    // Rotation: the new token into the file first, then the old one revoked.
    const second = await workerToken(account, workerId);
    writeTokenFile(tokenFile, second.token);
    const revoked = await call(grid.app(), 'DELETE', `/v1/admin/tokens/${first.id}`, ADMIN_TOKEN);
    expect(revoked.statusCode, revoked.body).toBe(200);
    const refused = await call(grid.app(), 'POST', `/v1/workers/${workerId}/heartbeat`, first.token, { load: { running: 0 } });
    expect(refused.statusCode).toBe(401);

    // Claims: a run submitted after the revocation is claimed, run and reported by this agent.
    writeFileSync(join(dir, 'two.py'), nonceScript('print("after the rotation")'));
    const after = await rgridRun([join(dir, 'two.py'), '--output-dir', join(dir, 'out2')], env, dir);
    expect(after.code, after.stderr).toBe(0);
    expect(after.worker_id).toBe(workerId);
    expect(after.stderr).toContain('after the rotation');

    // Sync: the image that run built reached the control plane's index, and the sync is healthy.
    expect(await eventually('the new image in the central index', async () => ((await centralImages(workerId, second.token)) === 2 ? true : undefined), 60_000)).toBe(true);
    const sync = await cliJson<{ state: string; outbox_depth: number; registered: boolean; last_error: string | null }>(['sync', '--now'], agent.socket);
    expect(sync).toMatchObject({ state: 'ok', outbox_depth: 0, registered: true, last_error: null });
    expect(agent.log()).not.toContain('"statusCode":401');
  });
});
