// The embedded PostgreSQL under a real `rgrid-control serve`: its processes' environment holds none of
// the control plane's secrets, the application connects as a role that is not a superuser and owns its
// tables, and when the postmaster is killed, health goes unavailable and comes back once the control
// plane has restarted it.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startControlProcess, type ControlProcess } from '../support/processes.js';

const ADMIN = `embedded-secret-admin-${Date.now()}-0123456789`;
const OTHER_SECRET = `some-other-secret-${Date.now()}`;
const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-embedded-secrets-'));
let control: ControlProcess | undefined;
afterAll(async () => {
  await control?.kill();
  const pid = postmasterPid();
  if (pid) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
});

function postmasterPid(): number | undefined {
  const file = join(dataDir, 'postgres', 'postmaster.pid');
  return existsSync(file) ? Number(readFileSync(file, 'utf8').split('\n')[0]) : undefined;
}

/** The postmaster and every process it started (backends, checkpointer, walwriter...). */
function postgresProcesses(postmaster: number): number[] {
  const pids = [postmaster];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/**
 * Embedded PostgreSQL (no database URL), the admin token in the control plane's own environment (the
 * variable itself, not a file: what must not reach the database's processes), plus an unrelated secret.
 */
async function serve(): Promise<ControlProcess> {
  control = await startControlProcess({
    adminToken: ADMIN, adminTokenVia: 'env', dataDir, logLevel: 'info', args: ['--cleanup-interval', '0'], env: { RGRID_TEST_OTHER_SECRET: OTHER_SECRET },
  });
  return control;
}

async function until(what: string, check: () => Promise<boolean>, maxMs: number): Promise<void> {
  for (const start = Date.now(); !(await check()); ) {
    if (Date.now() - start > maxMs) throw new Error(`timed out after ${maxMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const health = (url: string): Promise<number> => fetch(`${url}/healthz`).then((r) => r.status, () => 0);

describe('rgrid-control serve with its embedded PostgreSQL', () => {
  it('keeps secrets out of PostgreSQL, connects without superuser rights, and restarts a killed database', async () => {
    const server = await serve();
    const postmaster = postmasterPid()!;
    expect(postmaster).toBeGreaterThan(0);

    // Nothing of the control plane's environment reaches the database's processes.
    const checkEnvironments = (pm: number): void => {
      const pids = postgresProcesses(pm);
      expect(pids.length).toBeGreaterThan(1);
      for (const pid of pids) {
        let environ: string;
        try {
          environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
        } catch {
          continue; // a backend that exited meanwhile
        }
        expect(environ, `environment of postgres process ${pid}`).not.toContain(ADMIN);
        expect(environ).not.toContain(OTHER_SECRET);
        expect(environ).not.toContain('RGRID_CONTROL_ADMIN_TOKEN');
      }
    };
    checkEnvironments(postmaster);

    // The application's role, from the run file that `token create` and friends attach with.
    const run = JSON.parse(readFileSync(join(dataDir, 'postgres-run.json'), 'utf8')) as { url: string };
    const client = new pg.Client({ connectionString: run.url });
    await client.connect();
    try {
      const role = await client.query<{ rolsuper: boolean; rolcreaterole: boolean; rolcreatedb: boolean; user: string }>(
        'SELECT rolsuper, rolcreaterole, rolcreatedb, current_user AS user FROM pg_roles WHERE rolname = current_user',
      );
      expect(role.rows[0]).toEqual({ rolsuper: false, rolcreaterole: false, rolcreatedb: false, user: 'rgrid_app' });
      // It owns what the migrations created (it ran them), so it needs no grant from anyone.
      const foreign = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user`);
      expect(foreign.rows[0]!.n).toBe(0);
      expect((await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`)).rows[0]!.n).toBeGreaterThan(5);
      // What a superuser could do and this role cannot.
      await expect(client.query(`COPY (SELECT 1) TO PROGRAM 'true'`)).rejects.toThrow(/permission denied|must be superuser|pg_execute_server_program/);
    } finally {
      await client.end();
    }
    expect(await health(server.url)).toBe(200);

    // Kill the database behind the control plane's back.
    process.kill(postmaster, 'SIGKILL');
    await until('/healthz to report the database down', async () => (await health(server.url)) === 503, 30_000);
    const down = await fetch(`${server.url}/v1/admin/tokens`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ error: 'unavailable' });

    await until('/healthz to recover', async () => (await health(server.url)) === 200, 90_000);
    const restarted = postmasterPid()!;
    expect(restarted).not.toBe(postmaster);
    checkEnvironments(restarted);
    const created = await fetch(`${server.url}/v1/admin/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ account: 'after-restart', role: 'client' }),
    });
    expect(created.status).toBe(201);

    expect(await server.stop()).toBe(0);
    expect(existsSync(join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
  });
});
