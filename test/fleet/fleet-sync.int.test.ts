// Durable sync through an outage of the control plane, and coalesced
// touches. Real `rgrid-control serve` (dist/) on a real PostgreSQL database, real `rgrid-agent serve`
// on the real Docker engine.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { useTestDatabase } from '../control/support.js';
import { cli, cliJson, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { centralEntries, entryView, eventually, metricValue, startControl, workerToken, type ControlProcess } from './helpers.js';

const db = useTestDatabase();
const account = uniqueAccount('sync');
const workerId = `w-${account}`;
let control: ControlProcess | undefined;
let agent: AgentProcess | undefined;
let token = '';

type SyncJson = { outbox_depth: number; last_success_at: string | null; state: string; batches_taken: number };

async function syncNow(socket: string): Promise<SyncJson> {
  // `sync --now` exits 1 while ops remain (control plane down): read its JSON either way.
  const res = await cli(['sync', '--now', '--json'], socket);
  return JSON.parse(res.stdout) as SyncJson;
}

async function localEntries(socket: string): Promise<Array<Record<string, unknown>>> {
  return cliJson<Array<Record<string, unknown>>>(['ls'], socket);
}

beforeAll(async () => {
  control = await startControl(db.url);
  token = await workerToken(control.url, account, workerId);
  const dir = tempDir('fleet-sync');
  // Short retry settings so the outage and the recovery take seconds, not minutes.
  const config = join(dir, 'agent.json');
  writeFileSync(config, JSON.stringify({ sync_interval_s: 0.2, sync_backoff_initial_s: 0.1, sync_backoff_max_s: 0.5, sync_breaker_threshold: 3, sync_breaker_reset_s: 1, sync_timeout_s: 5 }));
  agent = await startAgent({
    dataDir: join(dir, 'data'),
    socket: join(dir, 'agent.sock'),
    baseImage: inject('baseImage'),
    control: { url: control.url, workerToken: token, workerId },
    args: ['--config', config, '--prune-interval', '0'],
  });
});

afterAll(async () => {
  await agent?.stop();
  await control?.stop();
  await removeAccountImages(account);
});

describe('sync with the control plane', () => {
  it('keeps serving hits and builds while the control plane is down, and converges after', async () => {
    const client = new AgentClient(agent!.socket);
    try {
      const scriptA = Buffer.from(nonceScript('print("a")'));
      const first = await client.ensure({ script: scriptA, account });
      expect(first.built).toBe(true);
      const synced = await syncNow(agent!.socket);
      expect(synced).toMatchObject({ state: 'ok', outbox_depth: 0 });
      expect(synced.last_success_at).not.toBeNull();
      expect((await centralEntries(control!.url, token, workerId)).map((e) => e.key)).toEqual([first.image_key]);

      // Outage: hits and a new build keep working; ops wait in the outbox, the breaker opens.
      const port = control!.port;
      await control!.stop();
      for (let i = 0; i < 5; i++) expect((await client.ensure({ script: scriptA, account })).script_cache_hit).toBe(true);
      const second = await client.ensure({ script: Buffer.from(nonceScript('print("b")')), account });
      expect(second.built).toBe(true);
      const down = await eventually('the breaker to open', async () => {
        const s = await cliJson<SyncJson>(['sync'], agent!.socket);
        return s.state === 'open' ? s : undefined;
      });
      expect(down.outbox_depth).toBeGreaterThan(0);
      const failed = await syncNow(agent!.socket);
      expect(failed.outbox_depth).toBeGreaterThan(0);

      // Back (same address, same database): the outbox drains, the central view equals the index.
      control = await startControl(db.url, port);
      const recovered = await eventually('the outbox to drain', async () => {
        const s = await syncNow(agent!.socket);
        return s.state === 'ok' && s.outbox_depth === 0 ? s : undefined;
      });
      expect(recovered.state).toBe('ok');
      const local = await localEntries(agent!.socket);
      const central = await centralEntries(control.url, token, workerId);
      expect(central).toHaveLength(local.length);
      expect(central.map(entryView).sort()).toEqual(local.map(entryView).sort());
      const a = central.find((e) => e.key === first.image_key);
      expect(a?.use_count).toBe(6);
    } finally {
      await client.close();
    }
  });

  it('coalesces 10,000 hits of one key into a bounded number of touch ops; central use_count equals the uses', async () => {
    const client = new AgentClient(agent!.socket);
    try {
      const script = Buffer.from(nonceScript('print("hot")'));
      const built = await client.ensure({ script, account });
      expect(built.built).toBe(true);
      await syncNow(agent!.socket);
      const before = await scrape(agent!.socket);
      const syncBefore = await cliJson<SyncJson>(['sync'], agent!.socket);
      const HITS = 10_000;
      let next = 0;
      // 16 concurrent hits over one kept-alive connection each: the socket API directly, not 10,000 CLIs.
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          const c = new AgentClient(agent!.socket);
          try {
            while (next < HITS) {
              next++;
              const r = await c.ensure({ script, account });
              if (r.script_cache_hit !== true) throw new Error('expected a hit');
            }
          } finally {
            await c.close();
          }
        }),
      );
      const done = await eventually('the outbox to drain', async () => {
        const s = await syncNow(agent!.socket);
        return s.state === 'ok' && s.outbox_depth === 0 ? s : undefined;
      });
      const after = await scrape(agent!.socket);
      const touchOps = (metricValue(after, 'rgrid_agent_outbox_ops_enqueued_total{type="touch"}') ?? 0) - (metricValue(before, 'rgrid_agent_outbox_ops_enqueued_total{type="touch"}') ?? 0);
      const batches = done.batches_taken - syncBefore.batches_taken;
      // One open touch op per key, sealed when a batch is taken: ≤ batches + 1, far below the hits.
      expect(touchOps).toBeGreaterThan(0);
      expect(touchOps).toBeLessThanOrEqual(batches + 1);
      expect(touchOps).toBeLessThan(HITS / 10);
      const central = (await centralEntries(control!.url, token, workerId)).find((e) => e.key === built.image_key);
      const local = (await localEntries(agent!.socket)).find((e) => e.key === built.image_key);
      // The build is the first use; every hit adds one.
      expect(local?.use_count).toBe(HITS + 1);
      expect(central?.use_count).toBe(HITS + 1);
      console.log(`10,000 hits → ${touchOps} touch ops in ${batches} batches`);
    } finally {
      await client.close();
    }
  });
});

async function scrape(socket: string): Promise<string> {
  const c = new Client('http://localhost', { socketPath: socket });
  try {
    const res = await c.request({ method: 'GET', path: '/metrics' });
    return await res.body.text();
  } finally {
    await c.close();
  }
}
