// The quick-start contract: `RGRID_CONTROL_ADMIN_TOKEN=... rgrid-control serve --listen HOST:PORT
// --data-dir DIR` runs on an embedded PostgreSQL under DIR/postgres (as the postgres user when root),
// `token create` attaches to it, data survives a restart, and SIGTERM stops the database too.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const CLI = join(process.cwd(), 'dist', 'control', 'cli', 'main.js');
const ADMIN = 'embedded-admin-token-0123456789';
const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-embedded-'));
const children: ReturnType<typeof spawn>[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env, RGRID_CONTROL_ADMIN_TOKEN: ADMIN };
  delete e.DATABASE_URL;
  return e;
};

function serve(): Promise<{ url: string; stop: () => Promise<number | null>; kill: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { env: env() });
  children.push(child);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /"url":"(http:[^"]+)".*"msg":"rgrid-control serving"/.exec(out);
      if (m) resolve({ url: m[1]!, stop: async () => (child.kill('SIGTERM'), exit), kill: async () => (child.kill('SIGKILL'), exit) });
    });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    void exit.then((code) => reject(new Error(`serve exited with ${code}: ${err}${out.slice(-2000)}`)));
  });
}

describe('rgrid-control serve on embedded PostgreSQL', () => {
  it('starts, accepts tokens from the CLI, keeps data across a restart, and stops its database', async () => {
    const first = await serve();
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    expect(existsSync(join(dataDir, 'postgres', 'PG_VERSION'))).toBe(true);

    // `token create` on the same data dir attaches to the running server's database.
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'token', 'create', '--data-dir', dataDir, '--account', 'quick', '--role', 'client', '--json'], { env: env() });
    const token = (JSON.parse(stdout) as { token: string }).token;
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
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'token', 'create', '--data-dir', dataDir, '--account', 'quick', '--role', 'client', '--json'], { env: env() });
    const token = (JSON.parse(stdout) as { token: string }).token;
    const list = await fetch(`${second.url}/v1/executions`, { headers: { authorization: `Bearer ${token}` } });
    // The execution written before the first restart is still there.
    expect(((await list.json()) as { executions: unknown[] }).executions).toHaveLength(1);
    expect(await second.stop()).toBe(0);
    expect(existsSync(join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
  });
});
