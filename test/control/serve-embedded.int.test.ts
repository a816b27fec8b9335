// The quick-start contract: `RGRID_CONTROL_ADMIN_TOKEN=... rgrid-control serve --listen HOST:PORT
// --data-dir DIR` runs on an embedded PostgreSQL under DIR/postgres (as the postgres user when root),
// `token create` attaches to it, data survives a restart, and SIGTERM stops the database too.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, startControlProcess, type ControlProcess } from '../support/processes.js';

const ADMIN = 'embedded-admin-token-0123456789';
const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-embedded-'));
const started: ControlProcess[] = [];
afterAll(async () => {
  for (const c of started) await c.kill();
  rmSync(dataDir, { recursive: true, force: true });
});

/** No database URL: the embedded PostgreSQL under dataDir/postgres. */
async function serve(): Promise<ControlProcess> {
  const control = await startControlProcess({ adminToken: ADMIN, dataDir, logLevel: 'info' });
  started.push(control);
  return control;
}

/** `rgrid-control token create` on the same data dir (it attaches to the running server's database). */
async function createClientToken(): Promise<string> {
  const res = await runCli('rgrid-control', ['token', 'create', '--data-dir', dataDir, '--account', 'quick', '--role', 'client', '--json']);
  expect(res.code, res.stderr).toBe(0);
  return (JSON.parse(res.stdout) as { token: string }).token;
}

describe('rgrid-control serve on embedded PostgreSQL', () => {
  it('starts, accepts tokens from the CLI, keeps data across a restart, and stops its database', async () => {
    const first = await serve();
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    expect(existsSync(join(dataDir, 'postgres', 'PG_VERSION'))).toBe(true);

    // `token create` on the same data dir attaches to the running server's database.
    const token = await createClientToken();
    const created = await fetch(`${first.url}/v1/executions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ runtime: 'python3.11', script_sha256: 'a'.repeat(64), status: 'succeeded', exit_code: 0 }),
    });
    expect(created.status).toBe(201);

    expect(await first.stop()).toBe(0);
    // The database stopped with it: no live postmaster is left behind.
    expect(existsSync(join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);

    const second = await serve();
    const list = await fetch(`${second.url}/v1/executions`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await list.json()) as { executions: unknown[] }).executions).toHaveLength(1);
    expect(await second.stop()).toBe(0);
  });

  it('starts again after being killed with SIGKILL, stopping the database it left running', async () => {
    const first = await serve();
    await first.kill();
    // The orphaned postmaster still holds the data directory.
    expect(existsSync(join(dataDir, 'postgres', 'postmaster.pid'))).toBe(true);

    const second = await serve();
    expect((await fetch(`${second.url}/readyz`)).status).toBe(200);
    const token = await createClientToken();
    const list = await fetch(`${second.url}/v1/executions`, { headers: { authorization: `Bearer ${token}` } });
    // The execution written before the first restart is still there.
    expect(((await list.json()) as { executions: unknown[] }).executions).toHaveLength(1);
    expect(await second.stop()).toBe(0);
    expect(existsSync(join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
  });
});
