/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-explicit-any --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Two `rgrid-control serve` processes (from dist/) on one database serve the same
// data (no per-process state that matters), and migrations run once when both start together.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import { startControlProcess, type ControlProcess } from '../support/processes.js';
import { entry, sha, useTestDatabase } from './support.js';

const db = useTestDatabase({ migrated: false });
const ADMIN = 'replica-admin-token-0123456789';

type Replica = ControlProcess;

const started: Replica[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const r of started) await r.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Log level info: the test reads which replica applied the migrations, and the 'stopped' line. */
async function startReplica(dataDir: string): Promise<Replica> {
  const replica = await startControlProcess({ databaseUrl: db.url, adminToken: ADMIN, dataDir, logLevel: 'info' });
  started.push(replica);
  return replica;
}

async function api(r: Replica, method: string, path: string, token: string, body?: unknown, raw?: Buffer) {
  const res = await fetch(`${r.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(raw ? { 'content-type': 'application/octet-stream' } : body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, any>) : {} };
}

describe('two control processes on one database', () => {
  it('migrate once when started together and serve the same data', async () => {
    // One blob directory for both, as replicas behind a load balancer share a volume (the database is
    // external: DATABASE_URL, so the data directory holds blobs only).
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-replica-'));
    dirs.push(dataDir);
    const [a, b] = await Promise.all([startReplica(dataDir), startReplica(dataDir)]);

    // Migrations ran exactly once: one replica applied them, the other found the schema up to date.
    const migrationFiles = readdirSync(join(process.cwd(), 'control', 'migrations')).filter((f) => f.endsWith('.sql'));
    const { rows } = await db.pool.query('SELECT name FROM pgmigrations ORDER BY id');
    expect(rows.map((r) => `${r.name}.sql`)).toEqual(migrationFiles.sort());
    const applied = [a, b].map((r) => r.logLines().find((l) => Array.isArray(l.applied))?.applied as string[]);
    expect(applied.map((x) => x.length).sort()).toEqual([0, migrationFiles.length]);

    // Tokens made through A work on B: no per-process token state.
    const mk = async (r: Replica, body: unknown) => (await api(r, 'POST', '/v1/admin/tokens', ADMIN, body)).json.token as string;
    const worker = await mk(a, { account: 'rep', role: 'worker', worker_id: 'rw1' });
    const sched = await mk(b, { account: 'rep', role: 'scheduler' });
    const client = await mk(a, { account: 'rep', role: 'client' });

    // The worker syncs through A; the scheduler resolves through B and sees the entry.
    expect((await api(a, 'POST', '/v1/workers/rw1/register', worker, { host: 'rw1', capacity: 2 })).status).toBe(200);
    expect((await api(a, 'PUT', '/v1/workers/rw1/snapshot', worker, { entries: [entry({ account: 'rep' })] })).status).toBe(200);
    // The delta goes through B: sync sessions live in the database, not in A.
    const op = { id: 'rep-op-1', type: 'touch', kind: 'image', account: 'rep', key: entry({ account: 'rep' }).key, count: 7, last_used_at: new Date().toISOString() };
    expect((await api(b, 'POST', '/v1/workers/rw1/ops', worker, { ops: [op] })).json).toMatchObject({ applied: 1 });
    // The retried batch through A is recognised as seen.
    expect((await api(a, 'POST', '/v1/workers/rw1/ops', worker, { ops: [op] })).json).toMatchObject({ applied: 0, duplicates: 1 });
    const resolved = await api(b, 'POST', '/v1/resolve', sched, { runtime: 'python3.11', script_sha256: sha('script'), requirements_sha256: sha('reqs') });
    expect(resolved.json.image).toMatchObject({ cached: true, workers: ['rw1'] });
    expect(resolved.json.placement[0].worker_id).toBe('rw1');

    // A blob uploaded through B is visible and readable through A.
    const bytes = Buffer.from('input shared by replicas\n');
    expect((await api(b, 'PUT', `/v1/blobs/${sha256Hex(bytes)}`, client, undefined, bytes)).status).toBe(201);
    const fromA = await fetch(`${a.url}/v1/blobs/${sha256Hex(bytes)}`, { headers: { authorization: `Bearer ${client}` } });
    expect(Buffer.from(await fromA.arrayBuffer()).equals(bytes)).toBe(true);
    const manifest = await api(a, 'POST', '/v1/manifests', client, { files: [{ name: 'in.txt', sha256: sha256Hex(bytes), size: bytes.length }] });
    expect(manifest.json.missing).toEqual([]);

    // Executions recorded through A are read through B.
    const created = await api(a, 'POST', '/v1/executions', client, { runtime: 'python3.11', script_sha256: sha('script'), script_cache_hit: true, dependency_cache_hit: true, input_cache_hit: false, status: 'succeeded' });
    expect(created.status).toBe(201);
    expect((await api(b, 'GET', `/v1/executions/${created.json.id}`, sched)).json).toMatchObject({ id: created.json.id, script_cache_hit: true });

    // Both report ready and the same fleet-wide hit ratio.
    for (const r of [a, b]) {
      expect((await fetch(`${r.url}/readyz`)).status).toBe(200);
      expect(await (await fetch(`${r.url}/metrics`)).text()).toContain('rgrid_control_cache_hit_ratio{kind="script"} 1');
    }

    // Both stop cleanly on SIGTERM.
    expect(await Promise.all([a.stop(), b.stop()])).toEqual([0, 0]);
    for (const r of [a, b]) expect(r.logLines().some((l) => l.msg === 'stopped')).toBe(true);
  });
});
