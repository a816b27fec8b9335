// An agent holding more entries than fit in one snapshot request syncs completely: its sync loop (with
// the real LMDB index) sends the snapshot in parts of `sync_snapshot_part_bytes` to a real control plane
// (real PostgreSQL, listening on 127.0.0.1) whose snapshot body limit a single request would exceed. A
// lost answer resumes the same snapshot at the same part; the ops sealed with the snapshot stay in the
// outbox until the final part is acknowledged; an agent restarting mid-snapshot leaves the control plane's
// entries as they were until its next, complete snapshot.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { resolveConfig } from '../../agent/config.js';
import { createIndex, type AgentIndex } from '../../agent/index/index.js';
import type { IndexEntry } from '../../agent/index/types.js';
import { createSyncLoop, type SyncLoop } from '../../agent/sync/sync-loop.js';
import { toCacheEntry } from '../../agent/sync/wire-ops.js';
import { sha256Hex } from '../../common/digest.js';
import { buildControlApp } from '../../control/app.js';
import { call, createToken, entry as centralEntry, registerWorker, snapshot, testConfig, useTestDatabase } from '../control/support.js';
import { entryView } from './helpers.js';

const db = useTestDatabase();
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** What the control plane saw of each snapshot request, and how the test wants it answered. */
interface Seen {
  id: string | null;
  part: number | null;
  final: boolean;
  entries: number;
  bytes: number;
}
type Verdict = 'apply' | 'refuse' | 'lose-answer';

/** A listening control plane whose snapshot requests pass through `judge` (the real route applies them). */
async function controlPlane(judge: (seen: Seen) => Verdict): Promise<{ app: FastifyInstance; url: string; seen: Seen[]; judging: () => void }> {
  // 8 KiB: the agents below hold 5-6 times that; a whole snapshot in one request would get 413.
  const app = await buildControlApp(testConfig(db, { snapshotBodyLimitBytes: 8192 }), { logger: false });
  const seen: Seen[] = [];
  // The test's own setup requests pass untouched; the agent's are judged.
  let judging = false;
  const verdicts = new WeakMap<object, Verdict>();
  app.addHook('preHandler', async (request, reply) => {
    if (!judging || !request.url.endsWith('/snapshot')) return;
    const body = request.body as { entries: unknown[]; snapshot?: { id: string; part: number; final: boolean } };
    const s: Seen = {
      id: body.snapshot?.id ?? null, part: body.snapshot?.part ?? null, final: body.snapshot?.final ?? true,
      entries: body.entries.length, bytes: Number(request.headers['content-length']),
    };
    seen.push(s);
    const verdict = judge(s);
    verdicts.set(request, verdict);
    // The control plane is failing: nothing of this part is applied.
    if (verdict === 'refuse') await reply.code(503).send({ error: 'unavailable', message: 'test: refused' });
  });
  app.addHook('onSend', async (request, _reply, payload) => {
    // Applied, but the answer never reaches the agent.
    if (verdicts.get(request) === 'lose-answer') request.raw.socket.destroy();
    return payload;
  });
  onTestFinished(async () => {
    await app.close();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, seen, judging: (): void => {
      judging = true;
    },
  };
}

function openIndex(): AgentIndex {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-snapshot-parts-'));
  dirs.push(dir);
  const index = createIndex({ path: join(dir, 'index') });
  onTestFinished(async () => {
    await index.close();
  });
  return index;
}

function indexEntry(account: string, i: number): IndexEntry {
  const key = sha256Hex(`entry:${account}:${i}`);
  return {
    kind: 'image', account, key, image_id: `sha256:${sha256Hex(`id:${key}`)}`, image_tag: `rgrid-exec:${key.slice(0, 12)}`, runtime: 'python3.11',
    base_image_id: `sha256:${'b'.repeat(64)}`, script_sha256: sha256Hex(`script:${i}`), requirements_sha256: null, deps_key: null,
    size_bytes: 1_000_000 + i, created_at: 1_700_000_000_000 + i, last_used_at: 1_700_000_000_000 + i, use_count: 1,
  };
}

function syncLoop(index: AgentIndex, url: string, token: string, workerId: string): SyncLoop {
  const config = resolveConfig({}, {
    socket: '/nonexistent/agent.sock', data_dir: '/nonexistent', control_url: url, worker_token: token, worker_id: workerId,
    // Parts of 4 KiB (about 8 entries). The test drives every attempt (flush): no background tick
    // comes after the first, and the backoff keeps that one from retrying a failure by itself.
    sync_snapshot_part_bytes: 4096, sync_interval_s: 3600, sync_timeout_s: 10, sync_backoff_initial_s: 600, sync_backoff_max_s: 600,
  });
  const loop = createSyncLoop({ index, settings: () => config, logger: pino({ level: 'silent' }), version: 'test', hostInfo: () => Promise.resolve({ load: { running: 0 } }) });
  onTestFinished(() => loop.stop());
  return loop;
}

async function central(app: FastifyInstance, token: string, workerId: string): Promise<Array<Record<string, unknown>>> {
  const res = await call(app, 'GET', `/v1/workers/${workerId}/entries`, token);
  expect(res.statusCode).toBe(200);
  return res.json<{ entries: Array<Record<string, unknown>> }>().entries;
}

const local = (index: AgentIndex): string[] => index.syncSnapshot().entries.map((e) => entryView(toCacheEntry(e))).sort();

describe('an agent whose snapshot does not fit in one request', () => {
  it('sends it in parts that fit, resumes after a lost answer, and acknowledges the sealed ops only after the final part', async () => {
    const account = 'parts-agent';
    const workerId = 'w-parts-agent';
    let holdFinal = true;
    let lostOnce = false;
    const { app, url, seen, judging: startJudging } = await controlPlane((s) => {
      if (s.part === 3 && !lostOnce) {
        lostOnce = true;
        return 'lose-answer';
      }
      return s.final && holdFinal ? 'refuse' : 'apply';
    });
    const token = await createToken(app, account, 'worker', workerId);
    // Entries the control plane holds from before that this agent no longer has: the snapshot removes them.
    await registerWorker(app, token, workerId);
    const stale = [centralEntry({ account, script: 'stale-1' }), centralEntry({ account, script: 'stale-2' })];
    expect((await snapshot(app, token, workerId, stale)).statusCode).toBe(200);
    startJudging();

    const index = openIndex();
    const ENTRIES = 50;
    for (let i = 0; i < ENTRIES; i++) await index.putBuilt(indexEntry(account, i));
    const loop = syncLoop(index, url, token, workerId);

    // First attempt: parts 0-3 arrive, the answer to part 3 is lost. Nothing removed, nothing acknowledged.
    const lost = await loop.flush();
    expect(lost).toMatchObject({ snapshots_sent: 0, snapshot_parts_sent: 3, registered: false, outbox_depth: ENTRIES });
    const afterLoss = await central(app, token, workerId);
    expect(afterLoss.map((e) => e.key)).toEqual(expect.arrayContaining(stale.map((e) => e.key)));
    expect(afterLoss).toHaveLength(stale.length + seen.slice(0, 4).reduce((n, s) => n + s.entries, 0));

    // Next attempt: the same snapshot from part 3 on, up to the final part, which is refused for now:
    // the entries of the other parts have arrived, the stale ones are still there, the sealed ops still
    // wait in the outbox.
    const held = await loop.flush();
    expect(held).toMatchObject({ snapshots_sent: 0, registered: false, outbox_depth: ENTRIES });
    const refused = seen.at(-1)!;
    expect(refused.final).toBe(true);
    const beforeFinal = await central(app, token, workerId);
    expect(beforeFinal).toHaveLength(ENTRIES - refused.entries + stale.length);
    expect(beforeFinal.map((e) => e.key)).toEqual(expect.arrayContaining(stale.map((e) => e.key)));

    holdFinal = false;
    const done = await loop.flush();
    expect(done).toMatchObject({ state: 'ok', registered: true, snapshots_sent: 1, outbox_depth: 0 });
    expect((await central(app, token, workerId)).map(entryView).sort()).toEqual(local(index));

    // One snapshot id throughout; part 3 sent twice (its answer was lost), every part under the limits.
    const parted = seen.filter((s) => s.id !== null);
    expect(new Set(parted.map((s) => s.id)).size).toBe(1);
    expect(parted.filter((s) => s.part === 3)).toHaveLength(2);
    const parts = Math.max(...parted.map((s) => s.part ?? 0)) + 1;
    expect(parts).toBeGreaterThanOrEqual(6);
    expect(done.snapshot_parts_sent).toBe(parts);
    expect(parted.every((s) => s.bytes <= 4096)).toBe(true);
    // Repeats carry the same entries; the distinct parts together carry each entry once.
    const byPart = new Map(parted.map((s) => [s.part, s.entries]));
    expect([...byPart.values()].reduce((n, e) => n + e, 0)).toBe(ENTRIES);

    // Deltas follow as before: a hit reaches the control plane.
    await index.touch([indexEntry(account, 7)]);
    expect(await loop.flush()).toMatchObject({ outbox_depth: 0, ops_sent: 1 });
    const hit = (await central(app, token, workerId)).find((e) => e.key === indexEntry(account, 7).key);
    expect(hit?.use_count).toBe(2);
  });

  it('an agent restarting mid-snapshot removes nothing; the next agent’s complete snapshot decides, the old one’s late parts are refused', async () => {
    const account = 'parts-restart';
    const workerId = 'w-parts-restart';
    let firstId: string | null = null;
    const { app, url, seen, judging: startJudging } = await controlPlane((s) => {
      firstId ??= s.id;
      // The first agent dies after its second part: whatever it sends from then on never arrives.
      return s.id === firstId && (s.part ?? 0) >= 2 ? 'refuse' : 'apply';
    });
    const token = await createToken(app, account, 'worker', workerId);
    await registerWorker(app, token, workerId);
    const stale = [centralEntry({ account, script: 'stale' })];
    expect((await snapshot(app, token, workerId, stale)).statusCode).toBe(200);
    startJudging();

    const index = openIndex();
    for (let i = 0; i < 40; i++) await index.putBuilt(indexEntry(account, i));
    const first = syncLoop(index, url, token, workerId);
    expect(await first.flush()).toMatchObject({ snapshots_sent: 0, outbox_depth: 40 });
    await first.stop();
    const afterDeath = await central(app, token, workerId);
    // Two parts arrived; the stale entry is still there.
    expect(afterDeath.map((e) => e.key)).toContain(stale[0]!.key);
    expect(afterDeath.length).toBe(stale.length + seen.filter((s) => s.id === firstId && (s.part ?? 0) < 2).reduce((n, s) => n + s.entries, 0));

    // While it was down, five entries went from its cache (pruned); the restarted agent syncs afresh.
    for (let i = 0; i < 5; i++) await index.remove(indexEntry(account, i));
    const second = syncLoop(index, url, token, workerId);
    expect(await second.flush()).toMatchObject({ state: 'ok', snapshots_sent: 1, outbox_depth: 0 });
    const secondId = seen.at(-1)?.id;
    expect(secondId).not.toBe(firstId);
    expect((await central(app, token, workerId)).map(entryView).sort()).toEqual(local(index));
    expect(local(index)).toHaveLength(35);

    // A part of the dead agent's snapshot arriving late changes nothing.
    const before = await central(app, token, workerId);
    const late = await call(app, 'PUT', `/v1/workers/${workerId}/snapshot`, token, {
      accounts: [account], entries: [], snapshot: { id: firstId, part: 0, final: true },
    });
    expect(late.statusCode).toBe(409);
    expect(await central(app, token, workerId)).toEqual(before);
  });
});
