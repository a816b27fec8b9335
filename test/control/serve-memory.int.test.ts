// A worker token sending a 100 MiB snapshot (declared, or streamed without a length) is refused
// without the control plane's memory growing: the body is never held. Measured on a real
// `rgrid-control serve` process (its resident set, from /proc) on this run's PostgreSQL.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { startControlProcess, type ControlProcess } from '../support/processes.js';
import { useTestDatabase } from './support.js';

const ADMIN = 'memory-admin-token-0123456789abcdef';
const MiB = 1024 * 1024;
const db = useTestDatabase();
let control: ControlProcess | undefined;
afterAll(async () => {
  await control?.kill();
});

async function serve(): Promise<{ url: string; pid: number }> {
  control = await startControlProcess({ databaseUrl: db.url, adminToken: ADMIN, dataDir: db.dataDir, logLevel: 'info', args: ['--cleanup-interval', '0'] });
  return { url: control.url, pid: control.pid };
}

/** Resident set size of `pid` in bytes. */
const rss = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

async function api(url: string, method: string, path: string, token: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * PUTs a snapshot body of `total` bytes (a JSON prefix, then padding), with or without a declared
 * length, writing as fast as the server reads. Resolves with the status, or 'closed' if the server
 * hung up without answering.
 */
function bigSnapshot(url: string, path: string, token: string, total: number, declared: boolean): Promise<number | 'closed'> {
  return new Promise((resolve) => {
    const req = http.request(`${url}${path}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(declared ? { 'content-length': String(total) } : {}) },
    });
    let settled = false;
    const settle = (v: number | 'closed'): void => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(v);
    };
    req.on('response', (res) => {
      res.resume();
      settle(res.statusCode ?? 0);
    });
    req.on('error', () => settle('closed'));
    req.on('close', () => settle('closed'));
    const chunk = Buffer.alloc(MiB, 0x20); // spaces: valid JSON whitespace, so the body stays parseable to its end
    let sent = 0;
    const pump = (): void => {
      while (!settled && sent < total) {
        const piece = sent === 0 ? Buffer.concat([Buffer.from('{"entries":['), chunk.subarray(12)]) : chunk.subarray(0, Math.min(MiB, total - sent));
        sent += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
      if (!settled && sent >= total) req.end();
    };
    pump();
  });
}

describe('snapshot body limit on a real serve process', () => {
  it('refuses a 100 MiB snapshot, declared or streamed, and the process does not grow', async () => {
    const { url, pid } = await serve();
    const created = await api(url, 'POST', '/v1/admin/tokens', ADMIN, { account: 'mem', role: 'worker', worker_id: 'mem-w1' });
    expect(created.status).toBe(201);
    const token = String(created.json.token);
    expect((await api(url, 'POST', '/v1/workers/mem-w1/register', token, { host: 'mem', capacity: 1 })).status).toBe(200);
    expect((await api(url, 'PUT', '/v1/workers/mem-w1/snapshot', token, { entries: [] })).status).toBe(200);

    const before = rss(pid);
    const statuses: Array<number | 'closed'> = [];
    for (const declared of [true, false]) statuses.push(await bigSnapshot(url, '/v1/workers/mem-w1/snapshot', token, 100 * MiB, declared));
    const after = rss(pid);
    // A memory bound, not a timing: with the old limit (256 MiB) the body was held whole.
    expect(after - before, `RSS grew from ${before} to ${after}`).toBeLessThan(50 * MiB);
    // 413 when the answer arrives before the hang-up; never anything else.
    for (const status of statuses) expect([413, 'closed']).toContain(status);
    // The process is fine afterwards.
    expect((await api(url, 'PUT', '/v1/workers/mem-w1/snapshot', token, { entries: [] })).status).toBe(200);
  });
});
