/**
 * A hit answers before its use (last_used_at, use_count, outbox op) is committed: uses are gathered
 * and written in batches (agent/index/index.ts, durability). Against a real Docker engine:
 *  - the agent SIGKILLed the moment a hit is answered (more hits in flight): the index reopens
 *    consistent — every use counted in an entry has its outbox touch op, none more, none fewer (they
 *    commit in one transaction), no more uses than hits sent — and the entry is still a hit;
 *  - a touch that fails does not fail the hit: it is answered, and the failure is logged;
 *  - whoever heard "hit" and then lists sees the use (`ls` waits for the touches already issued).
 */
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AgentClient } from '../../agent/client/agent-client.js';
import { createImageCache } from '../../agent/builder/image-cache.js';
import { createImageProbe } from '../../agent/builder/image-probe.js';
import { createRuntimeResolver } from '../../agent/builder/runtimes.js';
import { resolveConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import { createLeaseTable } from '../../agent/index/leases.js';
import { cliJson, docker, nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';

const account = uniqueAccount('touch');
const dir = tempDir('hit-touch');

afterAll(async () => {
  await removeAccountImages(account);
});

/** Σ touch-op counts per image key in the outbox (nothing synced them: no control plane here). */
function touchOps(index: AgentIndex): Map<string, number> {
  const counts = new Map<string, number>();
  for (const op of index.outbox.takeBatch(100_000)) {
    if (op.type === 'touch' && op.kind === 'image') counts.set(op.key, (counts.get(op.key) ?? 0) + (op.count ?? 0));
  }
  return counts;
}

describe('the agent killed right after answering hits', () => {
  const dataDir = join(dir, 'data');
  const socket = join(dir, 'agent.sock');
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.stop();
  });

  it('reopens with every counted use matched by its outbox op, and the entry still hits', async () => {
    agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage') });
    const script = Buffer.from(nonceScript('print("touched")'));
    const client = new AgentClient(socket);
    const built = await client.ensure({ script, account });
    expect(built.built).toBe(true);
    // 30 hits at once; SIGKILL as soon as the first answer arrives (the others' touches are in flight).
    const HITS = 30;
    const running = agent;
    let answered = 0;
    const hits = Array.from({ length: HITS }, () =>
      client.ensure({ script, account }).then(
        (r) => {
          answered++;
          if (answered === 1) running.proc.kill('SIGKILL');
          return r.script_cache_hit;
        },
        () => 'lost',
      ),
    );
    const outcomes = await Promise.all(hits);
    await running.exited;
    await client.destroy();
    expect(outcomes.filter((o) => o === true).length).toBeGreaterThanOrEqual(1);
    expect(outcomes.filter((o) => o === false)).toEqual([]);

    const index = createIndex({ path: join(dataDir, 'index') });
    try {
      const entry = index.get({ kind: 'image', account, key: String(built.image_key) });
      expect(entry?.image_id).toBe(built.image_id);
      // The build counted one use (its upsert op); each counted hit has its touch op, in the same commit.
      expect(entry!.use_count - 1).toBe(touchOps(index).get(String(built.image_key)) ?? 0);
      expect(entry!.use_count).toBeLessThanOrEqual(1 + HITS);
    } finally {
      await index.close();
    }

    agent = await startAgent({ dataDir, socket, baseImage: inject('baseImage') });
    const again = await agent.client.ensure({ script, account });
    expect(again).toMatchObject({ script_cache_hit: true, image_id: built.image_id });
    // Answered before its touch committed, and still counted by the next listing.
    const listed = await cliJson<Array<{ key: string; use_count: number }>>(['ls', '--account', account], socket);
    const before = listed.find((e) => e.key === built.image_key)!.use_count;
    await agent.client.ensure({ script, account });
    const after = await cliJson<Array<{ key: string; use_count: number }>>(['ls', '--account', account], socket);
    expect(after.find((e) => e.key === built.image_key)?.use_count).toBe(before + 1);
  });
});

describe('a touch that fails', () => {
  let index: AgentIndex;
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'warn' }, new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  }));

  beforeAll(() => {
    index = createIndex({ path: join(dir, 'in-process-index') });
  });
  afterAll(async () => {
    await index.close();
  });

  it('does not fail the hit, and is logged', async () => {
    const config = resolveConfig({ socket: join(dir, 's'), data_dir: dir, runtimes: { 'python3.11': inject('baseImage') } }, {});
    const probe = createImageProbe(docker, { logger, watch: false });
    let failTouches = false;
    // The real index, except that recording a use fails on demand (as on a full disk).
    const failing: AgentIndex = Object.create(index, {
      recordUse: { value: (...args: Parameters<AgentIndex['recordUse']>) => (failTouches ? Promise.reject(new Error('MDB_MAP_FULL: the map is full')) : index.recordUse(...args)) },
    }) as AgentIndex;
    const cache = createImageCache({ docker, index: failing, leases: createLeaseTable(), runtimes: createRuntimeResolver(docker, config), config, logger, probe });
    try {
      const script = nonceScript('print("no touch")');
      const once = async () => (await cache.ensure(await cache.prepare({ script: Buffer.from(script), account }))).result;
      const built = await once();
      expect(built.built).toBe(true);
      failTouches = true;
      const hit = await once();
      expect(hit).toMatchObject({ script_cache_hit: true, image_id: built.image_id });
      await index.settled();
      await new Promise((r) => setImmediate(r));
      expect(lines.some((l) => /recording a cache hit's use failed/.test(String(l.msg)) && /MDB_MAP_FULL/.test(String(l.reason)))).toBe(true);
      // The use was not counted; nothing else changed.
      expect(index.get({ kind: 'image', account, key: hit.image_key })?.use_count).toBe(1);
    } finally {
      await cache.close();
    }
  });
});
