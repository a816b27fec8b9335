// A batch of 100 executions of one new script on an agent: exactly one build, 100 results, and nothing of
// the runs left behind. Submitted through the HTTP API (100 CLI processes would only measure node start-up).
//
// RGRID_BATCH_ROUNDS=N repeats the batch N times on the same agent (a new script each round), so that a
// rare hang of the run path shows: each round has a hard deadline (RGRID_BATCH_DEADLINE_S, default 240)
// after which it fails with what is still pending — the executions not finished and their last status,
// the agent's runs in progress and clean-ups not settled, its leases, the account's containers and the
// agent's last warnings. CI runs one round.
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import type { AgentProcess } from '../agent/helpers.js';
import { cliJson, docker, nonceScript, uniqueAccount } from '../agent/helpers.js';
import { useGrid } from './grid.js';

const ROUNDS = positiveInt('RGRID_BATCH_ROUNDS', 1);
const DEADLINE_MS = positiveInt('RGRID_BATCH_DEADLINE_S', 240) * 1000;
const BATCH = 100;
const CAPACITY = 4;

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${raw}`);
  return n;
}

const grid = useGrid();

async function api(method: string, path: string, token: string, body?: unknown, raw?: Buffer, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const res = await fetch(`${grid.url()}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': raw ? 'application/octet-stream' : 'application/json' },
    body: raw ?? (body === undefined ? null : JSON.stringify(body)),
    ...(signal ? { signal } : {}),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Polls `condition` until it holds or `signal` aborts (the round's deadline). */
async function until(condition: () => Promise<boolean>, signal: AbortSignal): Promise<void> {
  while (!(await condition())) {
    signal.throwIfAborted();
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A hot container made ahead for a next run: created, never started (bounded by run_hot_containers). */
const isHotReady = (c: { State: string; Labels: Record<string, string> }): boolean => c.State === 'created' && c.Labels['io.rgrid.hot'] !== undefined;

/** The account's containers but the hot ones ready for a next run. */
async function runContainersLeft(account: string): Promise<Array<{ name: string; role: string; state: string; status: string }>> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`] } });
  return containers
    .filter((c) => !isHotReady(c))
    .map((c) => ({ name: (c.Names[0] ?? c.Id).replace(/^\//, ''), role: c.Labels['io.rgrid.role'] ?? '?', state: c.State, status: c.Status }));
}

describe('a batch of 100', () => {
  const account = uniqueAccount('batch');
  let agent: AgentProcess;
  let token = '';
  const images: string[] = [];

  beforeAll(async () => {
    agent = await grid.agent(account, 'batch-1', { capacity: CAPACITY });
    token = await grid.clientToken(account);
  });

  for (let round = 1; round <= ROUNDS; round++) {
    it(`round ${round} of ${ROUNDS}: builds once, returns 100 results and leaves no run behind`, async () => {
      const deadline = new AbortController();
      // Last known status of each execution, for the diagnosis.
      const last = new Map<string, string>();
      const batch = async (): Promise<void> => {
        const script = Buffer.from(nonceScript(`import sys\nprint("item")  # round ${round}`));
        const sha = sha256Hex(script);
        await api('POST', '/v1/manifests', token, { files: [{ name: 'script.py', sha256: sha, size: script.length }] });
        await api('PUT', `/v1/blobs/${sha}`, token, undefined, script);

        const submitted = await Promise.all(Array.from({ length: BATCH }, () => api('POST', '/v1/executions/submit', token, { runtime: 'python3.11', script_sha256: sha })));
        for (const e of submitted) last.set(String(e.id), String(e.status));
        const done = await Promise.all(submitted.map(async (e) => {
          for (;;) {
            const x = await api('GET', `/v1/executions/${String(e.id)}/wait?timeout_ms=20000`, token, undefined, undefined, deadline.signal);
            last.set(String(e.id), String(x.status));
            if (x.status === 'succeeded' || x.status === 'failed') return x;
          }
        }));
        expect(done).toHaveLength(BATCH);
        expect(done.every((x) => x.status === 'succeeded' && x.exit_code === 0 && x.worker_id === 'batch-1')).toBe(true);
        const logs = await api('GET', `/v1/executions/${String(done[BATCH - 1]!.id)}/logs`, token);
        expect(logs.stdout).toBe('item\n');

        // Exactly one build: one new script image in the agent's index (`rgrid-agent ls`), one new image of
        // the account in the engine, and every attempt counted as a use of that one entry.
        const entries = await cliJson<Array<{ kind: string; image_id: string; use_count: number }>>(['ls', '--account', account], agent.socket);
        expect(entries.map((e) => e.kind)).toEqual(Array.from({ length: round }, () => 'image'));
        const fresh = entries.filter((e) => !images.includes(e.image_id));
        expect(fresh).toHaveLength(1);
        const engineImages = await docker.listImages({ filters: { label: [`io.rgrid.account=${account}`] } });
        expect(engineImages.map((i) => i.Id).sort()).toEqual([...images, fresh[0]!.image_id].sort());
        images.push(fresh[0]!.image_id);
        const attempts = done.reduce((sum, x) => sum + Number(x.attempts), 0);
        expect(fresh[0]!.use_count).toBe(attempts);
        // Only the runs in flight while that build ran (at most the agent's capacity) missed the cache:
        // the leader and those that waited for its build. Every later run was a hit.
        const misses = done.filter((x) => x.script_cache_hit !== true);
        expect(misses.length).toBeGreaterThanOrEqual(1);
        expect(misses.length).toBeLessThanOrEqual(CAPACITY);
        expect(misses.every((x) => x.script_cache_hit === false)).toBe(true);

        // Nothing of the runs is left once their clean-up settles: no run in progress, no clean-up
        // pending, no lease held, no run container of the account.
        await until(async () => {
          const health = await agent.client.health();
          const runs = health.runs as { active?: number; cleaning?: number } | undefined;
          return health.runs_active === 0 && (runs?.cleaning ?? 0) === 0 && (health.leases as unknown[]).length === 0
            && (await runContainersLeft(account)).length === 0;
        }, deadline.signal);
        const hot = (await docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`] } })).filter(isHotReady);
        expect(hot.length).toBeLessThanOrEqual(2); // run_hot_containers' default
      };

      const diagnose = async (): Promise<string> => {
        // The statuses as the control plane has them now (a wait in flight has not said).
        const now = await Promise.all([...last.keys()].map(async (id) => {
          const x = await api('GET', `/v1/executions/${id}`, token).catch(() => undefined);
          if (x) last.set(id, String(x.status));
          return x;
        }));
        const pending = now.filter((x) => x && x.status !== 'succeeded' && x.status !== 'failed') as Array<Record<string, unknown>>;
        const byStatus: Record<string, number> = {};
        for (const [, s] of last) byStatus[s] = (byStatus[s] ?? 0) + 1;
        const health = await agent.client.health().catch((err: unknown) => ({ error: String(err) }));
        const warnings = agent.logLines().filter((l) => Number(l.level) >= 40).slice(-20);
        return JSON.stringify({
          executions_by_status: byStatus,
          executions_pending: pending.slice(0, 10).map((x) => ({ id: x.id, status: x.status, worker_id: x.worker_id, attempts: x.attempts })),
          agent: { runs_active: (health as Record<string, unknown>).runs_active, runs: (health as Record<string, unknown>).runs, leases: (health as Record<string, unknown>).leases, error: (health as Record<string, unknown>).error },
          containers_left: await runContainersLeft(account).catch((err: unknown) => String(err)),
          agent_warnings: warnings,
        }, null, 2);
      };

      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => {
          deadline.abort(new Error('round deadline'));
          resolve('timeout');
        }, DEADLINE_MS);
      });
      const work = batch();
      try {
        const outcome = await Promise.race([work.then(() => 'done' as const), timedOut]);
        if (outcome === 'timeout') {
          throw new Error(`round ${round} did not finish within ${DEADLINE_MS / 1000} s; still pending:\n${await diagnose()}`);
        }
      } finally {
        clearTimeout(timer);
        // The aborted waits end the work; its rejection is the deadline's, reported above.
        work.catch(() => undefined);
      }
    }, DEADLINE_MS + 60_000);
  }
});
