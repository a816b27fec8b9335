// One build per grid, end to end: a real registry, one Docker engine per worker host, the real control
// plane and real agents sharing images through the registry. A burst of one new script builds its
// dependency layer and its image once in the whole grid; a worker with nothing pulls the layer and builds
// only the script layer; a builder killed with SIGKILL mid-build is taken over; a tampered digest in the
// control plane's index is refused by the label check; a registry outage degrades to local builds whose
// pushes arrive afterwards; a failing pip install is tried once in the grid.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount } from '../agent/helpers.js';
import { makeSdist } from '../agent/sdist.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { rgridRun } from './grid.js';
import { useSharingGrid, waitFor, type LsEntry, type Worker } from './sharing-grid.js';
import { createToken } from '../control/support.js';

const account = uniqueAccount('share');
let wheelhouse = '';
let slowSdist = '';
const grid = useSharingGrid(account, () => wheelhouse);

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const dir = tempDir('e2e-share');
const file = (name: string, content: string): string => {
  writeFileSync(join(dir, name), content);
  return join(dir, name);
};

const LEASES = (how: string): RegExp => new RegExp(`^rgrid_control_build_leases_total\\{how="${how}"\\} (\\d+)$`, 'm');
const BUILD_FAILURES = /^rgrid_control_build_failures_total (\d+)$/m;
const AGENT_BUILDS = (kind: string, result: string): RegExp => new RegExp(`^rgrid_agent_builds_total\\{kind="${kind}",result="${result}"\\} (\\d+)$`, 'm');
const AGENT_PULLS = (kind: string, result: string): RegExp => new RegExp(`^rgrid_agent_registry_pulls_total\\{kind="${kind}",result="${result}"\\} (\\d+)$`, 'm');

const live = (): Worker[] => grid.workers().filter((w) => w.agent);
const byId = (id: string | null): Worker => grid.workers().find((w) => w.id === id)!;
const sumOver = async (workers: Worker[], line: RegExp): Promise<number> => (await Promise.all(workers.map((w) => grid.agentMetric(w, line)))).reduce((a, b) => a + b, 0);

interface RegistryRow { kind: 'image' | 'deps'; key: string; manifest_digest: string; deps_key: string | null; pushed_by: string }
async function imageRow(scriptSha: string): Promise<RegistryRow | undefined> {
  const res = await grid.db.pool.query<RegistryRow>(
    "SELECT kind, key, manifest_digest, deps_key, pushed_by FROM registry_images WHERE account_id = $1 AND kind = 'image' AND script_sha256 = $2",
    [account, scriptSha],
  );
  return res.rows[0];
}
async function registryRow(kind: 'image' | 'deps', key: string): Promise<RegistryRow | undefined> {
  const res = await grid.db.pool.query<RegistryRow>(
    'SELECT kind, key, manifest_digest, deps_key, pushed_by FROM registry_images WHERE account_id = $1 AND kind = $2 AND key = $3',
    [account, kind, key],
  );
  return res.rows[0];
}
async function execution(id: string): Promise<{ status: string; failure: string | null; error: string | null; stderr: string | null }> {
  const res = await grid.db.pool.query('SELECT status, failure, error FROM executions WHERE execution_id = $1', [id]);
  return res.rows[0] as { status: string; failure: string | null; error: string | null; stderr: string | null };
}

describe('one build per grid (registry sharing, three engines)', () => {
  let env: { url: string; token: string };
  /** Case 1's keys and digests, used again by the later cases. */
  let first: { depsKey: string; depsDigest: string; imageKey: string; imageDigest: string } | undefined;

  it('setup: three worker hosts, each its own engine and agent', async () => {
    wheelhouse = createWheelhouse([{ name: 'rgtest-share', version: '1.0' }], tempDir('wheels-share'));
    slowSdist = await makeSdist(wheelhouse, 'rgtest-slow', '1.0', 'slow');
    const workers = await Promise.all(['sh-a', 'sh-b', 'sh-c'].map((id) => grid.addWorker(id)));
    await Promise.all(workers.map((w) => grid.startAgent(w)));
    env = { url: grid.url(), token: await createToken(grid.app(), account, 'client') };
    expect(live().map((w) => w.id).sort()).toEqual(['sh-a', 'sh-b', 'sh-c']);
  });

  it('30 concurrent runs of a new script with requirements: one dependency build and one image build in the grid', async () => {
    const requirements = file('req-share.txt', 'rgtest-share==1.0\n');
    const scriptText = nonceScript('import rgtest_share\nprint("shared", rgtest_share.__name__)');
    const script = file('burst.py', scriptText);
    const grantedBefore = await grid.controlMetric(LEASES('granted'));
    const takenBefore = await grid.controlMetric(LEASES('taken_over'));

    const runs = await Promise.all(Array.from({ length: 30 }, () => rgridRun([script, '--requirements', requirements], env)));
    for (const r of runs) expect(r, r.stderr).toMatchObject({ code: 0, exit_code: 0 });
    const origins = runs.map((r) => r.image_origin);
    expect(origins.every((o) => o === 'built' || o === 'pulled' || o === 'local')).toBe(true);
    // Runs that joined an in-flight build on their worker share its origin: every 'built' run is on one
    // worker (the builder), every 'pulled' run on another.
    const builtOn = new Set(runs.filter((r) => r.image_origin === 'built').map((r) => r.worker_id));
    expect(builtOn.size, JSON.stringify(runs.map((r) => [r.worker_id, r.image_origin]))).toBe(1);

    const image = (await imageRow(sha256(scriptText)))!;
    expect(image).toBeDefined();
    const deps = (await registryRow('deps', image.deps_key!))!;
    expect(deps).toBeDefined();
    first = { depsKey: deps.key, depsDigest: deps.manifest_digest, imageKey: image.key, imageDigest: image.manifest_digest };

    // Every agent that ran it holds both images; exactly one built each, the others pulled them.
    const ranOn = new Set(runs.map((r) => r.worker_id));
    const origin: Record<'deps' | 'image', string[]> = { deps: [], image: [] };
    for (const w of live()) {
      const entries = await grid.ls(w);
      const find = (kind: 'deps' | 'image', key: string): LsEntry | undefined => entries.find((e) => e.kind === kind && e.key === key);
      for (const [kind, key, digest] of [['deps', deps.key, deps.manifest_digest], ['image', image.key, image.manifest_digest]] as const) {
        const entry = find(kind, key);
        // A worker told "pushed" for the script image pulls it whole: no separate dependency entry.
        if (ranOn.has(w.id) && kind === 'image') expect(entry, `${w.id} ran it: its image entry`).toBeDefined();
        if (!entry) continue;
        origin[kind].push(entry.origin);
        if (entry.origin === 'pulled') expect(entry.registry_digest).toBe(digest);
      }
    }
    expect(runs.filter((r) => r.image_origin === 'pulled').every((r) => !builtOn.has(r.worker_id))).toBe(true);
    const imageBuilder = live().find((w) => w.id === [...builtOn][0])!;
    expect((await grid.ls(imageBuilder)).find((e) => e.kind === 'image' && e.key === image.key)).toMatchObject({ origin: 'built' });
    for (const kind of ['deps', 'image'] as const) {
      expect(origin[kind].filter((o) => o === 'built'), kind).toHaveLength(1);
      expect(origin[kind].filter((o) => o !== 'built').every((o) => o === 'pulled'), kind).toBe(true);
    }
    // Counted by the control plane too: two leases (one per kind), none taken over; counted by the agents:
    // one pip install and one script image build in the whole grid.
    expect((await grid.controlMetric(LEASES('granted'))) - grantedBefore).toBe(2);
    expect((await grid.controlMetric(LEASES('taken_over'))) - takenBefore).toBe(0);
    expect(await sumOver(live(), AGENT_BUILDS('deps', 'ok'))).toBe(1);
    expect(await sumOver(live(), AGENT_BUILDS('image', 'ok'))).toBe(1);
    expect(await grid.manifestStatus('deps', deps.key, deps.manifest_digest)).toBe(200);
    expect(await grid.manifestStatus('image', image.key, image.manifest_digest)).toBe(200);
  });

  it('a worker with nothing, another script with the same requirements: pulls the dependency layer, builds only the script layer', async () => {
    const { depsKey, depsDigest } = first!;
    // Only the new worker is up, so it is the one that claims.
    const others = live();
    await Promise.all(others.map((w) => grid.stopAgent(w)));
    const fresh = await grid.addWorker('sh-d');
    await grid.startAgent(fresh);
    expect(await grid.ls(fresh)).toEqual([]);

    const requirements = file('req-share-2.txt', 'rgtest-share==1.0\n');
    const scriptText = nonceScript('import rgtest_share\nprint("second script")');
    const run = await rgridRun([file('second.py', scriptText), '--requirements', requirements], env);
    expect(run).toMatchObject({ code: 0, exit_code: 0, worker_id: 'sh-d', image_origin: 'built' });
    expect(run.stderr).toContain('second script');

    const entries = await grid.ls(fresh);
    const imageKey = (await imageRow(sha256(scriptText)))!.key;
    expect(entries.find((e) => e.kind === 'deps' && e.key === depsKey)).toMatchObject({ origin: 'pulled', registry_digest: depsDigest });
    expect(entries.find((e) => e.kind === 'image' && e.key === imageKey)).toMatchObject({ origin: 'built', deps_key: depsKey });
    // No pip install on this worker: no dependency build, one pull of the layer, one script image build.
    expect(await grid.agentMetric(fresh, AGENT_PULLS('deps', 'ok'))).toBe(1);
    expect(await grid.agentMetric(fresh, AGENT_BUILDS('deps', 'ok'))).toBe(0);
    expect(await grid.agentMetric(fresh, AGENT_BUILDS('deps', 'failed'))).toBe(0);
    expect(await grid.agentMetric(fresh, AGENT_BUILDS('image', 'ok'))).toBe(1);

    await Promise.all(others.map((w) => grid.startAgent(w)));
  });

  it('the builder killed with SIGKILL mid-build: another worker takes the lease over, builds, pushes; every run succeeds', async () => {
    // A locked file (pinned and hashed): no resolution runs, so the slow step is the grid's one install.
    const requirements = file('req-slow.txt', `rgtest-slow==1.0 --hash=sha256:${sha256(readFileSync(slowSdist))}\n`);
    const scriptText = nonceScript('import rgtest_slow\nprint("slow deps", rgtest_slow.VERSION)');
    const script = file('slow.py', scriptText);
    const takenBefore = await grid.controlMetric(LEASES('taken_over'));

    const pending = Array.from({ length: 6 }, () => rgridRun([script, '--requirements', requirements], env));
    // The dependency build's lease (its pip install sleeps ~15 s): its holder is the one to kill.
    const leaseOf = async (): Promise<{ holder: string; attempt: number } | undefined> => {
      const res = await grid.db.pool.query<{ holder: string; attempt: number }>(
        "SELECT holder, attempt FROM build_leases WHERE account_id = $1 AND kind = 'deps' AND expires_at > now()", [account],
      );
      return res.rows[0];
    };
    const firstLease = await waitFor('the dependency build lease', leaseOf, 60_000);
    expect(firstLease.attempt).toBe(1);
    const builder = byId(firstLease.holder);
    await builder.agent!.kill();
    builder.agent = undefined;

    const takeover = await waitFor('the lease taken over', async () => {
      const lease = await leaseOf();
      return lease && lease.attempt >= 2 ? lease : undefined;
    }, 60_000);
    expect(takeover).toMatchObject({ attempt: 2 });
    expect(takeover.holder).not.toBe(builder.id);

    const runs = await Promise.all(pending);
    for (const r of runs) expect(r, r.stderr).toMatchObject({ code: 0, exit_code: 0 });
    expect(runs.every((r) => r.worker_id !== builder.id)).toBe(true);
    const image = (await imageRow(sha256(scriptText)))!;
    const deps = (await registryRow('deps', image.deps_key!))!;
    expect(deps.pushed_by).toBe(takeover.holder);
    expect(await grid.manifestStatus('deps', deps.key, deps.manifest_digest)).toBe(200);
    // The killed builder held two leases, the script image's (it builds on the layer) and the layer's:
    // both were taken over, none was granted twice.
    expect((await grid.controlMetric(LEASES('taken_over'))) - takenBefore).toBe(2);
    expect(image.pushed_by).not.toBe(builder.id);
  });

  it('a digest in the index tampered to another image of the repository: the pull is refused by the label check, the run builds and succeeds', async () => {
    const scriptText = nonceScript('print("the right image")');
    const script = file('tamper.py', scriptText);
    const once = await rgridRun([script], env);
    expect(once).toMatchObject({ code: 0, image_origin: 'built' });
    const holder = byId(once.worker_id);
    const row = (await imageRow(sha256(scriptText)))!;
    // The attack: the index now names case 1's script image (same repository, a valid manifest).
    const tampered = await grid.db.pool.query(
      "UPDATE registry_images SET manifest_digest = $4 WHERE account_id = $1 AND kind = 'image' AND key = $2 AND manifest_digest = $3",
      [account, row.key, row.manifest_digest, first!.imageDigest],
    );
    expect(tampered.rowCount).toBe(1);
    // The holder away, the next run goes to a worker without the image, which is told "pushed".
    await grid.stopAgent(holder);
    const others = live();
    const mismatchesBefore = await sumOver(others, AGENT_PULLS('image', 'mismatch'));

    const again = await rgridRun([script], env);
    expect(again).toMatchObject({ code: 0, exit_code: 0, image_origin: 'built' });
    expect(again.stderr).toContain('the right image');
    expect(again.worker_id).not.toBe(holder.id);
    expect((await sumOver(others, AGENT_PULLS('image', 'mismatch'))) - mismatchesBefore).toBe(1);
    const entry = (await grid.ls(byId(again.worker_id))).find((e) => e.kind === 'image' && e.key === row.key);
    expect(entry).toMatchObject({ origin: 'built' });
    await grid.startAgent(holder);
  });

  it('the registry stopped: a new script runs by a local build; its push arrives once the registry is back', async () => {
    const registry = grid.registry();
    await registry.stop();
    const scriptText = nonceScript('print("while the registry is down")');
    let run;
    try {
      run = await rgridRun([file('outage.py', scriptText)], env);
    } finally {
      await registry.start();
    }
    expect(run).toMatchObject({ code: 0, exit_code: 0, image_origin: 'built' });
    const builder = byId(run.worker_id);
    const entry = (await grid.ls(builder)).find((e) => e.kind === 'image' && e.script_sha256 === sha256(scriptText))!;
    expect(entry).toMatchObject({ origin: 'built' });
    // The push outbox delivers it: the registry has the manifest, the index has the row.
    const row = await waitFor('the missed push recorded', () => registryRow('image', entry.key), 120_000, 500);
    expect(row.pushed_by).toBe(builder.id);
    expect(await grid.manifestStatus('image', entry.key, row.manifest_digest)).toBe(200);
  });

  it('requirements that fail to install: every run fails build_failed with pip\'s tail, one build attempt in the grid', async () => {
    // A locked file (no resolution on any worker) whose hash no artifact has: the install is what fails.
    const requirements = file('req-bad.txt', `rgtest-share==1.0 --hash=sha256:${'0'.repeat(64)}\n`);
    const script = file('bad.py', nonceScript('print("never runs")'));
    const grantedBefore = await grid.controlMetric(LEASES('granted'));
    const failuresBefore = await grid.controlMetric(BUILD_FAILURES);
    const workers = live();
    const failedBuildsBefore = await sumOver(workers, AGENT_BUILDS('deps', 'failed'));

    const runs = await Promise.all(Array.from({ length: 5 }, () => rgridRun([script, '--requirements', requirements], env)));
    for (const r of runs) {
      expect(r.code).not.toBe(0);
      const e = await execution(r.execution_id);
      expect(e).toMatchObject({ status: 'failed', failure: 'build_failed' });
      expect(`${e.error ?? ''}\n${r.stderr}`).toMatch(/DO NOT MATCH THE HASHES/);
    }
    // One pip install in the grid. The builder held the script image's lease and the layer's (granted
    // once each) and recorded the failure under both keys; everyone else was answered "failed".
    expect((await sumOver(workers, AGENT_BUILDS('deps', 'failed'))) - failedBuildsBefore).toBe(1);
    expect((await grid.controlMetric(LEASES('granted'))) - grantedBefore).toBe(2);
    expect((await grid.controlMetric(BUILD_FAILURES)) - failuresBefore).toBe(2);
    const failures = await grid.db.pool.query<{ kind: string; failed_by: string; log_tail: string }>(
      'SELECT kind, failed_by, log_tail FROM build_failures WHERE account_id = $1 ORDER BY kind', [account],
    );
    expect(failures.rows.map((f) => f.kind)).toEqual(['deps', 'image']);
    const builder = failures.rows[0]!.failed_by;
    expect(failures.rows[1]!.failed_by).toBe(builder);
    expect(failures.rows[0]!.log_tail).toMatch(/rgtest-share==1\.0/);
    expect(failures.rows[0]!.log_tail).toMatch(/Expected sha256 0{64}/);
    // Workers other than the builder that ran one were told "failed" and did not build.
    for (const id of new Set(runs.map((r) => r.worker_id))) {
      if (id === builder) continue;
      expect(byId(id).agent!.log()).toContain('failed to build recently on another worker');
    }
  });
});
