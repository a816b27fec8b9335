// A batch of 100 executions of one new script on an agent: exactly one build,
// 100 results. Submitted through the HTTP API (100 CLI processes would only measure node start-up).
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import { cliJson, docker, nonceScript, uniqueAccount } from '../agent/helpers.js';
import { useGrid } from './grid.js';

const grid = useGrid();

async function api(method: string, path: string, token: string, body?: unknown, raw?: Buffer): Promise<Record<string, unknown>> {
  const res = await fetch(`${grid.url()}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': raw ? 'application/octet-stream' : 'application/json' },
    body: raw ?? (body === undefined ? null : JSON.stringify(body)),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

describe('a batch of 100', () => {
  it('builds once and returns 100 results', async () => {
    const account = uniqueAccount('batch');
    const agent = await grid.agent(account, 'batch-1', { capacity: 4 });
    const token = await grid.clientToken(account);
    const script = Buffer.from(nonceScript('import sys\nprint("item")'));
    const sha = sha256Hex(script);
    await api('POST', '/v1/manifests', token, { files: [{ name: 'script.py', sha256: sha, size: script.length }] });
    await api('PUT', `/v1/blobs/${sha}`, token, undefined, script);

    const submitted = await Promise.all(Array.from({ length: 100 }, () => api('POST', '/v1/executions/submit', token, { runtime: 'python3.11', script_sha256: sha })));
    const done = await Promise.all(submitted.map(async (e) => {
      for (;;) {
        const x = await api('GET', `/v1/executions/${String(e.id)}/wait?timeout_ms=20000`, token);
        if (x.status === 'succeeded' || x.status === 'failed') return x;
      }
    }));
    expect(done).toHaveLength(100);
    expect(done.every((x) => x.status === 'succeeded' && x.exit_code === 0 && x.worker_id === 'batch-1')).toBe(true);
    const logs = await api('GET', `/v1/executions/${String(done[99]!.id)}/logs`, token);
    expect(logs.stdout).toBe('item\n');

    // Exactly one build: one script image in the agent's index (`rgrid-agent ls`), the one image of the
    // account in the engine, and every attempt counted as a use of that one entry.
    const entries = await cliJson<Array<{ kind: string; image_id: string; use_count: number }>>(['ls', '--account', account], agent.socket);
    expect(entries.map((e) => e.kind)).toEqual(['image']);
    const images = await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } });
    expect(images.map((i) => i.Id)).toEqual([entries[0]!.image_id]);
    const attempts = done.reduce((sum, x) => sum + Number(x.attempts), 0);
    expect(entries[0]!.use_count).toBe(attempts);
    // Only the runs in flight while that build ran (at most the agent's capacity, 4) missed the cache:
    // the leader and those that waited for its build. Every later run was a hit.
    const misses = done.filter((x) => x.script_cache_hit !== true);
    expect(misses.length).toBeGreaterThanOrEqual(1);
    expect(misses.length).toBeLessThanOrEqual(4);
    expect(misses.every((x) => x.script_cache_hit === false)).toBe(true);
  });
});
