// A real `rgrid-agent serve` whose cache holds more entries than fit in one snapshot request syncs them
// all with a real `rgrid-control serve` (dist/, real PostgreSQL) whose snapshot body limit one request
// would exceed: the snapshot goes in parts of `sync_snapshot_part_bytes`, and afterwards the control
// plane's view equals the agent's index. The entries are written into the agent's index while it is
// stopped (as a restart after a long offline period would find them); they all point at one small image
// made for this test, so start-up repair and reconcile keep them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createIndex } from '../../agent/index/index.js';
import type { IndexEntry } from '../../agent/index/types.js';
import { sha256Hex } from '../../common/digest.js';
import { useTestDatabase } from '../control/support.js';
import { cli, cliJson, docker, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { centralEntries, entryView, startControl, workerToken, type ControlProcess } from './helpers.js';

const db = useTestDatabase();
const account = uniqueAccount('large');
const workerId = `w-${account}`;
const ENTRIES = 60;
let control: ControlProcess | undefined;
let agent: AgentProcess | undefined;
let imageId = '';

type SyncJson = { state: string; outbox_depth: number; snapshots_sent: number; snapshot_parts_sent: number };

beforeAll(async () => {
  // One image for every entry: a container of the base image committed under a test repository.
  const container = await docker.createContainer({ Image: inject('baseImage'), Cmd: ['true'], Labels: { 'io.rgrid.test': account } });
  const committed = (await container.commit({ repo: 'rgrid-test/snapshot-parts', tag: account })) as { Id: string };
  await container.remove({ force: true });
  imageId = committed.Id;
  // A whole snapshot of 60 entries is about 36 KiB: over this limit, parts of 4 KiB are well under it.
  control = await startControl(db.url, 0, ['--snapshot-body-limit', '16384']);
});

afterAll(async () => {
  await agent?.stop();
  await control?.stop();
  if (imageId) await docker.getImage(imageId).remove({ force: true }).catch(() => undefined);
});

function indexEntry(i: number): IndexEntry {
  const key = sha256Hex(`large:${account}:${i}`);
  const at = Date.now() - i * 1000;
  return {
    kind: 'image', account, key, image_id: imageId, image_tag: `rgrid-test/snapshot-parts:${account}`, runtime: 'python3.11',
    base_image_id: imageId, script_sha256: sha256Hex(`script:${account}:${i}`), requirements_sha256: null, deps_key: null,
    size_bytes: 10_000_000 + i, created_at: at, last_used_at: at, use_count: 1 + i,
  };
}

describe('sync of a snapshot larger than one request', () => {
  it('sends it in parts and the control plane ends up with exactly the agent’s entries', async () => {
    const token = await workerToken(control!.url, account, workerId);
    const dir = tempDir('fleet-large');
    const dataDir = join(dir, 'data');
    const socket = join(dir, 'agent.sock');
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify({ sync_interval_s: 0.2, sync_backoff_initial_s: 0.1, sync_backoff_max_s: 0.5, sync_timeout_s: 10, sync_snapshot_part_bytes: 4096 }));
    const start = () =>
      startAgent({
        dataDir, socket, baseImage: inject('baseImage'),
        control: { url: control!.url, workerToken: token, workerId },
        args: ['--config', config, '--prune-interval', '0'],
      });

    // First life: an empty cache, synced.
    agent = await start();
    expect(await cliJson<SyncJson>(['sync', '--now'], agent.socket)).toMatchObject({ state: 'ok', outbox_depth: 0 });
    expect(await centralEntries(control!.url, token, workerId)).toEqual([]);
    await agent.stop();

    // Offline, the cache grew to more entries than one snapshot request may carry.
    const index = createIndex({ path: join(dataDir, 'index') });
    for (let i = 0; i < ENTRIES; i++) await index.putBuilt(indexEntry(i));
    await index.close();

    agent = await start();
    const synced = await cli(['sync', '--now', '--json'], agent.socket);
    expect(synced.code, synced.stdout + synced.stderr).toBe(0);
    const status = JSON.parse(synced.stdout) as SyncJson;
    expect(status).toMatchObject({ state: 'ok', outbox_depth: 0 });
    // The claim loop's start registers once more, so there may be two snapshots: each went in 8+ parts.
    expect(status.snapshots_sent).toBeGreaterThanOrEqual(1);
    expect(status.snapshot_parts_sent).toBeGreaterThanOrEqual(8 * status.snapshots_sent);

    const local = await cliJson<Array<Record<string, unknown>>>(['ls'], agent.socket);
    expect(local).toHaveLength(ENTRIES);
    const central = await centralEntries(control!.url, token, workerId);
    expect(central.map(entryView).sort()).toEqual(local.map(entryView).sort());
    // The control plane refused nothing as too large on the way.
    expect(control!.log()).not.toMatch(/"statusCode":413/);
  });
});
